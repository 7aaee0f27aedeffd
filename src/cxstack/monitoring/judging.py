"""Judging stored conversations, and the calibration loop around the judge.

- `exchange_of`: a stored conversation as the judge sees it — the customer's words, the bot's replies, the
  knowledge those replies could rest on (the facts they cited, the back office's answers, the workspace's own
  texts), the customer's reaction and the trace's signals.
- `judge_pending`: every settled conversation not yet judged by the current version; a judge that fails or
  times out leaves the conversation unjudged (recorded with the error, counted as unjudged), never guessed.
- `agreement_report`: a judge version against people — raw agreement, Cohen's κ, weighted κ per ordinal
  criterion, Krippendorff's α, confusion matrices — overall, per criterion, per intent; "insufficient" below
  `min_pairs`.
- `queue_disagreements` and `next_version`: every conversation where a person and the judge disagree goes to
  the review queue; a reviewer's decision there is a correction; the next version is refitted on the
  corrections and reviews of one half of the conversations (by a hash of the id) and its agreement measured
  on the other half, which it never saw.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cxstack.domain.models import Message, Role, Trace, utcnow
from cxstack.domain.quality import (
    Judgement,
    JudgeVersion,
    OutcomeRules,
    Review,
    ReviewReason,
)
from cxstack.monitoring import statistics
from cxstack.monitoring.judges import Exchange, Judge, OfflineJudge, OfflineParams, refit
from cxstack.monitoring.quality import rules_of
from cxstack.monitoring.rubric import effective_rubric, rubric_version
from cxstack.monitoring.sampling import uniform
from cxstack.workspace.workspace import Workspace

JUDGE_TIMEOUT_S = 30.0
FOLDS = 2


class JudgingStore(Protocol):
    def unjudged(
        self, judge_version: str, rules: OutcomeRules, now: datetime | None = None, limit: int = 500
    ) -> list[str]: ...
    def record_judgement(self, judgement: Judgement) -> None: ...
    def latest_judgements(
        self, conversation_ids: Sequence[str], judge_version: str
    ) -> dict[str, Judgement]: ...
    def add_judge_version(self, version: JudgeVersion) -> None: ...
    def judge_versions(self) -> list[JudgeVersion]: ...
    def set_judge_agreement(self, version_id: str, agreement: dict[str, Any]) -> None: ...
    def conversation_intents(self) -> dict[str, str | None]: ...
    def list_reviews(
        self, *, conversation_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[Review]: ...
    def list_messages(self, conversation_id: Any) -> list[Message]: ...
    def list_traces(self, conversation_id: Any = None, limit: int = 1000) -> list[Trace]: ...
    def enqueue_review(
        self,
        conversation_id: str,
        reason: ReviewReason,
        *,
        stratum: str,
        priority: int = 0,
        detail: dict[str, Any] | None = None,
    ) -> bool: ...


def as_judging_store(store: object) -> JudgingStore:
    if not all(hasattr(store, name) for name in ("unjudged", "record_judgement", "judge_versions")):
        raise TypeError(f"{type(store).__name__} keeps no judgements: use the SQL store")
    return store  # type: ignore[return-value]


def fold_of(conversation_id: str) -> int:
    return int(uniform(conversation_id, "judge-fold") * FOLDS)


# ---- a stored conversation as the judge sees it ------------------------------------------------------------


def _workspace_texts(workspace: Workspace) -> list[str]:
    texts = [str(v) for v in workspace.settings.replies.model_dump().values()]
    texts += [f"{a.success_reply} {a.confirmation_prompt} {a.failure_reply}" for a in workspace.actions]
    texts += [f"{s.prompt or ''} {s.description}" for a in workspace.actions for s in a.slots]
    texts += [i.handoff_reply for i in workspace.intents if i.handoff_reply]
    texts.append(workspace.settings.scope or "")
    return [t for t in texts if t.strip()]


def exchange_of(
    conversation_id: str, messages: Sequence[Message], traces: Sequence[Trace], workspace: Workspace,
    *, abandoned: bool = False,
) -> Exchange:  # fmt: skip
    facts = {f.id: f.text for f in workspace.facts}
    never = {i.name for i in workspace.intents if i.never_automate or i.mechanism == "human"}
    customer = [m.text for m in messages if m.role == Role.CUSTOMER]
    replies = [m.text for m in messages if m.role == Role.ASSISTANT]
    after_reply: list[str] = []
    seen_reply = False
    for message in messages:
        if message.role == Role.ASSISTANT:
            seen_reply = True
        elif message.role == Role.CUSTOMER and seen_reply:
            after_reply.append(message.text)
    knowledge = list(_workspace_texts(workspace))
    signals = {"escalated": 0.0, "action_failed": 0.0, "verifier_failed": 0.0, "policy_violation": 0.0}
    for trace in traces:
        if trace.outcome in ("escalated", "handled_by_human"):
            signals["escalated"] = 1.0
        forced = False
        for step in trace.steps:
            out = step.output
            if step.name.startswith("resolve:"):
                for cited in out.get("facts") or []:
                    if isinstance(cited, dict) and cited.get("id") in facts:
                        knowledge.append(facts[cited["id"]])
                for action in out.get("actions") or []:
                    if isinstance(action, dict):
                        knowledge.append(json.dumps(action, default=str))
                        if action.get("ok") is False:
                            signals["action_failed"] = 1.0
            elif step.name == "verify" and out.get("passed") is False:
                signals["verifier_failed"] = 1.0
            elif step.name == "assess" and out.get("force_human"):
                forced = True
        automated = trace.outcome == "automated" and trace.mechanism not in (None, "conversational")
        if automated and (forced or trace.intent in never):
            signals["policy_violation"] = 1.0
    signals["abandoned"] = float(abandoned)
    return Exchange(
        id=conversation_id,
        context=customer,
        reply="\n".join(replies),
        knowledge=knowledge + customer,
        next_customer=" ".join(after_reply) or None,
        signals=signals,
    )


def stored_exchange(store: JudgingStore, workspace: Workspace, conversation_id: str) -> Exchange:
    messages = store.list_messages(conversation_id)
    traces = sorted(store.list_traces(conversation_id), key=lambda t: t.created_at)
    return exchange_of(conversation_id, messages, traces, workspace)


# ---- versions ---------------------------------------------------------------------------------------------


def current_judge(
    store: JudgingStore, workspace: Workspace, llm: Any = None, *, name: str | None = None
) -> Judge:
    """The newest offline version (offline-1, recorded on first use), the newest LLM version when `llm` is
    given, or a plug-in judge named `name` (its version `<name>-1`, recorded on first use)."""
    versions = store.judge_versions()
    if name not in (None, "offline", "llm"):
        from cxstack.monitoring.judges import judge_plugin

        plugin = judge_plugin(str(name))(version=f"{name}-1")
        if not any(v.id == plugin.version for v in versions):
            store.add_judge_version(
                JudgeVersion(plugin.version, str(plugin.kind), rubric_version(workspace.rubric), {})
            )
        judge: Judge = plugin
        return judge
    if llm is not None:
        from cxstack.monitoring.judges import LLMJudge

        chosen = [v for v in versions if v.kind == "llm"]
        if not chosen:
            first = JudgeVersion("llm-1", "llm", rubric_version(workspace.rubric), {"examples": []})
            store.add_judge_version(first)
            chosen = [first]
        return LLMJudge(llm, chosen[-1].id, chosen[-1].params.get("examples", []))
    offline = [v for v in versions if v.kind == "offline"]
    if not offline:
        first = JudgeVersion(
            "offline-1", "offline", rubric_version(workspace.rubric), OfflineParams().to_json()
        )
        store.add_judge_version(first)
        offline = [first]
    return OfflineJudge(offline[-1].id, OfflineParams.from_json(offline[-1].params))


@dataclass(frozen=True, slots=True)
class JudgeRun:
    judged: int
    failed: int
    version: str


def judge_pending(
    store: JudgingStore,
    workspace: Workspace,
    judge: Judge,
    *,
    now: datetime | None = None,
    limit: int = 500,
    timeout_s: float = JUDGE_TIMEOUT_S,
    close: Callable[[], Awaitable[None]] | None = None,
) -> JudgeRun:
    """Judges settled conversations the current version has not judged (up to `limit`); `close` runs at the
    end on the run's event loop (an LLM client made for the run)."""
    now = now or utcnow()
    rules = rules_of(workspace.settings.monitoring)
    version = rubric_version(workspace.rubric)
    pending = store.unjudged(judge.version, rules, now, limit)

    async def judge_all() -> tuple[int, int]:
        # one event loop for the whole run: an LLM judge's HTTP client lives on it
        judged = failed = 0
        for conversation_id in pending:
            exchange = stored_exchange(store, workspace, conversation_id)
            try:
                score = await asyncio.wait_for(judge.score(exchange, workspace.rubric), timeout_s)
            except Exception as error:  # a judge that fails leaves the conversation unjudged, never guessed
                failed += 1
                reason = (
                    "timed out"
                    if isinstance(error, TimeoutError)
                    else f"{type(error).__name__}: {error}"[:500]
                )
                store.record_judgement(
                    Judgement(conversation_id, judge.version, version, {}, None, None, error=reason)
                )
                continue
            judged += 1
            store.record_judgement(
                Judgement(conversation_id, judge.version, version, score.scores, score.overall, score.passed)
            )
        if close is not None:
            await close()  # on this loop, where the judge's client made its connections
        return judged, failed

    judged, failed = asyncio.run(judge_all())
    return JudgeRun(judged, failed, judge.version)


