"""Which subject (a product, a plan, a hotel …) a conversation is about, read from the whole conversation.

The subjects are the `subject` values of the workspace's facts. Each is matched in the messages, oldest to
newest, by:

* its name and variants: case, punctuation, "&"/"and", a leading "the", plurals ("boot" finds "boots") and
  "guesthouse"/"guest house" do not matter; generic words at either end ("hotel", "guest house",
  "restaurant", "membership" …) may be left out ("Hobsons" finds "HOBSONS HOUSE") when what is left is
  distinctive: it names no other subject and, if it is one word, is rare in other subjects' facts;
* misspellings: a word of five letters or more that no fact uses is corrected to the closest word of a
  subject's name when they are at least `fuzzy_min_ratio` similar (rapidfuzz's normalised Indel ratio);
  "Hobsens Huose" finds "Hobsons House";
* reference back: a message that names no subject ("does it have parking?", "is there a gym?") keeps the
  subject the conversation last named.

The newest message that names any subject decides; when it names several (a comparison), all of them are
eligible and the first named is *the* subject. Deterministic and offline; messages are matched once each and
remembered (conversations are re-read turn after turn)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz import fuzz, process

_WORD = re.compile(r"[a-z0-9]+")
# Words that describe the kind of subject, not which one; a name may be used without them at either end.
GENERIC_WORDS = frozenset(
    {
        "hotel",
        "restaurant",
        "guest",
        "house",
        "bed",
        "and",
        "breakfast",
        "lodge",
        "inn",
        "bar",
        "grill",
        "cafe",
        "membership",
        "plan",
        "level",
        "tier",
        "the",
    }
)
_REFERENCE = frozenset(
    {"it", "its", "there", "they", "them", "their", "theirs", "that", "this", "place", "one"}
)
_SPELLING = {
    "guesthouse": "guest house",
    "b&b": "bed and breakfast",
    "bnb": "bed and breakfast",
    "&": " and ",
}


def _plural(token: str) -> str:
    """The word's base form for matching names: plurals made singular, and "wrapping" or "stitched" taken
    as "wrap" and "stitch" (a customer asks about "gift wrap", the facts are about "gift wrapping")."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 6 and token.endswith("ing"):
        stem = token[:-3]
        return stem[:-1] if stem[-1] == stem[-2] and stem[-1] not in "ls" else stem
    if len(token) > 5 and token.endswith("ed") and not token.endswith("eed"):
        stem = token[:-2]
        return stem[:-1] if stem[-1] == stem[-2] and stem[-1] not in "ls" else stem
    # "plus", "campus", "status", "axis" and "glass" are not plurals.
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def _words(text: str) -> list[tuple[str, int, int]]:
    """(normalised word, start, end) of each word of `text`; 'the' is dropped, plurals made singular."""
    lowered = text.lower().replace("’", "'")
    out: list[tuple[str, int, int]] = []
    for match in re.finditer(r"[a-z0-9&]+(?:'[a-z]+)?", lowered):
        raw = match.group().replace("'", "")
        spelled = _SPELLING.get(raw, raw)
        for word in _WORD.findall(spelled.replace("&", " and ")):
            if word != "the":
                out.append((_plural(word), match.start(), match.end()))
    return out


def subject_key(name: str) -> str:
    """The normalised form two spellings of one subject share."""
    return " ".join(w for w, _, _ in _words(name))


@dataclass(frozen=True, slots=True)
class Mention:
    subject: str  # the subject's name as the facts spell it
    start: int  # character span in the message
    end: int


@dataclass(frozen=True, slots=True)
class SubjectResolution:
    """`subject`: what the conversation is about (None: no subject named yet). `subjects`: all subjects
    eligible (a comparison names several). `via`: named (in the newest message), referred back ("it",
    "there" …) or carried over (from an earlier message). `mentions`: where the newest message names them."""

    subject: str | None
    subjects: tuple[str, ...] = ()
    via: str = "none"
    mentions: tuple[Mention, ...] = ()

    def strip_mentions(self, text: str) -> str:
        """`text` without the subject names it contains (they say which facts, not what about them)."""
        for mention in sorted(self.mentions, key=lambda m: m.start, reverse=True):
            text = text[: mention.start] + " " + text[mention.end :]
        return " ".join(text.split())


