"""/v1/knowledge: facts and their versions; admins edit, create and roll back (optimistic locking).

Every write goes through `KnowledgeEditor`: a version in the store, then the workspace file rewritten, so the
files stay the source of truth; the running service picks the change up from the files before its next turn
(`KnowledgeReloader`), and records changes made to the files by other means as versions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, status

from cxstack.api.deps import Cx
from cxstack.api.schemas import (
    FactChangeOut,
    FactCreate,
    FactDiffOut,
    FactEdit,
    FactRollback,
    FactVersionOut,
)
from cxstack.api.security import Principal, Scope, requires
from cxstack.app import CxApp
from cxstack.domain.models import FactVersion
from cxstack.domain.ports import FactVersionConflictError
from cxstack.knowledge.versions import (
    FactEditError,
    InvalidFactError,
    KnowledgeEditor,
    UnknownFactError,
    diff_versions,
)
from cxstack.workspace.validate import WorkspaceInvalid

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no credentials, or an invalid, revoked or expired one"},
    403: {"description": "the credential's role may not do this"},
    404: {"description": "unknown fact or version"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"description": "a newer version exists (detail names it), or the fact is retired or removed"},
    422: {"description": "the fact or the workspace with it would be invalid; nothing changed"},
}


def _editor(cx: CxApp) -> KnowledgeEditor:
    root = cx.workspace.root
    if root is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "this service's workspace has no folder to edit")
    return KnowledgeEditor(root, cx.store)


def version_out(version: FactVersion) -> FactVersionOut:
    return FactVersionOut(
        fact_id=version.fact_id,
        version=version.number,
        author=version.author,
        reason=version.reason,
        origin=version.origin,
        at=version.created_at,
        content=version.content,
    )


def _failure(exc: Exception) -> HTTPException:
    if isinstance(exc, FactVersionConflictError):
        latest = exc.latest
        detail: dict[str, Any] = {"message": str(exc)}
        if latest is not None:
            detail["latest"] = version_out(latest).model_dump(mode="json")
        return HTTPException(status.HTTP_409_CONFLICT, detail)
    if isinstance(exc, UnknownFactError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, WorkspaceInvalid):
        problems = [p.format() for p in exc.errors] or [p.format() for p in exc.problems]
        detail = {"message": "the workspace would be invalid", "problems": problems}
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)
    if isinstance(exc, InvalidFactError):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


def _written(change: Callable[[KnowledgeEditor], FactVersion], cx: CxApp) -> FactVersionOut:
    """A write through the editor, its refusals as HTTP errors (nothing changed when one is raised)."""
    try:
        return version_out(change(_editor(cx)))
    except (FactEditError, FactVersionConflictError, WorkspaceInvalid) as exc:
        raise _failure(exc) from None


def _history(cx: CxApp, fact_id: str) -> list[FactVersion]:
    try:
        return _editor(cx).history(fact_id)
    except (FactEditError, WorkspaceInvalid) as exc:
        raise _failure(exc) from None


def add_knowledge_routes(api: FastAPI) -> None:
    read = [requires(Scope.WORKSPACE_READ)]

    @api.get(
        "/v1/knowledge/facts",
        response_model=list[FactVersionOut],
        tags=["knowledge"],
        responses=_ERRORS,
        dependencies=read,
    )
    def list_facts(cx: Cx) -> list[FactVersionOut]:
        """Every fact's newest version (including drafts, retired and removed facts), by id."""
        editor = _editor(cx)
        try:
            editor.sync()
        except WorkspaceInvalid as exc:
            raise _failure(exc) from None
        latest = cx.store.latest_fact_versions()
        return [version_out(latest[fact_id]) for fact_id in sorted(latest)]

    @api.get(
        "/v1/knowledge/facts/{fact_id}",
        response_model=FactVersionOut,
        tags=["knowledge"],
        responses=_ERRORS,
        dependencies=read,
    )
    def get_fact(fact_id: str, cx: Cx) -> FactVersionOut:
        """The fact's newest version; its `version` is what an edit sends as `expected_version`."""
        return version_out(_history(cx, fact_id)[-1])

    @api.get(
        "/v1/knowledge/facts/{fact_id}/versions",
        response_model=list[FactVersionOut],
        tags=["knowledge"],
        responses=_ERRORS,
        dependencies=read,
    )
    def fact_versions(fact_id: str, cx: Cx) -> list[FactVersionOut]:
        """Every version, oldest first: who changed what, when and why."""
        return [version_out(v) for v in _history(cx, fact_id)]

    @api.get(
        "/v1/knowledge/facts/{fact_id}/diff",
        response_model=FactDiffOut,
        tags=["knowledge"],
        responses=_ERRORS,
        dependencies=read,
    )
    def fact_diff(
        fact_id: str, cx: Cx, from_version: int | None = None, to_version: int | None = None
    ) -> FactDiffOut:
        """The fields that changed between two versions (default: the newest and the one before)."""
        versions = {v.number: v for v in _history(cx, fact_id)}
        to_number = to_version if to_version is not None else max(versions)
        from_number = from_version if from_version is not None else to_number - 1
        if to_number not in versions or (from_number not in versions and from_version is not None):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"fact {fact_id} has no such version")
        old = versions.get(from_number)
        changes = diff_versions(old, versions[to_number])
        return FactDiffOut(
            fact_id=fact_id,
            from_version=from_number if old else None,
            to_version=to_number,
            changes=[FactChangeOut(field=c.field, before=c.before, after=c.after) for c in changes],
        )

    write_responses = _WRITE_ERRORS

    @api.patch(
        "/v1/knowledge/facts/{fact_id}",
        response_model=FactVersionOut,
        tags=["knowledge"],
        responses=write_responses,
    )
    def edit_fact(
        fact_id: str,
        body: FactEdit,
        cx: Cx,
        principal: Annotated[Principal, requires(Scope.KNOWLEDGE_WRITE)],
    ) -> FactVersionOut:
        """Change fields of a fact, based on `expected_version`. The new version is written into the fact's
        file (that fact's lines only). A retired fact is refused: roll it back instead."""
        return _written(
            lambda editor: editor.edit(
                fact_id,
                body.changes,
                expected_version=body.expected_version,
                author=principal.label,
                reason=body.reason,
            ),
            cx,
        )

    @api.post(
        "/v1/knowledge/facts",
        response_model=FactVersionOut,
        status_code=status.HTTP_201_CREATED,
        tags=["knowledge"],
        responses=write_responses,
    )
    def create_fact(
        body: FactCreate, cx: Cx, principal: Annotated[Principal, requires(Scope.KNOWLEDGE_WRITE)]
    ) -> FactVersionOut:
        """A new fact, appended to `file`. Give it `status: draft` to keep it out of answers until an owner
        publishes it."""
        author, reason, into = principal.label, body.reason, body.file
        return _written(lambda editor: editor.create(body.fact, author=author, reason=reason, into=into), cx)

    @api.post(
        "/v1/knowledge/facts/{fact_id}/rollback",
        response_model=FactVersionOut,
        tags=["knowledge"],
        responses=write_responses,
    )
    def rollback_fact(
        fact_id: str,
        body: FactRollback,
        cx: Cx,
        principal: Annotated[Principal, requires(Scope.KNOWLEDGE_WRITE)],
    ) -> FactVersionOut:
        """The content of `to_version` back, as a new version (restores a retired or removed fact too)."""
        return _written(
            lambda editor: editor.rollback(
                fact_id,
                body.to_version,
                author=principal.label,
                reason=body.reason,
                expected_version=body.expected_version,
            ),
            cx,
        )