# ---- agreement ---------------------------------------------------------------------------------------------


def _human_label(reviews: Sequence[Review]) -> float:
    return sum(r.passed for r in reviews) / len(reviews)


def agreement_report(
    store: JudgingStore,
    workspace: Workspace,
    judge_version: str,
    *,
    only_fold: int | None = None,
    min_pairs: int | None = None,
    intents: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The judge version against people on every reviewed conversation it judged (in `only_fold` if given).
    Statistics on fewer than `min_pairs` pairs are reported as insufficient, never as a number."""
    minimum = min_pairs if min_pairs is not None else workspace.settings.monitoring.judge_min_pairs
    by_conversation: dict[str, list[Review]] = {}
    for review in store.list_reviews(limit=1_000_000):
        by_conversation.setdefault(review.conversation_id, []).append(review)
    ids = [c for c in by_conversation if only_fold is None or fold_of(c) == only_fold]
    judged = store.latest_judgements(ids, judge_version)
    pairs = [(c, by_conversation[c], judged[c]) for c in ids if c in judged and judged[c].passed is not None]
    rubric = effective_rubric(workspace.rubric)
    report: dict[str, Any] = {
        "judge_version": judge_version,
        "pairs": len(pairs),
        "fold": only_fold,
        "overall": _agreement([float(_human_label(r) >= 0.5) for _, r, _ in pairs],
                              [float(bool(j.passed)) for _, _, j in pairs], minimum, [0.0, 1.0]),
        "criteria": {},
        "intents": {},
        "human_human": _human_human(by_conversation, minimum),
    }  # fmt: skip
    for criterion in rubric.criteria:
        low, high = criterion.bounds
        humans, judge = [], []
        for _, reviews, judgement in pairs:
            if criterion.id in judgement.scores and all(criterion.id in r.scores for r in reviews):
                humans.append(round(sum(r.scores[criterion.id] for r in reviews) / len(reviews)))
                judge.append(round(judgement.scores[criterion.id]))
        scale = [float(v) for v in range(low, high + 1)]
        report["criteria"][criterion.id] = _agreement(
            [float(v) for v in humans], [float(v) for v in judge], minimum, scale,
            ordinal=criterion.kind == "ordinal",
        )  # fmt: skip
    by_intent: dict[str, list[tuple[float, float]]] = {}
    for conversation_id, reviews, judgement in pairs:
        intent = (intents or {}).get(conversation_id) or "(none)"
        by_intent.setdefault(intent, []).append(
            (float(_human_label(reviews) >= 0.5), float(bool(judgement.passed)))
        )
    for intent, values in sorted(by_intent.items()):
        report["intents"][intent] = _agreement(
            [h for h, _ in values], [j for _, j in values], minimum, [0.0, 1.0]
        )
    return report


def _agreement(
    humans: list[float], judge: list[float], minimum: int, labels: list[float], *, ordinal: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": len(humans)}
    if len(humans) < minimum:
        out["insufficient"] = f"{len(humans)} pairs; at least {minimum} are needed"
        return out
    out["raw"] = round(sum(h == j for h, j in zip(humans, judge, strict=True)) / len(humans), 4)
    level: statistics.AlphaLevel = "ordinal" if ordinal else "nominal"
    computations: list[tuple[str, Callable[[], float | None]]] = [
        ("kappa", lambda: statistics.cohen_kappa(humans, judge)),
        ("weighted_kappa", lambda: statistics.cohen_kappa(humans, judge, "quadratic") if ordinal else None),
        ("alpha", lambda: statistics.krippendorff_alpha([humans, judge], level)),
    ]
    for name, compute in computations:
        try:
            value = compute()
        except statistics.InsufficientDataError as exc:
            out[name] = None
            out[f"{name}_insufficient"] = str(exc)
            continue
        if value is not None:
            out[name] = round(value, 4)
    confusion = Counter(zip(humans, judge, strict=True))
    out["confusion"] = {
        "labels": labels,
        "rows_human_columns_judge": [[confusion[(h, j)] for j in labels] for h in labels],
    }
    return out


def _human_human(by_conversation: dict[str, list[Review]], minimum: int) -> dict[str, Any]:
    """Agreement of two people on the conversations two reviewed (the first two reviews of each)."""
    firsts, seconds = [], []
    for reviews in by_conversation.values():
        people: dict[str, Review] = {}
        for review in reviews:
            # a correction is a decision made knowing the disagreement, not an independent second opinion
            if review.reason != ReviewReason.DISAGREEMENT:
                people.setdefault(review.reviewer, review)
        if len(people) >= 2:
            a, b = list(people.values())[:2]
            firsts.append(float(a.passed))
            seconds.append(float(b.passed))
    return _agreement(firsts, seconds, minimum, [0.0, 1.0])


# ---- the loop: disagreements, corrections, the next version ------------------------------------------------


def queue_disagreements(store: JudgingStore, judge_version: str) -> int:
    """Every reviewed conversation where the judge's pass differs from the people's goes to the queue."""
    by_conversation: dict[str, list[Review]] = {}
    for review in store.list_reviews(limit=1_000_000):
        by_conversation.setdefault(review.conversation_id, []).append(review)
    judged = store.latest_judgements(list(by_conversation), judge_version)
    queued = 0
    for conversation_id, reviews in by_conversation.items():
        judgement = judged.get(conversation_id)
        if judgement is None or judgement.passed is None:
            continue
        if any(r.reason == ReviewReason.DISAGREEMENT for r in reviews):
            continue  # already settled by a person
        human = _human_label(reviews) >= 0.5
        if human != judgement.passed:
            queued += store.enqueue_review(
                conversation_id,
                ReviewReason.DISAGREEMENT,
                stratum="disagreement",
                priority=5,
                detail={"judge_version": judge_version, "judge_passed": judgement.passed, "people": human},
            )
    return queued


@dataclass(frozen=True, slots=True)
class NewVersion:
    version: JudgeVersion
    before: dict[str, Any]  # the parent's agreement on the held-out fold
    after: dict[str, Any]  # the new version's, on the same conversations
    fitted_on: int


def next_version(store: JudgingStore, workspace: Workspace, *, min_rows: int = 20) -> NewVersion:
    """Refits the offline judge on the reviews (corrections included) of fold 0; judges fold 1's reviewed
    conversations with both versions and reports both agreements there."""
    parent_judge = current_judge(store, workspace)
    assert isinstance(parent_judge, OfflineJudge)
    by_conversation: dict[str, list[Review]] = {}
    for review in store.list_reviews(limit=1_000_000):
        by_conversation.setdefault(review.conversation_id, []).append(review)
    rows = []
    for conversation_id, reviews in by_conversation.items():
        if fold_of(conversation_id) != 0:
            continue
        # a correction (a person's decision on a disagreement) outweighs the earlier reviews
        decided = [r for r in reviews if r.reason == ReviewReason.DISAGREEMENT] or reviews
        exchange = stored_exchange(store, workspace, conversation_id)
        scores = {
            k: round(sum(r.scores.get(k, 0) for r in decided) / len(decided)) for k in decided[0].scores
        }
        rows.append((parent_judge.features(exchange), _human_label(decided), scores))
    params = refit(parent_judge.params, rows, workspace.rubric, min_rows=min_rows)
    number = 1 + max(
        (int(v.id.rsplit("-", 1)[1]) for v in store.judge_versions() if v.kind == "offline"), default=0
    )
    version = JudgeVersion(
        f"offline-{number}", "offline", rubric_version(workspace.rubric), params.to_json(),
        parent=parent_judge.version, fit_fold=0,
    )  # fmt: skip
    store.add_judge_version(version)
    held_out = [c for c in by_conversation if fold_of(c) == 1]
    new_judge = OfflineJudge(version.id, params)
    for judge in (parent_judge, new_judge):
        missing = set(held_out) - set(store.latest_judgements(held_out, judge.version))
        for conversation_id in sorted(missing):
            score = judge.score_now(stored_exchange(store, workspace, conversation_id), workspace.rubric)
            store.record_judgement(
                Judgement(conversation_id, judge.version, version.rubric_version, score.scores, score.overall,
                          score.passed)
            )  # fmt: skip
    before = agreement_report(store, workspace, parent_judge.version, only_fold=1)
    after = agreement_report(store, workspace, version.id, only_fold=1)
    store.set_judge_agreement(
        version.id, {"held_out": after, "parent_held_out": before, "fitted_on": len(rows)}
    )
    return NewVersion(version, before, after, len(rows))


def next_llm_version(
    store: JudgingStore,
    workspace: Workspace,
    llm: Any,
    *,
    examples: int = 6,
    close: Callable[[], Awaitable[None]] | None = None,
) -> NewVersion:
    """The LLM judge's next version: the corrections (people's decisions on disagreements) of fold 0 become
    its few-shot examples; both versions judge fold 1's reviewed conversations and their agreement is
    reported there."""
    from cxstack.monitoring.judges import LLMJudge

    parent = current_judge(store, workspace, llm)
    assert isinstance(parent, LLMJudge)
    corrections: list[dict[str, Any]] = []
    by_conversation: dict[str, list[Review]] = {}
    for review in store.list_reviews(limit=1_000_000):
        by_conversation.setdefault(review.conversation_id, []).append(review)
    for conversation_id, reviews in sorted(by_conversation.items()):
        decided = [r for r in reviews if r.reason == ReviewReason.DISAGREEMENT]
        if not decided or fold_of(conversation_id) != 0 or len(corrections) >= examples:
            continue
        exchange = stored_exchange(store, workspace, conversation_id)
        corrections.append(
            {
                "context": exchange.context[-3:],
                "reply": exchange.reply[:1500],
                "knowledge": [k[:300] for k in exchange.knowledge[:4]],
                "scores": decided[-1].scores,
                "passed": decided[-1].passed,
            }
        )
    numbers = [int(v.id.rsplit("-", 1)[1]) for v in store.judge_versions() if v.kind == "llm"]
    number = 1 + max(numbers, default=0)
    version = JudgeVersion(
        f"llm-{number}",
        "llm",
        rubric_version(workspace.rubric),
        {"examples": parent.examples + corrections},
        parent=parent.version,
        fit_fold=0,
    )
    store.add_judge_version(version)
    held_out = [c for c in by_conversation if fold_of(c) == 1]
    child = LLMJudge(llm, version.id, version.params["examples"])

    async def judge_held_out() -> None:
        for judge in (parent, child):
            done = store.latest_judgements(held_out, judge.version)
            for conversation_id in sorted(set(held_out) - set(done)):
                exchange = stored_exchange(store, workspace, conversation_id)
                try:
                    score = await judge.score(exchange, workspace.rubric)
                except Exception as error:
                    reason = f"{type(error).__name__}: {error}"[:500]
                    failed = Judgement(
                        conversation_id, judge.version, version.rubric_version, {}, None, None, reason
                    )
                    store.record_judgement(failed)
                    continue
                rubric = version.rubric_version
                store.record_judgement(
                    Judgement(
                        conversation_id, judge.version, rubric, score.scores, score.overall, score.passed
                    )
                )

    asyncio.run(judge_held_out())
    before = agreement_report(store, workspace, parent.version, only_fold=1)
    after = agreement_report(store, workspace, version.id, only_fold=1)
    fitted = len(corrections)
    store.set_judge_agreement(version.id, {"held_out": after, "parent_held_out": before, "fitted_on": fitted})
    return NewVersion(version, before, after, fitted)
