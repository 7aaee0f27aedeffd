"""/v1/metrics and CSAT: automation with its quality rate by slice; customer satisfaction per conversation.

Every response that carries an automation rate carries the quality rate of the same slice with its interval
(or says it is insufficient): the rows come from `monitoring.quality.MetricRow`, which has no other shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Response, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from cxstack.api.deps import Cx
from cxstack.api.security import Principal, Scope, requires
from cxstack.domain.models import utcnow
from cxstack.domain.quality import (
    SLICES,
    DuplicateReviewError,
    Review,
    ReviewReason,
    Slice,
    UnknownConversationError,
)
from cxstack.monitoring import review
from cxstack.monitoring.prometheus import CONTENT_TYPE, MetricsExporter
from cxstack.monitoring.quality import as_monitoring_store, metrics
from cxstack.monitoring.review import as_review_store
from cxstack.monitoring.rubric import ScoresInvalidError

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
    exporters: dict[int, MetricsExporter] = {}
    started = utcnow()  # counters count the turns committed since this API was made

    @api.get(
        "/metrics",
        response_class=Response,
        tags=["monitoring"],
        responses={**_ERRORS, 200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
        dependencies=[requires(Scope.METRICS_READ)],
    )
    def prometheus_metrics(cx: Cx) -> Response:
        """Prometheus metrics (scrape with a viewer key as a bearer token): turns by decision and outcome,
        escalations by reason, turn and per-layer durations since this process started; queue
        sizes; automation with quality over the last 7 days; drift alerts with their p-values."""
        exporter = exporters.get(id(cx))
        if exporter is None:
            exporter = exporters.setdefault(
                id(cx), MetricsExporter(cx.store, lambda: cx.workspace, since=started)
            )
        return Response(exporter.scrape(), media_type=CONTENT_TYPE)

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

    @api.get(
        "/v1/report",
        response_class=HTMLResponse,
        tags=["monitoring"],
        responses={**_ERRORS, 200: {"content": {"text/html": {}}, "description": "the report page"}},
        dependencies=[requires(Scope.METRICS_READ)],
    )
    def get_report(
        cx: Cx, days: Annotated[float, Query(ge=1, le=3660, description="The last N days")] = 30
    ) -> HTMLResponse:
        """The quality report as a self-contained HTML page (what `cxstack report` writes): automation and
        quality over time with intervals, per intent and mechanism, judge agreement, drift, the queue."""
        from cxstack.monitoring.report import build_report, report_html

        page = report_html(build_report(cx.store, cx.workspace, days=days))
        # shown in a sandboxed frame by the Quality page; nothing in it runs or loads anything
        headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
        return HTMLResponse(page, headers=headers)

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


# ---- reviews ----------------------------------------------------------------------------------------------


class CriterionOut(BaseModel):
    id: str
    description: str
    kind: str
    scale: list[int]
    pass_at: int
    gate: bool


class RubricOut(BaseModel):
    version: str = Field(description="Content hash; every review and judgement records it")
    criteria: list[CriterionOut]


class QueueItemOut(BaseModel):
    id: str
    reason: str
    stratum: str
    wanted: int
    done: int
    detail: dict[str, Any]


class ReviewPacketOut(BaseModel):
    item: QueueItemOut | None
    conversation_id: str
    transcript: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    rubric: RubricOut
    rubric_version: str


class ReviewIn(BaseModel):
    conversation_id: str = Field(min_length=1, max_length=128)
    scores: dict[str, int | bool] = Field(description="Every criterion of the rubric, within its scale")
    comment: str = Field("", max_length=4000)
    reason: ReviewReason = Field(
        ReviewReason.MANUAL,
        description="The queue item answered: sample, double, disagreement; manual for any other review",
    )


class ReviewOut(BaseModel):
    id: str
    conversation_id: str
    reviewer: str
    rubric_version: str
    scores: dict[str, int]
    passed: bool
    reason: str
    comment: str
    created_at: datetime | None
    judge_version: str | None


class SampledOut(BaseModel):
    drawn: int
    queue: dict[str, int]


def review_out(review: Review) -> ReviewOut:
    return ReviewOut(
        id=review.id,
        conversation_id=review.conversation_id,
        reviewer=review.reviewer,
        rubric_version=review.rubric_version,
        scores=review.scores,
        passed=review.passed,
        reason=review.reason.value,
        comment=review.comment,
        created_at=review.created_at,
        judge_version=review.judge_version,
    )


def reviewer_of(principal: Principal) -> str:
    """The reviewer is the key's holder: its name and id, never what the request says."""
    if principal.key is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "reviews are made with an API key")
    return f"{principal.key.name} ({principal.key.id})"


