"""The content mechanism: answer from facts, composed without an LLM, or hand off when nothing is grounded."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError

from cxstack.domain.models import Role
from cxstack.domain.segments import is_question, split_requests, words
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.knowledge.compose import PartAnswer, compose_answer, compose_parts
from cxstack.knowledge.grounding import GroundingChecker
from cxstack.knowledge.models import ComposedAnswer, ScoredFact
from cxstack.knowledge.retrieval import KnowledgeIndex
from cxstack.resolution.answer_writer import AnswerWriter
from cxstack.resolution.models import TurnContext
from cxstack.resolution.registry import ResolverDeps

NO_GROUNDED_ANSWER = "no_grounded_answer"
LLM_UNAVAILABLE = "llm_unavailable"
UNSUPPORTED_ANSWER = "unsupported_answer"
# A message this short ("and to Canada?") usually leans on the previous question for its topic.
FOLLOW_UP_MAX_WORDS = 4
MAX_PARTS = 4


_POINTS_BACK = re.compile(r"\b(?:it|that|this|they|them|those|there)\b", re.IGNORECASE)


def part_queries(parts: Sequence[str]) -> list[str]:
    """What to search for each part: a part that leans on the one before ("how much does it cost?" after
    "do you ship to Canada?") is searched together with it."""
    queries: list[str] = []
    for index, part in enumerate(parts):
        leans = index > 0 and (_POINTS_BACK.search(part) is not None or words(part) <= 3)  # "and to Canada?"
        queries.append(f"{parts[index - 1]} {part}" if leans else part)
    return queries


def question_parts(text: str) -> list[str]:
    """The questions of a message that asks several ("How long do I have to return it? And do you ship to
    Canada?"); empty when it asks one. A sentence that tells a story ("I bought boots last week.") is context,
    not a question to answer."""
    parts = [s.text for s in split_requests(text) if words(s.text) >= 3 and is_question(s.text)]
    return parts[:MAX_PARTS] if len(parts) >= 2 else []


def previous_customer_text(ctx: TurnContext) -> str | None:
    earlier = [
        m for m in ctx.history if m.role == Role.CUSTOMER and m.id != ctx.message.id and m.text.strip()
    ]
    return earlier[-1].text if earlier else None


def conversation_texts(ctx: TurnContext, text: str) -> list[str]:
    """The conversation's texts, oldest first, customer and agent alike, ending with this turn's `text`."""
    earlier = [m.text for m in ctx.history if m.id != ctx.message.id and m.text.strip()]
    return [*earlier, text]


@dataclass(slots=True)
class _Written:
    detail: dict[str, Any]
    outcome: Outcome | None  # None: send the template answer


def language_name(code: str | None) -> str:
    try:
        return Locale.parse(code or "en").english_name or "English"
    except (ValueError, TypeError, UnknownLocaleError):
        return "English"


class ContentResolver:
    mechanism = "content"

    def __init__(self, deps: ResolverDeps, *, candidates: int = 5) -> None:
        self.knowledge: KnowledgeIndex | None = deps.knowledge
        self.candidates = candidates
        self.grounding = GroundingChecker()  # the lexical model: the same on every embedder
        self.writer = AnswerWriter(self.grounding)

    async def _written(
        self,
        ctx: TurnContext,
        text: str,
        results: Sequence[ScoredFact],
        template: ComposedAnswer,
        min_score: float,
        tone: str | None,
    ) -> _Written:
        """The model's answer from the facts retrieved for this turn, if it passes every check; otherwise the
        template answer (or a person, when the workspace says so and the provider failed)."""
        assert ctx.llm is not None and ctx.workspace.settings.llm is not None
        settings = ctx.workspace.settings.llm
        facts = list(template.facts)
        facts += [r for r in results if r.score >= min_score and r.fact.id not in template.fact_ids]
        result = await self.writer.write(
            ctx.llm,
            text,
            facts[: self.candidates + MAX_PARTS],
            business_name=ctx.workspace.settings.name,
            language=language_name(ctx.language or ctx.workspace.settings.language),
            tone=tone,
            earlier=ctx.earlier_customer_texts(),
            max_tokens=settings.max_tokens,
        )
        detail: dict[str, Any] = {"attempts": [a.view() for a in result.attempts]}
        if result.answer is not None:
            by_id = {f.fact.id: f for f in facts}
            detail["used"] = "llm"
            return _Written(
                detail,
                Outcome(
                    kind="reply",
                    confidence=template.score,
                    reply=result.answer.text,
                    facts=[by_id[i].citation() for i in result.answer.fact_ids if i in by_id],
                    detail={},
                ),
            )
        if result.error is not None and settings.on_failure == "escalate":
            detail["used"] = "escalation"
            return _Written(
                detail,
                Outcome(kind="handoff", confidence=0.0, handoff_reason=LLM_UNAVAILABLE, detail={}),
            )
        detail["used"] = "template"
        return _Written(detail, None)

    def _search(
        self, query: str, plan: ResolutionPlan, ctx: TurnContext, subjects: Sequence[str] = ()
    ) -> list[ScoredFact]:
        assert self.knowledge is not None
        day = ctx.now.astimezone(ZoneInfo(ctx.workspace.strategy.timezone)).date()
        return self.knowledge.search(
            query,
            k=self.candidates,
            intent=plan.intent,
            tags=plan.fact_tags,
            on=day,
            tier=ctx.business.tier if ctx.business else None,
            channel=ctx.conversation.channel,
            locale=ctx.language,
            subjects=subjects,
        )

    def _part_subjects(self, ctx: TurnContext, part: str) -> tuple[str, ...]:
        """What one question of several is about: the conversation so far, the message's own story ("I'm on
        the Plus plan.") and the question itself, but not the other questions ("Also, do you gift wrap?")."""
        assert self.knowledge is not None
        story = [s.text for s in split_requests(ctx.message.text) if not is_question(s.text)]
        earlier = conversation_texts(ctx, "")[:-1]
        return self.knowledge.subjects.resolve([*earlier, " ".join([*story, part])]).subjects

    async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome:
        text = (ctx.focus or ctx.message.text).strip()
        if self.knowledge is None or not text:
            return Outcome(kind="handoff", confidence=0.0, handoff_reason=NO_GROUNDED_ANSWER)
        query = text
        # The subject is read from the whole conversation: facts about another product or plan are out.
        # The whole message, not only this request's sentences: "I'm on the Plus plan. How long do I have…?"
        subject = self.knowledge.subjects.resolve(conversation_texts(ctx, ctx.message.text))
        results = self._search(text, plan, ctx, subject.subjects)
        previous = previous_customer_text(ctx)
        if previous and len(text.split()) <= FOLLOW_UP_MAX_WORDS:
            combined_query = f"{previous} {text}"
            combined = self._search(combined_query, plan, ctx, subject.subjects)
            if combined and (not results or combined[0].score > results[0].score):
                query, results = combined_query, combined
        detail: dict[str, object] = {
            "query": query,
            "on": ctx.now.isoformat(),
            "subject": {"name": subject.subject, "eligible": list(subject.subjects), "via": subject.via},
            "candidates": [
                {
                    "fact_id": r.fact.id,
                    "score": round(r.score, 4),
                    "lexical": round(r.lexical, 4),
                    "semantic": round(r.semantic, 4),
                    "boost": r.boost,
                }
                for r in results
            ],
        }
        min_score = ctx.workspace.settings.thresholds.knowledge_min_score
        tone = ctx.business.tone if ctx.business else None
        answer = compose_answer(
            results, min_score=min_score, similarity=self.knowledge.fact_similarity, tone=tone
        )
        parts = question_parts(text)
        if parts:  # each question answered on its own, in the customer's order
            answered: list[PartAnswer] = []
            used: set[str] = set()
            for part, query in zip(parts, part_queries(parts), strict=True):
                found = self._search(query, plan, ctx, self._part_subjects(ctx, query))
                # A part searched together with the one before it must not answer with that one's fact again
                # (a part that asks the same thing on its own is answered once, by compose_parts).
                fresh = [r for r in found if r.fact.id not in used] if query != part else found
                answer = compose_answer(
                    fresh,
                    min_score=min_score,
                    similarity=self.knowledge.fact_similarity,
                    max_facts=1,  # one fact per part keeps a reply of several answers readable
                )
                used.update(answer.fact_ids if answer else ())
                answered.append(PartAnswer(part, answer))
            detail["parts"] = [
                {"question": p.question, "facts": list(p.answer.fact_ids) if p.answer else []}
                for p in answered
            ]
            several = compose_parts(
                answered,
                tone=tone,
                unanswered=lambda q: ctx.workspace.reply("unanswered_part", question=q[:120]),
            )
            answer = several or answer
        if answer is None:
            return Outcome(kind="handoff", confidence=0.0, handoff_reason=NO_GROUNDED_ANSWER, detail=detail)
        # Every sentence of the answer must be supported by the facts it cites before it may be sent (the
        # sentences saying which part has no answer are the workspace's own words, not claims).
        claims = answer.text
        for sentence in answer.unanswered:
            claims = claims.replace(sentence, "")
        grounding = self.grounding.check(claims.strip(), [f.fact.text for f in answer.facts])
        detail["grounding"] = {
            "score": grounding.score,
            "supported": grounding.supported,
            "unsupported": [
                {"sentence": c.text, "score": c.score, "reasons": list(c.reasons)}
                for c in grounding.sentences
                if c.claim and not c.supported
            ],
        }
        llm_settings = ctx.workspace.settings.llm
        if ctx.llm is not None and llm_settings is not None and llm_settings.answers:
            written = await self._written(ctx, text, results, answer, min_score, tone)
            detail["llm"] = written.detail
            if written.outcome is not None:
                written.outcome.detail = detail
                return written.outcome
        if not grounding.supported:
            return Outcome(
                kind="handoff",
                confidence=0.0,
                handoff_reason=UNSUPPORTED_ANSWER,
                detail=detail,
                facts=answer.citations(),
            )
        return Outcome(
            kind="reply",
            confidence=answer.score,
            reply=answer.text,
            facts=answer.citations(),
            detail=detail,
        )
