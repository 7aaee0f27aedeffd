"""Ingestion: long human-written articles become atomic fact candidates, drafts for an owner to approve.

Each block of article text (`articles.py`) is split into claims, one per candidate:

* sentences, cut after `.`, `!` or `?` (not after "e.g.", "Dr.", a decimal point, …);
* a compound sentence is cut at "; " or ", and"/" and" only when each part stands alone: each has a verb of
  its own and at least four words, and the second does not open with a word that points back ("this",
  "which", "it") or with the verb (a shared subject: "you can return it and get a refund" stays whole);
* a sentence that opens by pointing back ("It", "This", "They", "Otherwise", …) is rewritten only when that is
  safe: "It"/"They" followed by a verb, right after a sentence whose subject names the article's subject
  ("The Trailblazer boot is waterproof. It comes in …" → "The Trailblazer boot comes in …"). Otherwise it is
  kept whole with the sentence before it, or, opening a block, flagged `needs_context`;
* a list of short fragments after a line ending in ":" is one claim ("Refunds go to: a gift card, a paper
  check or the card on file.");
* questions, fragments without a verb and text under four words are not claims.

Each candidate carries its source span (file, line range, character offsets when exact, heading path), a
stable id (kebab-case from its heading and first words, unique in the workspace), a subject when the
article's front matter or a heading (or, failing that, the sentence) names one of the workspace's subjects,
and tags from its headings.

Candidates are compared with the workspace's published facts through the audit's public `audit_facts`:
an exact duplicate (same text up to case, spaces and end punctuation) is skipped and reported; a
near-duplicate or a contradiction (conflicting numbers, a negation) is flagged on the draft, in `sources` and
with the tag `needs-review`, so that its owner sees it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from cxstack.knowledge.articles import KINDS, MAX_BYTES, Article, ArticleError, Block, read_article
from cxstack.knowledge.audit import audit_facts
from cxstack.knowledge.ports import Embedder
from cxstack.knowledge.retrieval import tokenize
from cxstack.workspace.models import FactConfig

REVIEW_TAG = "needs-review"


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ABBREVIATIONS = _set(
    "e.g i.e etc vs mr mrs ms dr st no approx incl excl est dept min max jan feb mar apr jun jul aug sep "
    "sept oct nov dec mon tue wed thu fri sat sun inc ltd co corp u.s"
)
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
# Verbs and auxiliaries that make a clause stand alone. Deliberately small: a part without one is not cut off.
_VERBS = _set(
    """is are was were be been being am can cannot can't could will won't would shall should must may might
    has have had does do did doesn't don't didn't isn't aren't wasn't weren't hasn't haven't need needs
    take takes took ship ships shipped cost costs offer offers include includes get gets receive receives
    apply applies expire expires arrive arrives charge charges accept accepts allow allows require requires
    cover covers last lasts renew renews start starts end ends open opens close closes provide provides
    come comes contain contains keep keeps let lets pay pays refund refunds send sends deliver delivers
    support supports process processes run runs remain remains become becomes appear appears mean means
    qualify qualifies count counts stay stays
    """
)
_POINTING_BACK = _set(
    "it its this that these those they them their such otherwise however also then which who"
)
_SUBJECT_PRONOUNS = frozenset({"it", "they"})
_STOP_SLUG = _set(
    "a an the and or of to in on at for with from by your you our we us is are be can will do does how what "
    "when where why who which this that these those it its my i"
)
_END_PUNCTUATION = re.compile(r"[\s.!?;:,]+$")


@dataclass(frozen=True, slots=True)
class Span:
    path: str
    line_start: int
    line_end: int
    start: int | None  # character offsets in the decoded file; None when not known exactly (HTML)
    end: int | None
    headings: tuple[str, ...]

    def label(self) -> str:
        lines = (
            f"{self.line_start}" if self.line_start == self.line_end else f"{self.line_start}-{self.line_end}"
        )
        chars = f" chars {self.start}-{self.end}" if self.start is not None else ""
        path = f" ({' > '.join(self.headings)})" if self.headings else ""
        return f"{self.path}:{lines}{chars}{path}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": [self.line_start, self.line_end],
            "chars": None if self.start is None else [self.start, self.end],
            "headings": list(self.headings),
        }


@dataclass(frozen=True, slots=True)
class Flag:
    kind: str  # contradiction | near_duplicate | needs_context
    fact: str | None  # the fact (or other candidate) it concerns
    detail: str

    def note(self) -> str:
        about = f" `{self.fact}`" if self.fact else ""
        return f"ingest flag: {self.kind.replace('_', ' ')}{about}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "fact": self.fact, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    text: str
    span: Span
    subject: str | None = None
    tags: tuple[str, ...] = ()
    flags: tuple[Flag, ...] = ()
    owner: str | None = None  # the article's own owner (front matter), before --owner

    def draft(self, owner: str) -> FactConfig:
        tags = list(self.tags) + ([REVIEW_TAG] if self.flags else [])
        return FactConfig(
            id=self.id,
            text=self.text,
            owner=self.owner or owner,
            subject=self.subject,
            tags=tags,
            sources=[self.span.label(), *(f.note() for f in self.flags)],
            status="draft",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "subject": self.subject,
            "owner": self.owner,
            "tags": list(self.tags),
            "span": self.span.to_json(),
            "flags": [f.to_json() for f in self.flags],
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    candidate: Candidate
    duplicate_of: str  # a published fact's id, or an earlier candidate's

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.candidate.text,
            "span": self.candidate.span.to_json(),
            "duplicate_of": self.duplicate_of,
        }


class IngestError(Exception):
    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(f"{len(problems)} problem(s); nothing was ingested")
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class IngestResult:
    files: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    dropped: int = 0  # blocks dropped as boilerplate

    @property
    def flagged(self) -> list[Candidate]:
        return [c for c in self.candidates if c.flags]

    @property
    def unowned(self) -> list[Candidate]:
        return [c for c in self.candidates if not c.owner]

    def drafts(self, owner: str | None) -> list[FactConfig]:
        if owner is None and self.unowned:
            raise IngestError(
                ["no owner for the drafts: pass --owner, or add `owner:` to the articles' front matter"]
            )
        return [c.draft(owner or "") for c in self.candidates]

    def to_json(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "drafts": [c.to_json() for c in self.candidates],
            "flagged": len(self.flagged),
            "skipped": [s.to_json() for s in self.skipped],
            "boilerplate_blocks_dropped": self.dropped,
            "warnings": list(self.warnings),
        }


# --- finding the files --------------------------------------------------------------------------------------


def article_files(path: Path) -> tuple[list[Path], list[str]]:
    """The articles under `path` (a file, or a folder searched recursively) and warnings for files skipped."""
    if not path.exists():
        raise IngestError([f"{path}: no such file or folder"])
    if path.is_file():
        if path.suffix.lower() not in KINDS:
            raise IngestError([f"{path}: unsupported file type; use {', '.join(sorted(KINDS))}"])
        return [path], []
    found: list[Path] = []
    warnings: list[str] = []
    for candidate in sorted(path.rglob("*")):
        relative = candidate.relative_to(path).parts
        if any(part.startswith(".") for part in relative) or not candidate.is_file():
            continue
        if candidate.suffix.lower() in KINDS:
            found.append(candidate)
        else:
            warnings.append(f"{candidate}: skipped, unsupported file type {candidate.suffix or '(none)'}")
    if not found:
        raise IngestError([f"{path}: no articles to ingest ({', '.join(sorted(KINDS))})"])
    return found, warnings


# --- claims -------------------------------------------------------------------------------------------------


def _sentence_cuts(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`."""
    cuts: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start() + 1].split()
        last = before[-1].rstrip(".!?\"')]”’").lower() if before else ""
        if text[match.start()] == "." and (last in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last)):
            continue
        cuts.append((start, match.start() + len(match.group().rstrip())))
        start = match.end()
    if text[start:].strip():
        cuts.append((start, len(text.rstrip())))
    return cuts