def _unprocessable(loc: list[str], message: str) -> HTTPException:
    detail = [{"loc": ["body", *loc], "msg": message, "type": "value_error"}]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def add_review_routes(api: FastAPI) -> None:
    @api.get(
        "/v1/rubric",
        response_model=RubricOut,
        tags=["monitoring"],
        responses=_ERRORS,
        dependencies=[requires(Scope.METRICS_READ)],
    )
    def get_rubric(cx: Cx) -> RubricOut:
        """The rubric reviews and judges score against (rubric.yaml, or the default when it has none)."""
        shown = review.packet_rubric(cx.workspace)
        return RubricOut.model_validate(shown)

    @api.post(
        "/v1/reviews/sample",
        response_model=SampledOut,
        tags=["monitoring"],
        responses=_ERRORS,
        dependencies=[requires(Scope.REVIEWS_WRITE)],
    )
    def post_sample(cx: Cx) -> SampledOut:
        """Run the review sampler now (the service also runs it every few minutes)."""
        store = as_review_store(cx.store)
        drawn = review.sample(store, cx.workspace)
        return SampledOut(drawn=drawn, queue=store.review_queue_sizes())

    @api.get(
        "/v1/reviews/next",
        response_model=ReviewPacketOut,
        tags=["monitoring"],
        responses={**_ERRORS, 204: {"description": "nothing left to review for this reviewer"}},
    )
    def get_next_review(
        cx: Cx, principal: Annotated[Principal, requires(Scope.REVIEWS_WRITE)]
    ) -> ReviewPacketOut | Response:
        """The most urgent conversation this reviewer has not reviewed, held for them for 15 minutes."""
        found = review.next_packet(as_review_store(cx.store), cx.workspace, reviewer_of(principal))
        if found is None:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        return ReviewPacketOut.model_validate(found.as_dict())

    @api.get(
        "/v1/reviews/conversations/{conversation_id}",
        response_model=ReviewPacketOut,
        tags=["monitoring"],
        responses={**_ERRORS, 404: {"description": "unknown conversation"}},
        dependencies=[requires(Scope.REVIEWS_WRITE)],
    )
    def get_review_packet(conversation_id: str, cx: Cx) -> ReviewPacketOut:
        """Any conversation, as a reviewer sees it (for a manual review)."""
        if cx.store.get_conversation(conversation_id) is None:  # type: ignore[arg-type]
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no conversation {conversation_id}")
        found = review.packet(as_review_store(cx.store), cx.workspace, conversation_id)
        return ReviewPacketOut.model_validate(found.as_dict())

    @api.post(
        "/v1/reviews",
        response_model=ReviewOut,
        status_code=status.HTTP_201_CREATED,
        tags=["monitoring"],
        responses={
            **_ERRORS,
            409: {"description": "this reviewer already reviewed this conversation for this reason"},
            422: {"description": "unknown conversation, or scores that do not fit the rubric (field named)"},
        },
    )
    def post_review(
        body: ReviewIn, cx: Cx, principal: Annotated[Principal, requires(Scope.REVIEWS_WRITE)]
    ) -> ReviewOut:
        """A review against the rubric; the reviewer is the key's holder."""
        try:
            stored = review.submit(
                as_review_store(cx.store),
                cx.workspace,
                conversation_id=body.conversation_id,
                reviewer=reviewer_of(principal),
                scores=body.scores,
                comment=body.comment,
                reason=body.reason,
            )
        except ScoresInvalidError as exc:
            raise _unprocessable(exc.field.split("."), str(exc)) from None
        except UnknownConversationError:
            raise _unprocessable(
                ["conversation_id"], f"no conversation {body.conversation_id} with a turn to review"
            ) from None
        except DuplicateReviewError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        return review_out(stored)

    @api.get(
        "/v1/reviews",
        response_model=list[ReviewOut],
        tags=["monitoring"],
        responses=_ERRORS,
        dependencies=[requires(Scope.METRICS_READ)],
    )
    def list_reviews(
        cx: Cx,
        conversation_id: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[ReviewOut]:
        """Reviews, oldest first; each keeps the rubric version it was made against."""
        found = as_review_store(cx.store).list_reviews(
            conversation_id=conversation_id, since=since, limit=limit
        )
        return [review_out(r) for r in found]
