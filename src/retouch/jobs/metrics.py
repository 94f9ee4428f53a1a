"""Prometheus metrics of the job system. Each process has its own registry: `retouch serve` shows its
requests, its workers' jobs and the deployment's queue on /metrics; a `retouch worker` shows its jobs
on its own port (--metrics-port). Labels are slugs, engines and statuses: a bounded set."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.duration = Histogram(
            "retouch_job_duration_seconds",
            "Seconds from a worker taking a job to its end, by slug, engine and outcome.",
            ["slug", "engine", "status"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter("retouch_job_attempts_total", "Jobs taken by a worker (a retry counts again).", ["slug"], registry=registry)
        self.requeued = Counter(
            "retouch_jobs_requeued_total", "Jobs queued again by the sweep after their worker stopped renewing.", ["slug"], registry=registry
        )
        self.lost = Counter(
            "retouch_jobs_lost_ownership_total", "Jobs a worker stopped because another one had taken them over.", ["slug"], registry=registry
        )


class DeploymentCollector(Collector):
    """Gauges read from the job store at each scrape: queue depth, running jobs and live workers per slug."""

    def __init__(self, read: Callable[[], dict[str, tuple[int, int, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily("retouch_queue_depth", "Requests waiting in the queue, by slug.", labels=["slug"])
        processing = GaugeMetricFamily("retouch_jobs_processing", "Requests being run now, by slug.", labels=["slug"])
        workers = GaugeMetricFamily("retouch_live_workers", "Live worker processes serving each slug.", labels=["slug"])
        up = GaugeMetricFamily("retouch_job_store_up", "1 when the job store answered this scrape, else 0.")
        try:
            counts = self._read()
        except Exception:  # noqa: BLE001 - a scrape must answer even when the store does not
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for slug, (waiting, running, live) in sorted(counts.items()):
            queued.add_metric([slug], waiting)
            processing.add_metric([slug], running)
            workers.add_metric([slug], live)
        yield from (queued, processing, workers, up)