def _words_of(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9'’]+", text)


def _has_verb(text: str) -> bool:
    return any(w.lower().replace("’", "'") in _VERBS for w in _words_of(text))


_PRONOUNS = _set("i you he she it we they")


def _stands_alone(part: str, *, second: bool) -> bool:
    found = [w.lower() for w in _words_of(part)]
    if len(found) < 4 or not _has_verb(part):
        return False
    if second:
        if found[0] in _POINTING_BACK or found[0] in _VERBS or found[0] in {"not", "never", "also", "still"}:
            return False  # "… and must be unused", "… and this …": it leans on the first part
        verb = next(i for i, w in enumerate(found) if w.replace("’", "'") in _VERBS)
        # A subject of a few words, then the verb; "fact tags it may use" is a noun with a relative clause.
        if verb > 5 or (verb > 1 and found[verb - 1] in _PRONOUNS):
            return False
    return True


_COMPOUND = re.compile(r";\s+|,?\s+and\s+(?!then\b)")


def _compound_parts(text: str) -> list[tuple[int, int]]:
    """Cut a sentence at "; " or "and" where both sides stand alone; (start, end) of each part."""
    for match in _COMPOUND.finditer(text):
        left, right = text[: match.start()], text[match.end() :]
        if match.group().lstrip()[:1] == "a" and not _has_verb(left.rsplit(",", 1)[-1]):
            continue  # "…, the actions and fact tags …": an "and" without a comma ends a list, not a clause
        if _stands_alone(left, second=False) and _stands_alone(right, second=True):
            rest = _compound_parts(right)
            return [(0, match.start())] + [(match.end() + a, match.end() + b) for a, b in rest]
    return [(0, len(text))]


def _finish(text: str) -> str:
    text = text.strip().rstrip(",;: ")
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    if text and text[-1] not in ".!?\"')”’":
        text += "."
    return text


def _is_claim(text: str) -> bool:
    stripped = text.strip()
    words = len(_words_of(stripped))
    if stripped.endswith(("?", ":")) or words < 3:
        return False
    if stripped.endswith((".", "!")) and words >= 4:
        return True  # a written sentence, even with a verb the list lacks ("We email you a label.")
    return _has_verb(stripped) or words >= 8


def _fragment(block: Block) -> bool:
    return block.item and not _is_claim(block.text) and not block.text.endswith("?")


def _merge_lists(blocks: Sequence[Block]) -> list[Block]:
    """A paragraph ending in ':' followed by list items that are all fragments becomes one block."""
    merged: list[Block] = []
    i = 0
    while i < len(blocks):
        block = blocks[i]
        j = i + 1
        while j < len(blocks) and _fragment(blocks[j]) and blocks[j].headings == block.headings:
            j += 1
        if block.text.endswith(":") and j > i + 1:
            items = [b.text.rstrip(".;, ") for b in blocks[i + 1 : j]]
            listed = items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
            last = blocks[j - 1]
            merged.append(
                replace(
                    block,
                    text=f"{block.text} {listed}.",
                    line_end=last.line_end,
                    raw="" if block.start is None else block.raw,
                )
            )
            i = j
            continue
        merged.append(block)
        i += 1
    return merged


@dataclass(slots=True)
class _Claim:
    text: str
    line_start: int
    line_end: int
    start: int | None
    end: int | None
    flags: list[Flag] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Where:
    line_start: int
    line_end: int
    start: int | None  # in the file, when exact
    end: int | None
    raw_start: int  # in the block's source text, to search on from
    raw_end: int


def _locate(block: Block, piece: str, offset: int) -> _Where:
    """Lines and character offsets of `piece` of the block: exact when its words are found in the source."""
    pattern = r"[\s>*_`\[\]()#+\-|]*".join(re.escape(w) for w in piece.split())
    found = re.compile(pattern).search(block.raw, offset) if block.raw and pattern else None
    if found is None:
        return _Where(block.line_start, block.line_end, None, None, offset, offset)
    line = block.line_start + block.raw.count("\n", 0, found.start())
    end_line = line + found.group().count("\n")
    if block.start is None:
        return _Where(line, end_line, None, None, found.start(), found.end())
    return _Where(
        line, end_line, block.start + found.start(), block.start + found.end(), found.start(), found.end()
    )


def _leading_noun_phrase(sentence: str) -> str | None:
    """The words before the first verb of a sentence: "The Trailblazer boot is …" → "The Trailblazer boot"."""
    found = sentence.split()
    for index, word in enumerate(found):
        if word.lower().strip(",") in _VERBS:
            return " ".join(found[:index]) if 0 < index <= 6 else None
    return None


def _resolve(sentence: str, previous: str | None, subject: str | None) -> str | None:
    """ "It comes in …" after "The Trailblazer boot is …" → "The Trailblazer boot comes in …", when safe."""
    found = sentence.split()
    if previous is None or subject is None or len(found) < 3:
        return None
    if found[0].lower() not in _SUBJECT_PRONOUNS or found[1].lower() not in _VERBS:
        return None
    phrase = _leading_noun_phrase(previous)
    if phrase is None or not _names(phrase, subject):
        return None
    if found[0].lower() == "they" and found[1].lower() in {"is", "was", "has", "does"}:
        return None
    return f"{phrase} {' '.join(found[1:])}"


def _points_back(sentence: str) -> bool:
    found = _words_of(sentence)
    return bool(found) and found[0].lower() in _POINTING_BACK


def block_claims(block: Block, subject: str | None) -> list[_Claim]:
    claims: list[_Claim] = []
    cursor = 0
    for a, b in _sentence_cuts(block.text):
        sentence = block.text[a:b]
        where = _locate(block, sentence, cursor)
        cursor = where.raw_end
        if _points_back(sentence):
            previous = claims[-1].text if claims else None
            resolved = _resolve(sentence, previous, subject)
            if resolved is not None:
                claims.append(
                    _Claim(_finish(resolved), where.line_start, where.line_end, where.start, where.end)
                )
                continue
            if claims:  # keep it whole with the sentence it points back to
                last = claims[-1]
                last.text = f"{last.text} {_finish(sentence)}"
                last.line_end = max(last.line_end, where.line_end)
                exact = last.start is not None and where.end is not None
                last.start, last.end = (last.start, where.end) if exact else (None, None)
                continue
            if _is_claim(sentence):
                flag = Flag("needs_context", None, "opens by pointing back to text before it; rewrite it")
                claims.append(
                    _Claim(
                        _finish(sentence), where.line_start, where.line_end, where.start, where.end, [flag]
                    )
                )
            continue
        for pa, pb in _compound_parts(sentence):
            part = sentence[pa:pb]
            if not _is_claim(part):
                continue
            at = where if (pa, pb) == (0, len(sentence)) else _locate(block, part, where.raw_start)
            claims.append(_Claim(_finish(part), at.line_start, at.line_end, at.start, at.end))
    return claims


# --- ids, subjects, tags ------------------------------------------------------------------------------------


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def slug(text: str, limit: int) -> str:
    found = [w for w in re.findall(r"[a-z0-9]+", _ascii(text)) if w not in _STOP_SLUG]
    return "-".join(found[:limit])


def _names(text: str, subject: str) -> bool:
    """Does `text` name `subject`? Each of the subject's words, or a word it begins ("member" for
    "membership"), is in the text."""
    have = tokenize(text)
    need = tokenize(subject)
    if not need:
        return False
    return all(
        any(h == n or (min(len(h), len(n)) >= 4 and (h.startswith(n) or n.startswith(h))) for h in have)
        for n in need
    )


def find_subject(
    text: str, headings: Sequence[str], subjects: Sequence[str], default: str | None
) -> str | None:
    """The subject the nearest heading names (exactly one of the workspace's subjects), else the front
    matter's, else the one the sentence's subject (the words before its verb) names."""
    for heading in reversed(headings):
        named = {s for s in subjects if _names(heading, s)}
        if len(named) == 1:
            return named.pop()
    if default:
        return default
    phrase = _leading_noun_phrase(text)  # the sentence's own subject: "Gold members can …"
    named = {s for s in subjects if phrase and _names(phrase, s)}
    return named.pop() if len(named) == 1 else None


def _tags(headings: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    for tag in [*extra, *(slug(h, 4) for h in headings[-3:] if not h.endswith("?"))]:
        if tag and tag not in found:
            found.append(tag)
    return tuple(found)


def _unique(base: str, taken: set[str]) -> str:
    base = base.strip("-")[:60].rstrip("-") or "fact"
    name, n = base, 2
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    taken.add(name)
    return name


def _normal(text: str) -> str:
    return _END_PUNCTUATION.sub("", " ".join(text.casefold().split()))


# --- the whole run ------------------------------------------------------------------------------------------


def article_candidates(
    article: Article, label: str, *, subjects: Sequence[str], taken: set[str]
) -> list[Candidate]:
    meta_subject = article.meta.get("subject")
    default_subject = meta_subject.strip() if isinstance(meta_subject, str) and meta_subject.strip() else None
    meta_owner = article.meta.get("owner")
    owner = meta_owner.strip() if isinstance(meta_owner, str) and meta_owner.strip() else None
    meta_tags = article.meta.get("tags")
    extra = [slug(str(t), 4) for t in meta_tags] if isinstance(meta_tags, list) else []
    known = [*subjects, *([default_subject] if default_subject else [])]
    candidates: list[Candidate] = []
    for block in _merge_lists(article.blocks):
        headings = block.headings
        if headings and article.title and headings[0] == article.title and len(headings) > 1:
            tag_headings: Sequence[str] = headings[1:]
        else:
            tag_headings = headings
        block_subject = find_subject("", headings, known, default_subject)
        for claim in block_claims(block, block_subject):
            subject = find_subject(claim.text, headings, known, default_subject)
            heading = tag_headings[-1] if tag_headings else (article.title or "")
            heading = "" if heading.endswith("?") else heading  # a FAQ's question: the answer names it
            base = "-".join(p for p in (slug(heading, 3), slug(claim.text, 5)) if p)
            candidates.append(
                Candidate(
                    id=_unique(base, taken),
                    text=claim.text,
                    span=Span(label, claim.line_start, claim.line_end, claim.start, claim.end, headings),
                    subject=subject,
                    tags=_tags(tag_headings, extra),
                    flags=tuple(claim.flags),
                    owner=owner,
                )
            )
    return candidates


def _batches(candidates: Sequence[Candidate], size: int) -> list[list[Candidate]]:
    by_article: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_article.setdefault(candidate.span.path, []).append(candidate)
    batches: list[list[Candidate]] = [[]]
    for article in by_article.values():
        if batches[-1] and len(batches[-1]) + len(article) > size:
            batches.append([])
        batches[-1].extend(article)
    return batches


def flag_candidates(
    candidates: Sequence[Candidate],
    facts: Sequence[FactConfig],
    today: date,
    *,
    batch_size: int = 500,
    meaning: Embedder | None = None,
) -> tuple[list[Candidate], list[Skipped]]:
    """Skip exact duplicates of published facts (and of earlier candidates); flag near-duplicates and
    contradictions found by the audit between a candidate and a published fact or another candidate."""
    published = [f for f in facts if f.status == "published"]
    by_text = {_normal(f.text): f.id for f in published}
    kept: list[Candidate] = []
    skipped: list[Skipped] = []
    for candidate in candidates:
        key = _normal(candidate.text)
        if key in by_text:
            skipped.append(Skipped(candidate, by_text[key]))
            continue
        by_text[key] = candidate.id
        kept.append(candidate)
    if not kept:
        return kept, skipped
    flags: dict[str, list[Flag]] = {}
    # In batches of whole articles: the audit compares each batch with every published fact and within
    # itself, and its memory grows with the square of what it is given.
    for batch in _batches(kept, batch_size):
        drafts = [c.draft("ingest") for c in batch]
        report = audit_facts([*published, *drafts], today, meaning=meaning)
        ours = {c.id for c in batch}
        for finding in report.findings:
            if finding.kind not in ("contradiction", "near_duplicate") or len(finding.facts) != 2:
                continue
            a, b = finding.facts
            for mine, other in ((a, b), (b, a)):
                if mine in ours:
                    flags.setdefault(mine, []).append(Flag(finding.kind, other, finding.detail))
    return [replace(c, flags=c.flags + tuple(flags.get(c.id, ()))) for c in kept], skipped


def ingest(
    paths: Sequence[Path],
    *,
    facts: Sequence[FactConfig],
    root: Path | None = None,
    today: date,
    max_bytes: int = MAX_BYTES,
    progress: Callable[[Sequence[Path]], Iterable[Path]] = lambda items: items,
    meaning: Embedder | None = None,
) -> IngestResult:
    """Read every article, then split, name and flag the candidates (`meaning`: as for `audit_facts`). One
    unreadable file and nothing is returned: an `IngestError` lists every file's problem."""
    problems: list[str] = []
    articles: list[tuple[Article, str]] = []
    warnings: list[str] = []
    for path in progress(paths):
        label = _label(path, root)
        try:
            article = read_article(path, max_bytes=max_bytes, name=label)
        except ArticleError as exc:
            problems.append(str(exc))
            continue
        except OSError as exc:
            problems.append(f"{label}: cannot read: {exc.strerror or exc}")
            continue
        warnings.extend(f"{label}: {w}" for w in article.warnings)
        articles.append((article, label))
    if problems:
        raise IngestError(problems)
    taken = {f.id for f in facts}
    subjects = sorted({f.subject for f in facts if f.subject})
    candidates: list[Candidate] = []
    for article, label in articles:
        found = article_candidates(article, label, subjects=subjects, taken=taken)
        if not found:
            warnings.append(f"{label}: no claims found")
        candidates.extend(found)
    if not candidates:
        raise IngestError(["no fact candidates found in " + ", ".join(label for _, label in articles)])
    kept, skipped = flag_candidates(candidates, facts, today, meaning=meaning)
    return IngestResult(
        files=tuple(label for _, label in articles),
        candidates=tuple(kept),
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        dropped=sum(a.dropped for a, _ in articles),
    )


def _label(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def default_owner(facts: Sequence[FactConfig]) -> str | None:
    """The owner to use without --owner: the one the workspace's facts all share, if they share one."""
    owners = {f.owner for f in facts if f.owner and f.status != "retired"}
    return owners.pop() if len(owners) == 1 else None


def drafts_yaml(facts: Sequence[FactConfig], source: str) -> str:
    items = [fact.model_dump(mode="json", exclude_defaults=True) for fact in facts]
    body = yaml.safe_dump({"version": 1, "facts": items}, sort_keys=False, allow_unicode=True, width=110)
    header = (
        f"# Drafts ingested from {source} by `cxstack kb ingest`: one claim each, with its source span.\n"
        f"# Drafts tagged `{REVIEW_TAG}` duplicate or contradict a fact (see their sources). Review each:\n"
        "# fix its text, then set `status: published`; or delete it.\n"
    )
    return header + body
