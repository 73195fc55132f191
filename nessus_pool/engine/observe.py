"""Live gauges read from the engine at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily

from nessus_pool.engine.core import Engine
from nessus_pool.engine.windows import held_gauge
from nessus_pool.models import TaskStatus


def snapshot(engine: Engine) -> Iterable[GaugeMetricFamily]:
    active = GaugeMetricFamily(
        "nessus_pool_scanner_active_scans", "Scans running on a scanner", labels=["pool", "scanner"]
    )
    capacity = GaugeMetricFamily(
        "nessus_pool_scanner_capacity", "max-concurrent-scans", labels=["pool", "scanner"]
    )
    up = GaugeMetricFamily(
        "nessus_pool_scanner_up",
        "1 if the scanner answered its last probe",
        labels=["pool", "scanner"],
    )
    circuit = GaugeMetricFamily(
        "nessus_pool_scanner_circuit_state",
        "0 closed, 1 half-open, 2 open",
        labels=["pool", "scanner"],
    )
    for sc in engine.scanners.values():
        labels = [sc.spec.pool, sc.scanner_id]
        active.add_metric(labels, len(sc.slots.active))
        capacity.add_metric(labels, sc.slots.capacity)
        up.add_metric(labels, 1 if sc.slots.reachable else 0)
        circuit.add_metric(labels, int(sc.breaker.state))
    depth = GaugeMetricFamily("nessus_pool_queue_depth", "Queued scans", labels=["pool"])
    oldest = GaugeMetricFamily(
        "nessus_pool_oldest_queued_age_seconds", "Age of the oldest queued scan", labels=["pool"]
    )
    now_ms = engine.clock.now_ms()
    oldest_ms: dict[str, int] = {}
    for t in engine.tasks.values():
        if t.status is TaskStatus.QUEUED:
            prev = oldest_ms.get(t.pool)
            if prev is None or t.created_at_ms < prev:
                oldest_ms[t.pool] = t.created_at_ms
    for name, pool in engine.pools.items():
        if pool.shared is not None and pool.shared.oldest_created_ms is not None:
            oldest_ms[name] = pool.shared.oldest_created_ms  # [cluster] from the database
        depth.add_metric([name], pool.queue_depth)
        oldest.add_metric([name], (now_ms - oldest_ms[name]) / 1000 if name in oldest_ms else 0)
    dlq = GaugeMetricFamily("nessus_pool_dlq_depth", "Dead-lettered scans", labels=["pool"])
    for name in engine.pools:
        dlq.add_metric([name], engine.dlq_counts.get(name, 0))
    # a gauge of a count since start: the snapshot hook takes gauges only
    internal = GaugeMetricFamily(
        "nessus_pool_task_internal_errors",
        "Task runners that failed unexpectedly since start (requeued as internal_error)",
        labels=["pool"],
    )
    for name in engine.pools:
        internal.add_metric([name], engine.internal_errors.get(name, 0))
    healthy = GaugeMetricFamily(
        "nessus_pool_engine_healthy", "0 once an essential background loop has died"
    )
    healthy.add_metric([], 0 if engine.death else 1)
    waiting = GaugeMetricFamily(
        "nessus_pool_queue_blocked",
        "Queued scans no scanner of their pool can take now, by reason (see waiting_reason)",
        labels=["pool", "reason"],
    )
    for name, pool in engine.pools.items():
        if pool.queue_depth:
            reason = engine.pool_waiting_reason(name)
            if reason is not None:
                waiting.add_metric([name, reason], pool.queue_depth)
    held = held_gauge(engine)
    families = [active, capacity, up, circuit, depth, oldest, dlq, internal, healthy, waiting, held]
    if engine.cluster is not None:
        families += list(_cluster(engine))
    return families


def _cluster(engine: Engine) -> Iterable[GaugeMetricFamily]:
    """[cluster] This daemon's share: leases held, taken and lost, writes fenced out."""
    member = engine.cluster
    assert member is not None
    held = GaugeMetricFamily(
        "nessus_pool_cluster_leases_held", "Scanner leases this daemon holds now"
    )
    held.add_metric([], len(member.held))
    yield held
    for name, text, value in (
        ("takeovers", "Scanner leases taken since start", member.takeovers),
        ("lease_losses", "Scanner leases lost to another daemon or an outage", member.losses),
        (
            "fenced_writes",
            "Writes refused since start because their scanner lease had moved",
            getattr(engine.store, "fenced_refused", 0),
        ),
    ):
        g = GaugeMetricFamily(f"nessus_pool_cluster_{name}", text)
        g.add_metric([], value)
        yield g
