"""Knowledge gaps: what customers asked that the knowledge could not answer, grouped into topics.

The questions are the customer messages of turns that went to a person because no fact answered them
(`no_grounded_answer`), the composed answer was not supported (`unsupported_answer`), or a content answer
was not trusted (`low_confidence` on a content intent). They are grouped by meaning: the workspace's
embedder, average-linkage clustering on cosine distance, cut at a distance chosen per embedder on CLINC150 val
(30 intents × 8 utterances, 3 draws: the cut with the best adjusted Rand index against the intents; MiniLM
0.6 → ARI 0.75, WordLlama 0.7 → 0.69, hashing 0.8 → 0.51). Each gap is named by its most typical question (the
one closest to its centre) and counted, the largest first.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from cxstack.domain.models import ConversationId
from cxstack.domain.ports import Store
from cxstack.knowledge.ports import Embedder

GAP_REASONS = frozenset({"no_grounded_answer", "unsupported_answer"})
CONTENT_GAP_REASONS = frozenset({"low_confidence"})  # only when the intent is answered from content
CLUSTER_DISTANCE = {"minilm": 0.6, "wordllama": 0.7, "hashing": 0.8}


@dataclass(frozen=True, slots=True)
class GapQuestion:
    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class KnowledgeGap:
    question: str  # the most typical question of the group
    count: int
    examples: tuple[str, ...]
    reasons: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "count": self.count,
            "examples": list(self.examples),
            "reasons": dict(self.reasons),
        }


def gap_questions(store: Store, *, limit: int = 5000) -> list[GapQuestion]:
    """The customer messages of the newest `limit` turns that show a knowledge gap."""
    wanted = [
        t
        for t in store.list_traces(None, limit=limit)
        if t.reason_code in GAP_REASONS or (t.reason_code in CONTENT_GAP_REASONS and t.mechanism == "content")
    ]
    by_conversation: dict[str, list[Any]] = defaultdict(list)
    for trace in wanted:
        by_conversation[trace.conversation_id].append(trace)
    questions: list[GapQuestion] = []
    for conversation_id, traces in by_conversation.items():
        texts = {m.id: m.text for m in store.list_messages(ConversationId(conversation_id))}
        for trace in traces:
            text = texts.get(trace.message_id, "").strip()
            if text:
                questions.append(GapQuestion(text, str(trace.reason_code)))
    return questions


def knowledge_gaps(
    questions: Sequence[GapQuestion],
    embedder: Embedder,
    *,
    distance: float | None = None,
    min_count: int = 2,
    max_gaps: int = 25,
    examples: int = 3,
) -> list[KnowledgeGap]:
    if len(questions) < min_count:
        return []
    texts = [q.text for q in questions]
    vectors = np.asarray(embedder.embed(texts), dtype=np.float64)
    cut = distance if distance is not None else CLUSTER_DISTANCE.get(embedder.name, 0.6)
    labels = AgglomerativeClustering(
        n_clusters=None, distance_threshold=cut, metric="cosine", linkage="average"
    ).fit_predict(vectors)
    gaps: list[KnowledgeGap] = []
    for label, size in Counter(labels.tolist()).most_common():
        if size < min_count or len(gaps) >= max_gaps:
            break
        members = [i for i, value in enumerate(labels) if value == label]
        centre = vectors[members].mean(axis=0)
        members.sort(key=lambda i: -float(vectors[i] @ centre))
        reasons = Counter(questions[i].reason for i in members)
        gaps.append(
            KnowledgeGap(
                question=texts[members[0]],
                count=size,
                examples=tuple(dict.fromkeys(texts[i] for i in members[1:]))[:examples],
                reasons=dict(reasons.most_common()),
            )
        )
    return gaps
