"""Prometheus metrics, exported by the one process that does the work.

A private :class:`CollectorRegistry` per daemon (tests run several in one process). Gauges
that describe live state (queue depth, slots) are read from the engine at scrape time
through ``snapshot``; counters and histograms are updated as things happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nessus_pool import __version__

# scans last minutes to a day
SCAN_BUCKETS_S = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, float("inf"))
WAIT_BUCKETS_S = (0.1, 1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, float("inf"))
REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))

SnapshotFn = Callable[[], Iterable[GaugeMetricFamily]]


class _Live(Collector):
    def __init__(self) -> None:
        self.fn: SnapshotFn | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return list(self.fn()) if self.fn is not None else []


class Metrics:
    def __init__(self) -> None:
        # No ``<name>_created`` series: a timestamp per labelled child (29 series after one
        # scan, 65 on a busier daemon) that reads like a count (``nessus_pool_scans_created``).
        # prometheus-client's switch is process-wide; nothing of ours wants them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nessus_pool_scanner_requests",
            "HTTP calls to scanners",
            ["scanner", "endpoint", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "nessus_pool_scanner_request_duration_seconds",
            "Duration of HTTP calls to scanners",
            ["scanner", "endpoint", "outcome"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )
        self.scans = Counter(
            "nessus_pool_scans", "Scans by final status", ["pool", "status"], registry=r
        )
        self.submitted_total = Counter(
            "nessus_pool_submitted", "Scans accepted", ["pool"], registry=r
        )
        self.launched_total = Counter(
            "nessus_pool_launched", "Scans launched on a scanner", ["pool"], registry=r
        )
        self.scan_duration = Histogram(
            "nessus_pool_scan_duration_seconds",
            "From launch to end",
            ["pool"],
            buckets=SCAN_BUCKETS_S,
            registry=r,
        )
        self.queue_wait_s = Histogram(
            "nessus_pool_queue_wait_seconds",
            "From submit to dispatch",
            ["pool"],
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.validation = Counter(
            "nessus_pool_validation",
            "Result validations by authentication status",
            ["pool", "authentication_status"],
            registry=r,
        )
        self.reloads = Counter(
            "nessus_pool_config_reloads", "Config reloads", ["result"], registry=r
        )
        self.housekeeping = Counter(
            "nessus_pool_housekeeping_deleted",
            "Objects deleted by housekeeping",
            ["kind"],
            registry=r,
        )
        self.notification_deliveries = Counter(
            "nessus_pool_notification_deliveries",
            "Webhook delivery attempts by outcome (delivered, retry, failed, skipped)",
            ["target", "outcome"],
            registry=r,
        )
        self.notification_outbox = Gauge(
            "nessus_pool_notification_outbox",
            "Webhook deliveries in the outbox by state (pending, failed)",
            ["state"],
            registry=r,
        )
        build = Gauge("nessus_pool_build_info", "Build information", ["version"], registry=r)
        build.labels(version=__version__).set(1)
        self._submitted_by_pool: dict[str, Counter] = {}
        self._live = _Live()
        r.register(self._live)

    def set_snapshot(self, fn: SnapshotFn) -> None:
        self._live.fn = fn

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- hooks -------------------------------------------------------------------------

    def on_request(self, scanner: str, endpoint: str, outcome: str, duration_s: float) -> None:
        self.requests.labels(scanner, endpoint, outcome).inc()
        self.request_duration.labels(scanner, endpoint, outcome).observe(duration_s)

    def submitted(self, pool: str) -> None:
        child = self._submitted_by_pool.get(pool)
        if child is None:
            child = self._submitted_by_pool[pool] = self.submitted_total.labels(pool)
        child.inc()

    def launched(self, pool: str) -> None:
        self.launched_total.labels(pool).inc()

    def queue_wait(self, pool: str, wait_s: float) -> None:
        self.queue_wait_s.labels(pool).observe(max(0.0, wait_s))

    def finished(self, pool: str, status: str, duration_s: float | None) -> None:
        self.scans.labels(pool, status).inc()
        if duration_s is not None:
            self.scan_duration.labels(pool).observe(max(0.0, duration_s))

    def validated(self, pool: str, authentication_status: str) -> None:
        self.validation.labels(pool, authentication_status).inc()

    def delivery(self, target: str, outcome: str) -> None:
        self.notification_deliveries.labels(target, outcome).inc()

    def outbox_depth(self, counts: dict[str, int]) -> None:
        for state in ("pending", "failed"):
            self.notification_outbox.labels(state).set(counts.get(state, 0))