class SubjectResolver:
    def __init__(
        self,
        facts: Iterable[tuple[str | None, str]],
        *,
        fuzzy_min_ratio: float = 80.0,
        cache_size: int = 65536,
    ) -> None:
        """`facts`: (subject or None, text) of every fact; the subjects are the names to find."""
        self.fuzzy_min_ratio = fuzzy_min_ratio
        listed = list(facts)
        pairs = [(subject_key(subject) if subject else "", text) for subject, text in listed]
        names: dict[str, str] = {}  # key -> the name as first spelled
        for (key, _), (subject, _) in zip(pairs, listed, strict=True):
            if key and subject:
                names.setdefault(key, subject)
        self.names = names
        # Words the facts use are real words, never misspellings of a name.
        self._known_words: set[str] = set()
        word_users: dict[str, set[str]] = {}
        for key, text in pairs:
            words = {w for w, _, _ in _words(text)}
            self._known_words.update(words)
            for word in words:
                word_users.setdefault(word, set()).add(key)
        aliases: dict[tuple[str, ...], set[str]] = {}
        for key in names:
            full = tuple(key.split())
            aliases.setdefault(full, set()).add(key)
            short = _strip_generic(full)
            if short and short != full:
                aliases.setdefault(short, set()).add(key)
        self._aliases: dict[tuple[str, ...], str] = {}
        for alias, keys in aliases.items():
            if len(keys) != 1:
                continue  # names two subjects: says nothing
            (key,) = keys
            is_full = alias == tuple(key.split())
            others = word_users.get(alias[0], set()) - {key} if len(alias) == 1 else set()
            if not is_full and len(alias) == 1 and (len(alias[0]) < 4 or others - {""}):
                continue  # a short word, or one that other subjects' facts use, is not a name
            self._aliases[alias] = key
        self._longest = max((len(a) for a in self._aliases), default=0)
        self._name_words = sorted({w for alias in self._aliases for w in alias if w not in GENERIC_WORDS})
        self.mentions = lru_cache(maxsize=cache_size)(self._mentions)

    def __len__(self) -> int:
        return len(self.names)

    def key(self, name: str) -> str:
        return subject_key(name)

    def _correct(self, word: str) -> str:
        if (
            len(word) < 5
            or word in self._known_words
            or word in GENERIC_WORDS
            or not self._name_words
            or word.isdigit()
        ):
            return word
        best = process.extractOne(
            word, self._name_words, scorer=fuzz.ratio, score_cutoff=self.fuzzy_min_ratio
        )
        return word if best is None else str(best[0])

    def _mentions(self, text: str) -> tuple[Mention, ...]:
        """The subjects `text` names, in order, longest name first where two overlap."""
        if not self._aliases:
            return ()
        words = _words(text)
        tokens = [self._correct(w) for w, _, _ in words]
        found: list[Mention] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                key = self._aliases.get(tuple(tokens[i : i + n]))
                if key is not None:
                    found.append(Mention(self.names[key], words[i][1], words[i + n - 1][2]))
                    i += n
                    break
            else:
                i += 1
        return tuple(found)

    def resolve(self, messages: Sequence[str]) -> SubjectResolution:
        """The subject of a conversation, `messages` oldest to newest (customer and agent alike)."""
        if not messages or not self._aliases:
            return SubjectResolution(None)
        newest = messages[-1]
        for position in range(len(messages) - 1, -1, -1):
            found = self.mentions(messages[position])
            if not found:
                continue
            ordered = list(dict.fromkeys(m.subject for m in found))
            if position == len(messages) - 1:
                return SubjectResolution(ordered[0], tuple(ordered), "named", found)
            referring = any(w in _REFERENCE for w in _WORD.findall(newest.lower()))
            return SubjectResolution(
                ordered[0], tuple(ordered), "referred back" if referring else "carried over"
            )
        return SubjectResolution(None)


def _strip_generic(words: tuple[str, ...]) -> tuple[str, ...]:
    start, end = 0, len(words)
    while start < end and words[start] in GENERIC_WORDS:
        start += 1
    while end > start and words[end - 1] in GENERIC_WORDS:
        end -= 1
    return words[start:end]
