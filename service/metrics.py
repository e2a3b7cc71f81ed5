"""Prometheus metrics: request latency, encoder batches and queue, index sizes, job progress.

Each app gets its own registry (tests build many apps in one process). Index sizes and job
progress are read when Prometheus scrapes, from callables the app provides, so no route
has to remember to update them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# (collection name, modality) -> number of items
IndexSizes = Callable[[], Iterable[tuple[str, str, int]]]
# job id -> (state, done, failed, total)
JobProgress = Callable[[], Iterable[tuple[str, str, int, int, int]]]


class _ScrapeTimeCollector(Collector):
    """Reads index sizes and job progress at scrape time."""

    def __init__(self, index_sizes: IndexSizes | None, job_progress: JobProgress | None):
        self.index_sizes = index_sizes
        self.job_progress = job_progress

    def collect(self):
        sizes = GaugeMetricFamily("prolip_index_items", "items in each collection", labels=["collection", "modality"])
        if self.index_sizes is not None:
            try:
                for name, modality, size in self.index_sizes():
                    sizes.add_metric([name, modality], size)
            except Exception as error:  # a scrape must not fail because one index is unreadable
                log.warning("metrics: cannot read index sizes: %s", error)
        yield sizes
        jobs = GaugeMetricFamily("prolip_job_items", "items of each job by outcome", labels=["job", "state", "kind"])
        if self.job_progress is not None:
            try:
                for job_id, state, done, failed, total in self.job_progress():
                    jobs.add_metric([job_id, state, "done"], done)
                    jobs.add_metric([job_id, state, "failed"], failed)
                    jobs.add_metric([job_id, state, "total"], total)
            except Exception as error:
                log.warning("metrics: cannot read job progress: %s", error)
        yield jobs


class ServiceMetrics:
    """The service's Prometheus instruments on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "prolip_request_duration_seconds", "HTTP request latency by route", ["method", "route", "status"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        # batch queues: "text" and "image" (encoder calls), "search" (index searches)
        self.batch_size = Histogram(
            "prolip_batch_size", "inputs per batched call", ["queue"], buckets=BATCH_BUCKETS,
            registry=self.registry)
        self.batch_requests = Histogram(
            "prolip_batch_requests", "requests merged into one batched call", ["queue"],
            buckets=BATCH_BUCKETS, registry=self.registry)
        self.encode_seconds = Histogram(
            "prolip_batch_seconds", "time of one batched call", ["queue"], buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.queue_depth = Gauge(
            "prolip_queue_depth", "requests admitted to a batch queue and not yet answered", ["queue"],
            registry=self.registry)
        self.rejected = Counter(
            "prolip_rejected_requests_total", "requests refused before work (auth, rate, queue)", ["reason"],
            registry=self.registry)
        self.skipped = Counter(
            "prolip_batch_skipped_total", "queued requests dropped because their client left", ["queue"],
            registry=self.registry)
        self.in_flight_gauge = Gauge("prolip_requests_in_flight", "API requests being handled",
                                     registry=self.registry)
        self.in_flight = 0  # the same number, read by the batch queues to know whether to wait
        self._scrape = _ScrapeTimeCollector(None, None)
        self.registry.register(self._scrape)

    def watch(self, index_sizes: IndexSizes | None = None, job_progress: JobProgress | None = None) -> None:
        """Tell the scrape-time collector where index sizes and job progress come from."""
        self._scrape.index_sizes = index_sizes
        self._scrape.job_progress = job_progress

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Times every HTTP request, labelled by its route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        self.metrics.in_flight += 1
        self.metrics.in_flight_gauge.inc()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.in_flight_gauge.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start)
