"""Split a customer message into the requests it makes. Pure.

"Where is my order ORD-10001? Also, how do I return a jacket?" asks two things; a 3,700-character email
buries one question in paragraphs of context. Routing the whole text gives the first request to the second
intent's examples, or drowns the question. Sentences (and clauses joined by "also", "another thing",
"by the way") are routed on their own; the orchestrator chooses the primary request from them and
handles or acknowledges a second one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends at . ! ? followed by whitespace (so "$1,500.50" and "e.g.ORD" stay whole), or a newline.
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
# Clause boundaries that introduce another request; a bare "and" does not ("cancel and refund it"), nor
# "plus" (a product is as likely to be called Plus as a customer is to write "plus, ...").
_CLAUSE = re.compile(
    r"\s*[,;]?\s*\b(?:and also|also|another thing|oh and|and then|by the way|btw|"
    r"and (?:can|could|would|will) you|and i (?:also|'d also|would also)|"
    r"and (?=(?:can|could|may) i (?:get|have|change|cancel|return|exchange|update)\b)|"
    r"and (?=(?:where|when|what|how|why|is|are|do|does|did) "
    r"(?:is|are|was|do|does|did|can|my|the|your|i)\b)|"
    r"and (?=how (?:long|much|many|soon|often)\b))\b[\s,:]*",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_SEGMENTS = 24
# A run-on "sentence" longer than this (no punctuation for hundreds of words) is cut into windows of
# WINDOW_WORDS, so that a question at its end is still routed on its own words.
MAX_SENTENCE_WORDS = 80
WINDOW_WORDS = 30


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    index: int


def words(text: str) -> int:
    return len(_WORD.findall(text))


def split_requests(text: str, *, min_words: int = 1) -> list[Segment]:
    """The message's sentences and request clauses, in order; the whole message when it has one."""
    pieces: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        clauses = _CLAUSE.split(sentence)
        # Only split a clause off when both sides say something; "also" alone is not a request.
        current = ""
        for clause in clauses:
            clause = clause.strip(" ,;")
            if not clause:
                continue
            if current and words(clause) >= 2 and words(current) >= 2:
                pieces.append(current)
                current = clause
            else:
                current = f"{current} {clause}".strip() if current else clause
        if current:
            pieces.append(current)
    pieces = [window for piece in pieces for window in _windows(piece)]
    segments = [p for p in pieces if words(p) >= min_words]
    if len(segments) > MAX_SEGMENTS:  # a wall of text: keep the opening and the closing sentences
        half = MAX_SEGMENTS // 2
        segments = segments[:half] + segments[-half:]
    return [Segment(text=s, index=i) for i, s in enumerate(segments)] or [Segment(text=text.strip(), index=0)]


def _windows(piece: str) -> list[str]:
    tokens = piece.split()
    if words(piece) <= MAX_SENTENCE_WORDS:
        return [piece]
    return [" ".join(tokens[i : i + WINDOW_WORDS]) for i in range(0, len(tokens), WINDOW_WORDS)]


_ASKS = re.compile(
    r"^(?:how|what|what's|whats|when|where|why|which|who|can|could|do|does|did|is|are|will|would|should|"
    r"may|tell me|i'd like to know|i want to know)\b",
    re.IGNORECASE,
)


def is_question(text: str) -> bool:
    """Does the sentence ask something ("How long…?", "can you…", "tell me…"), rather than tell the story
    around a request ("I'm on the Plus plan.")?"""
    stripped = text.strip()
    return stripped.endswith("?") or bool(_ASKS.match(stripped))
