"""Every change to a fact is a new immutable version with its author, time and reason.

Two ways in, one history:

* The workspace files are the source of truth for teams that keep knowledge in git. Whenever the files are
  read for a history, an edit or a service start, each fact whose content differs from its newest stored
  version gets a new version (`origin: files`; the author and reason come from git when the file is
  committed), and a fact gone from the files gets a version without content.
* An edit or a rollback (API or CLI) is checked against the number of the version it was based on (optimistic
  locking: the second of two concurrent edits gets a conflict naming the newer version), validated as the
  whole workspace would be with it, stored as a version, and only then written into the file that holds the
  fact, changing that fact's lines and nothing else.

A retired fact is not edited (an edit would silently bring it back): roll back to an earlier version instead.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import ValidationError

from cxstack.domain.models import FactVersion, utcnow
from cxstack.domain.ports import FactVersionConflictError, Store
from cxstack.workspace.fact_files import fact_files, rewrite_fact
from cxstack.workspace.models import FactConfig
from cxstack.workspace.validate import KNOWLEDGE_DIR, Problem, WorkspaceInvalid, check_workspace

FILES_AUTHOR = "workspace files"
RESTORED_FILE = "knowledge/restored.yaml"


class FactEditError(ValueError):
    """The edit is refused; the message says why and what to do instead. Nothing was changed."""


class UnknownFactError(FactEditError, KeyError):
    """No such fact, or no such version of it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown fact"


class InvalidFactError(FactEditError):
    """The fields do not make a valid fact."""


def fact_content(fact: FactConfig) -> dict[str, Any]:
    """Every field, as JSON: what a version stores and what two versions are compared on."""
    return fact.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    before: Any
    after: Any


