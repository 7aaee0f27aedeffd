"""`/metrics` in Prometheus's text format (prometheus-client), from the store, so it counts the turns of every
worker whichever process ran them.

At each scrape the collector reads the traces committed since the previous scrape (an indexed range on
`created_at`) and adds them to this process's counters and histograms — turns by decision and outcome,
escalations by reason, turn and per-layer durations — then reads the current sizes: the send queue, open
escalations per queue, conversations waiting for a turn, the review queue. Automation and quality of the
last 7 days come as a pair of gauges with their interval bounds (never one without the other), with the drift
checks, cached for a few minutes since each is several grouped queries.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cxstack.domain.models import utcnow
from cxstack.domain.ports import OutboxStatus
from cxstack.workspace.workspace import Workspace

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CACHE_SECONDS = 300.0
BATCH = 5000


class _Gauges(Collector):
    """Sizes and the quality pair, read from the store at scrape time."""

    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        yield from self.exporter.gauges()


class MetricsExporter:
    def __init__(
        self,
        store: Any,
        workspace: Callable[[], Workspace],
        *,
        since: datetime | None = None,
        role: str = "api",
    ) -> None:
        self.store = store
        self.workspace = workspace
        # Each process is scraped on its own; these labels tell their series apart on one dashboard.
        self.process_labels = (f"{socket.gethostname()}:{os.getpid()}", role)
        self.registry = CollectorRegistry(auto_describe=False)  # describing would query the store
        self.turns = Counter(
            "cxstack_turns", "Turns committed, by decision and outcome", ["decision", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.escalations = Counter(
            "cxstack_escalations", "Turns that escalated, by reason code", ["reason"], registry=self.registry
        )
        self.turn_seconds = Histogram(
            "cxstack_turn_seconds", "Turn duration", buckets=BUCKETS, registry=self.registry
        )
        self.layer_seconds = Histogram(
            "cxstack_layer_seconds", "Time spent per layer in a turn", ["layer"], buckets=BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self._watermark = since or utcnow()
        self._seen_at_watermark: set[str] = set()
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None
        self.registry.register(_Gauges(self))

    # ---- counters from new traces ------------------------------------------------------------------------

    def _catch_up(self) -> None:
        while True:
            traces = self.store.traces_since(self._watermark, BATCH)
            for trace in traces:
                if trace.id in self._seen_at_watermark:
                    continue
                self.turns.labels(str(trace.decision), trace.outcome).inc()
                if trace.outcome == "escalated":
                    self.escalations.labels(trace.reason_code or "unknown").inc()
                self.turn_seconds.observe(trace.duration_ms / 1000)
                per_layer: dict[str, float] = {}
                for step in trace.steps:
                    per_layer[str(step.layer)] = per_layer.get(str(step.layer), 0.0) + step.duration_ms
                for layer, ms in per_layer.items():
                    self.layer_seconds.labels(layer).observe(ms / 1000)
            if not traces:
                return
            last = traces[-1].created_at
            at_last = {t.id for t in traces if t.created_at == last}
            if last == self._watermark:
                self._seen_at_watermark |= at_last
            else:
                self._watermark, self._seen_at_watermark = last, at_last
            if len(traces) < BATCH:
                return

    # ---- gauges -------------------------------------------------------------------------------------------

    def gauges(self) -> Iterator[Metric]:
        store = self.store
        outbox = GaugeMetricFamily("cxstack_outbox_items", "Replies in the send queue", labels=["status"])
        for status in (OutboxStatus.PENDING, OutboxStatus.DEAD):
            outbox.add_metric([status.value], store.count_outbox(status))
        yield outbox
        escalations = GaugeMetricFamily("cxstack_open_escalations", "Open escalations", labels=["queue"])
        open_by_queue: dict[str, int] = {}
        for packet in store.list_escalations(status="open"):
            open_by_queue[packet.queue] = open_by_queue.get(packet.queue, 0) + 1
        for queue, count in sorted(open_by_queue.items()):
            escalations.add_metric([queue], count)
        yield escalations
        yield GaugeMetricFamily(
            "cxstack_conversations_pending", "Conversations with messages waiting for a turn",
            value=len(store.conversations_with_pending()),
        )  # fmt: skip
        if hasattr(store, "review_queue_sizes"):
            reviews = GaugeMetricFamily("cxstack_review_queue", "Open review items", labels=["reason"])
            for reason, count in sorted(store.review_queue_sizes().items()):
                reviews.add_metric([reason], count)
            yield reviews
        if hasattr(store, "queue_figures"):
            yield from self._queues()
        yield from self._quality()

    def _queues(self) -> Iterator[Metric]:
        figures = self.store.queue_figures()
        labels = ["process", "role"]
        for name, help_text, value in (
            ("cxstack_outbox_pending", "Replies waiting to be sent", figures.outbox_pending),
            ("cxstack_outbox_dead", "Replies that failed every send attempt", figures.outbox_dead),
            (
                "cxstack_outbox_oldest_pending_seconds",
                "Age of the oldest reply not yet sent (0: none waits)",
                figures.oldest_pending_seconds,
            ),
            (
                "cxstack_pending_conversations",
                "Conversations with messages waiting for a turn",
                figures.conversations_pending,
            ),
            ("cxstack_leases_held", "Conversations a turn worker holds now", figures.leases_held),
            (
                "cxstack_lease_overdue_seconds",
                "Longest time a conversation lease is past its expiry: its worker died holding it (0: none)",
                figures.lease_overdue_seconds,
            ),
            ("cxstack_handoff_dead", "Escalations the help desk never took", figures.handoff_dead),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=labels)
            gauge.add_metric(list(self.process_labels), value)
            yield gauge

    def _quality(self) -> list[Metric]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        from cxstack.monitoring.drift import drift_between_periods
        from cxstack.monitoring.quality import metrics

        settings = self.workspace().settings.monitoring
        row = metrics(self.store, settings, "all", since=utcnow() - timedelta(days=7)).overall
        pair = GaugeMetricFamily(
            "cxstack_rate_7d",
            "Automation and quality of conversations started in the last 7 days, always together: estimate "
            "and 95% interval bounds (NaN when there is no figure: too few reviews, nothing settled)",
            labels=["metric", "bound", "method"],
        )
        nan = float("nan")
        for name, interval, method in (
            ("automation", row.automation, "wilson"),
            ("quality", row.quality.value, row.quality.method),
            ("quality_human_only", row.quality.human_only, "hajek"),
        ):
            # no figure (too few reviews, nothing settled): NaN, so automation never appears alone
            values = (nan, nan, nan) if interval is None else (interval.estimate, interval.low, interval.high)
            for bound, value in zip(("estimate", "low", "high"), values, strict=True):
                pair.add_metric([name, bound, method], value)
        reviews = GaugeMetricFamily(
            "cxstack_quality_reviews_7d", "Reviews behind the 7-day quality rate", value=row.quality.reviewed
        )
        drift = GaugeMetricFamily(
            "cxstack_drift_alert",
            "1 when the metric drifted (last 7 days vs the 7 before)",
            labels=["metric", "test"],
        )
        p_values = GaugeMetricFamily(
            "cxstack_drift_p_value", "The drift test's p-value", labels=["metric", "test"]
        )
        for check in drift_between_periods(self.store, settings, days=7).checks:
            drift.add_metric([check.metric, check.test], float(check.alert))
            if check.p is not None:
                p_values.add_metric([check.metric, check.test], check.p)
        result: list[Metric] = [pair, reviews, drift, p_values]
        self._cached = (now, result)
        return result

    def scrape(self) -> bytes:
        with self._lock:
            self._catch_up()
            return generate_latest(self.registry)
