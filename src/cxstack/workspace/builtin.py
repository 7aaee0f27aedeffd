"""Conversational intents every workspace has: greetings, thanks, goodbyes and small talk.

Customers write "hi", "thanks!" and "what's the weather like?" to every support assistant. Without intents
for them a router has to place such messages among the business intents, and it does so confidently and
wrongly ("thank you, bye" as a legal threat). These intents are answered politely with the workspace's
`replies`, never escalated. A workspace overrides one by declaring an intent of the same name (set its
`status: draft` to switch it off).
"""

from __future__ import annotations

from cxstack.workspace.models import IntentConfig

CONVERSATIONAL = "conversational"  # the mechanism that answers them

BUILTIN_INTENTS: tuple[IntentConfig, ...] = (
    IntentConfig(
        name="greeting",
        description="say hello",
        mechanism=CONVERSATIONAL,
        owner="cxstack (built in)",
        builtin=True,
        examples=[
            "hi",
            "hello",
            "hey",
            "hi there",
            "hello?",
            "good morning",
            "good afternoon",
            "good evening",
            "hey there, anyone around?",
            "hiya",
            "hello, is anyone there",
            "hi team",
            "morning!",
            "greetings",
            "yo",
            "hola",
            "bonjour",
            "hallo",
        ],
    ),
    IntentConfig(
        name="thanks",
        description="say thank you",
        mechanism=CONVERSATIONAL,
        owner="cxstack (built in)",
        builtin=True,
        examples=[
            "thanks",
            "thank you",
            "thx",
            "ty",
            "thanks a lot",
            "thank you so much",
            "cheers",
            "much appreciated",
            "great, thanks",
            "perfect, thank you",
            "ok thanks",
            "awesome thx",
            "thanks for your help",
            "that's helpful, thank you",
            "brilliant, cheers",
        ],
    ),
    IntentConfig(
        name="goodbye",
        description="say goodbye",
        mechanism=CONVERSATIONAL,
        owner="cxstack (built in)",
        builtin=True,
        examples=[
            "bye",
            "goodbye",
            "bye bye",
            "see you",
            "thank you, bye",
            "thanks, bye",
            "that's all, thanks",
            "that's everything",
            "nothing else, thanks",
            "no that's all",
            "have a nice day",
            "all good now, bye",
            "I'm done, thanks",
            "ok bye",
            "talk later",
        ],
    ),
    IntentConfig(
        name="small_talk",
        description="chat about something other than support",
        mechanism=CONVERSATIONAL,
        owner="cxstack (built in)",
        builtin=True,
        examples=[
            "how are you",
            "how's it going",
            "are you a bot?",
            "are you a real person",
            "what's your name",
            "who am I talking to",
            "tell me a joke",
            "what's the weather in Boston tomorrow?",
            "what's the weather like today",
            "will it rain this weekend",
            "who won the game last night",
            "what time is it",
            "what's the capital of France",
            "I'm bored",
            "you're funny",
            "lol",
            "can you write me a poem",
            "what is the meaning of life",
        ],
    ),
)

BUILTIN_NAMES = frozenset(intent.name for intent in BUILTIN_INTENTS)


def with_builtin_intents(intents: tuple[IntentConfig, ...]) -> tuple[IntentConfig, ...]:
    """The workspace's intents followed by every built-in intent it does not declare itself."""
    declared = {intent.name for intent in intents}
    return (*intents, *(b for b in BUILTIN_INTENTS if b.name not in declared))