def diff_versions(before: FactVersion | None, after: FactVersion) -> list[FieldChange]:
    """The fields that differ, in the fact's field order (a removal or re-creation changes every field)."""
    old = (before.content if before is not None else None) or {}
    new = after.content or {}
    keys = list(FactConfig.model_fields)
    keys += [k for k in {*old, *new} if k not in keys]
    return [FieldChange(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def word_changes(before: str, after: str) -> list[tuple[str, str]]:
    """The text as (kind, words) runs: kind is "same", "removed" or "added"."""
    old, new = before.split(), after.split()
    runs: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            runs.append(("same", " ".join(old[i1:i2])))
            continue
        if op in ("delete", "replace"):
            runs.append(("removed", " ".join(old[i1:i2])))
        if op in ("insert", "replace"):
            runs.append(("added", " ".join(new[j1:j2])))
    return runs


def word_diff(before: str, after: str) -> str:
    """`after` with removed words as [-…-] and added ones as {+…+}, as `git diff --word-diff` shows them."""
    marks = {"same": "{}", "removed": "[-{}-]", "added": "{{+{}+}}"}
    return " ".join(marks[kind].format(words) for kind, words in word_changes(before, after))


def _git(root: Path, *args: str) -> str:
    """What a git command prints in `root` (raises OSError or SubprocessError when it fails)."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


def _git_describe(root: Path, path: Path) -> tuple[str, str] | None:
    """(author, reason) of the commit that last changed `path`, when it is committed and unchanged since."""
    if shutil.which("git") is None:
        return None
    path = path.resolve()  # git runs in `root`: a path relative to elsewhere would name another file
    try:
        if _git(root, "status", "--porcelain", "--", str(path)):
            return None  # changed since its last commit: that commit's author did not write this
        log = _git(root, "log", "-1", "--format=%an <%ae>%x00%s", "--", str(path))
    except (OSError, subprocess.SubprocessError):
        return None
    if "\x00" not in log:
        return None
    author, subject = log.split("\x00", 1)
    return author, subject


def record_file_versions(
    store: Store, facts: Sequence[FactConfig], *, root: Path | None, now: datetime | None = None
) -> list[FactVersion]:
    """A new version for each fact whose content in the files (under `root`) differs from its newest stored
    version, and a removal for each stored fact no longer there. Safe to run in several processes at once."""
    latest = store.latest_fact_versions()
    current = {fact.id: fact_content(fact) for fact in facts}
    changed = [fid for fid, content in current.items() if fid not in latest or latest[fid].content != content]
    removed = [fid for fid, version in latest.items() if fid not in current and version.content is not None]
    if not changed and not removed:
        return []
    files = fact_files(root) if root is not None else {}
    when = now or utcnow()
    recorded: list[FactVersion] = []
    described: dict[Path, tuple[str, str] | None] = {}  # one git lookup per file
    for fact_id in [*changed, *removed]:
        previous = latest.get(fact_id)
        content = current.get(fact_id)
        path = files[fact_id][0] if fact_id in files else None
        where = path.relative_to(root).as_posix() if path and root else "the workspace"
        author, reason = (
            FILES_AUTHOR,
            (
                "removed from the workspace files"
                if content is None
                else f"{'changed in' if previous else 'first recorded from'} {where}"
            ),
        )
        if path is not None and root is not None:
            if path not in described:
                described[path] = _git_describe(root, path)
            commit = described[path]
            if commit is not None:
                author, reason = commit[0], f"{reason} ({commit[1]})"
        version = FactVersion(
            fact_id=fact_id,
            number=(previous.number if previous else 0) + 1,
            content=content,
            author=author,
            reason=reason,
            origin="files",
            created_at=when,
        )
        try:
            store.add_fact_version(version)
        except FactVersionConflictError:
            continue  # another process recorded the same change first
        recorded.append(version)
    return recorded


def read_facts(root: Path) -> list[FactConfig]:
    """The facts of the workspace at `root` as its files say now, or WorkspaceInvalid naming what is wrong.
    Only the knowledge files must be valid (the intents may use mechanisms only the running service knows)."""
    check = check_workspace(root)
    if not root.is_dir():
        raise WorkspaceInvalid(check.problems)
    broken = [p for p in check.problems if p.is_error and p.file.startswith(KNOWLEDGE_DIR + "/")]
    if broken or not check.facts_ok:
        raise WorkspaceInvalid(broken or [p for p in check.problems if p.is_error])
    return [sourced.item for sourced in check.facts]


def _lock_path(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cxstack-knowledge-{digest}.lock"


class KnowledgeEditor:
    """History, edits and rollbacks of the facts of the workspace folder `root`, versioned in `store`."""

    def __init__(self, root: Path, store: Store, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.root = Path(root)
        self.store = store
        self.clock = clock

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One writer of the files at a time on this machine; the version key settles races between machines.
        with FileLock(str(_lock_path(self.root)), timeout=30):
            yield

    def sync(self) -> list[FactConfig]:
        """The facts as the files say now, with every change since the last look recorded as a version."""
        facts = read_facts(self.root)
        record_file_versions(self.store, facts, root=self.root, now=self.clock())
        return facts

    def history(self, fact_id: str) -> list[FactVersion]:
        """Every version of the fact, oldest first (after recording what changed in the files)."""
        with self._locked():
            facts = self.sync()
        versions = self.store.fact_versions(fact_id)
        if not versions:
            raise UnknownFactError(_unknown(fact_id, [f.id for f in facts]))
        return versions

    def version(self, fact_id: str, number: int) -> FactVersion:
        versions = self.store.fact_versions(fact_id)
        found = next((v for v in versions if v.number == number), None)
        if found is None:
            known = f"1–{versions[-1].number}" if versions else "none"
            raise UnknownFactError(f"fact {fact_id} has no version {number} (versions: {known})")
        return found

    def edit(
        self,
        fact_id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int,
        author: str,
        reason: str,
        origin: str = "api",
    ) -> FactVersion:
        """Change some fields of a published or draft fact, based on version `expected_version`."""
        if "id" in changes and changes["id"] != fact_id:
            raise FactEditError("a fact's id cannot change (answers cite it): create a new fact instead")
        with self._locked():
            self.sync()
            latest = self._latest(fact_id)
            _check_expected(latest, expected_version)
            if latest.content is None:
                raise FactEditError(
                    f"fact {fact_id} was removed (version {latest.number}); roll back to an earlier version "
                    "to restore it"
                )
            if latest.content.get("status") == "retired":
                raise FactEditError(
                    f"fact {fact_id} is retired (version {latest.number} by {latest.author}): it is kept for "
                    "the record and not edited; roll back to an earlier version to bring it back, or create "
                    "a new fact"
                )
            fact = _fact({**latest.content, **changes})
            return self._write(fact, latest, author=author, reason=reason, origin=origin)

    def create(self, fields: Mapping[str, Any], *, author: str, reason: str, into: str) -> FactVersion:
        """A new fact, appended to the knowledge file `into` (created when missing)."""
        fact = _fact(fields)
        with self._locked():
            self.sync()
            versions = self.store.fact_versions(fact.id)
            if versions:
                state = "removed" if versions[-1].content is None else "in use"
                raise FactEditError(
                    f"fact id {fact.id} is {state} (version {versions[-1].number}); pick another"
                )
            return self._write(fact, None, author=author, reason=reason, origin="api", new_file=into)

    def rollback(
        self,
        fact_id: str,
        to_version: int,
        *,
        author: str,
        reason: str,
        expected_version: int | None = None,
    ) -> FactVersion:
        """A new version with the content of `to_version` (also restores a retired or removed fact)."""
        with self._locked():
            self.sync()
            latest = self._latest(fact_id)
            if expected_version is not None:
                _check_expected(latest, expected_version)
            target = self.version(fact_id, to_version)
            if target.content is None:
                raise FactEditError(
                    f"version {to_version} of {fact_id} is its removal: pick a version with content"
                )
            if target.content == latest.content:
                raise FactEditError(
                    f"version {to_version} of {fact_id} is the current content: nothing to undo"
                )
            fact = _fact(target.content)
            return self._write(
                fact,
                latest,
                author=author,
                reason=f"rollback to version {to_version}: {reason}",
                origin="rollback",
                new_file=RESTORED_FILE,
            )

    def _latest(self, fact_id: str) -> FactVersion:
        versions = self.store.fact_versions(fact_id)
        if not versions:
            raise UnknownFactError(_unknown(fact_id, list(self.store.latest_fact_versions())))
        return versions[-1]

    def _write(
        self,
        fact: FactConfig,
        latest: FactVersion | None,
        *,
        author: str,
        reason: str,
        origin: str,
        new_file: str = RESTORED_FILE,
    ) -> FactVersion:
        if not author.strip() or not reason.strip():
            raise FactEditError("every change needs an author and a reason")
        if latest is not None and latest.content == fact_content(fact):
            raise FactEditError(f"no change: version {latest.number} of {fact.id} already says this")
        edit = rewrite_fact(self.root, fact, new_file=new_file)
        _check_in_copy(self.root, edit.path, edit.text, fact)
        version = FactVersion(
            fact_id=fact.id,
            number=(latest.number if latest else 0) + 1,
            content=fact_content(fact),
            author=author.strip(),
            reason=reason.strip(),
            origin=origin,
            created_at=self.clock(),
        )
        self.store.add_fact_version(version)  # the optimistic lock: raises before any file changes
        _write_atomically(edit.path, edit.text)
        return version


def _check_expected(latest: FactVersion, expected: int) -> None:
    if latest.number != expected:
        raise FactVersionConflictError(latest.fact_id, latest)


def _fact(fields: Mapping[str, Any]) -> FactConfig:
    try:
        return FactConfig.model_validate(dict(fields))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'fact'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidFactError(f"invalid fact: {problems}") from None


def _unknown(fact_id: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(fact_id, list(known), n=1, cutoff=0.6)
    return f"unknown fact {fact_id}" + (f" (did you mean {close[0]}?)" if close else "")


def _check_in_copy(root: Path, path: Path, text: str, fact: FactConfig) -> None:
    """The whole workspace is validated with the new file in a copy: no error it did not have before (an
    unknown intent, an audience tier that does not exist), and the fact must read back exactly."""
    before = {(p.file, p.message) for p in check_workspace(root).problems if p.is_error}
    with tempfile.TemporaryDirectory(prefix="cxstack-edit-") as scratch:
        copy = Path(scratch) / "ws"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".git", ".cxstack", "__pycache__"))
        target = copy / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        check = check_workspace(copy)
        new = [p for p in check.problems if p.is_error and (p.file, p.message) not in before]
        if new:
            raise WorkspaceInvalid(new)
        written = next((s.item for s in check.facts if s.item.id == fact.id), None)
        if written != fact:
            problem = Problem(
                path.name, None, None, f"fact {fact.id} would not read back as written", "a bug"
            )
            raise WorkspaceInvalid([problem])


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
