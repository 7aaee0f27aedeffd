"""/v1/metrics and CSAT: automation with its quality rate by slice; customer satisfaction per conversation.

Every response that carries an automation rate carries the quality rate of the same slice with its interval
(or says it is insufficient): the rows come from `monitoring.quality.MetricRow`, which has no other shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from cxstack.api.security import Scope, requires
from cxstack.app import CxApp
from cxstack.domain.models import utcnow
from cxstack.domain.quality import SLICES, Slice, UnknownConversationError
from cxstack.monitoring.quality import as_monitoring_store, metrics


async def _cx(request: Request) -> CxApp:
    cx: CxApp = request.app.state.cx
    return cx


Cx = Annotated[CxApp, Depends(_cx)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no credentials, or an invalid, revoked or expired one"},
    403: {"description": "the credential's role may not do this"},
}


class IntervalOut(BaseModel):
    estimate: float
    ci: list[float] = Field(description="[low, high] at the workspace's monitoring confidence (default 95 %)")


class QualityOut(BaseModel):
    rate: IntervalOut | None = Field(description="The quality rate; null when there are too few reviews")
    method: str = Field(description="ppi++ (a trusted judge corrected by reviews), human, or insufficient")
    human_only: IntervalOut | None = Field(description="The estimate from the reviews alone, for comparison")
    reviewed: int
    units: int = Field(description="Conversations the review sampler has seen in this slice")
    pending_reviews: int
    judged: int
    judge_rate_uncalibrated: float | None
    judge_agreement: float | None
    judge_pairs: int
    judge_trusted: bool
    lambda_: float | None = Field(alias="lambda")
    note: str

    model_config = ConfigDict(populate_by_name=True)


class CsatOut(BaseModel):
    responses: int
    mean: float | None
    satisfied: IntervalOut | None = Field(description="Share of 4 and 5 out of 5")


class OutcomesOut(BaseModel):
    automated_resolved: int
    escalated: int
    abandoned: int
    reopened: int
    in_progress: int


class MetricRowOut(BaseModel):
    key: str
    conversations: int
    settled: int
    outcomes: OutcomesOut
    automation_rate: IntervalOut | None = Field(description="Automated resolutions ÷ settled conversations")
    quality: QualityOut
    escalation_rate: IntervalOut | None
    csat: CsatOut
    cost_per_resolution: float | None = Field(description="Model cost ÷ automated resolutions")
    unjudged: int


class MetricsOut(BaseModel):
    by: str
    since: datetime | None
    until: datetime | None
    overall: MetricRowOut
    rows: list[MetricRowOut]


class CsatIn(BaseModel):
    score: int = Field(ge=1, le=5, description="1 (very unsatisfied) to 5 (very satisfied)")
    comment: str = Field("", max_length=2000)


class CsatRecorded(BaseModel):
    conversation_id: str
    score: int


def add_monitoring_routes(api: FastAPI) -> None:
    @api.get(
        "/v1/metrics",
        response_model=MetricsOut,
        response_model_by_alias=True,
        tags=["monitoring"],
        responses={**_ERRORS, 422: {"description": "unknown slice or a bad filter"}},
        dependencies=[requires(Scope.METRICS_READ)],
    )
    def get_metrics(
        cx: Cx,
        by: Annotated[Slice, Query(description=f"One of {', '.join(SLICES)}")] = "intent",
        days: Annotated[int, Query(ge=1, le=3660, description="Conversations of the last N days")] = 30,
        since: datetime | None = None,
        until: datetime | None = None,
        intent: str | None = None,
        mechanism: str | None = None,
        tier: str | None = None,
        channel: str | None = None,
        language: str | None = None,
        workspace_version: str | None = None,
        variant: str | None = None,
    ) -> MetricsOut:
        """Automation, quality (with intervals), escalation, CSAT and cost per resolution by slice, over
        conversations started in the period (`since`/`until`, else the last `days`)."""
        where = {
            name: value
            for name, value in (
                ("intent", intent),
                ("mechanism", mechanism),
                ("tier", tier),
                ("channel", channel),
                ("language", language),
                ("workspace_version", workspace_version),
                ("variant", variant),
            )
            if value is not None
        }
        if since is None:
            since = utcnow() - timedelta(days=days)
        settings = cx.workspace.settings.monitoring
        report = metrics(cx.store, settings, by, since=since, until=until, where=where)
        return MetricsOut.model_validate(report.as_dict())

    @api.post(
        "/v1/conversations/{conversation_id}/csat",
        response_model=CsatRecorded,
        tags=["monitoring"],
        responses={
            **_ERRORS,
            404: {"description": "unknown conversation, or one the assistant never answered"},
            422: {"description": "score outside 1 to 5"},
        },
        dependencies=[requires(Scope.FEEDBACK_WRITE)],
    )
    def post_csat(conversation_id: str, body: CsatIn, cx: Cx) -> CsatRecorded:
        """The customer's satisfaction with the conversation (a later score replaces an earlier one)."""
        try:
            as_monitoring_store(cx.store).record_csat(conversation_id, body.score, body.comment)
        except UnknownConversationError:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no conversation {conversation_id} with a turn to rate"
            ) from None
        return CsatRecorded(conversation_id=conversation_id, score=body.score)
