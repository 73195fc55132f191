"""What callers see of tasks, scanners and pools: the view Structs and their builders, read
from the engine's live state (no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec

from nessus_pool.engine import Engine
from nessus_pool.errors import NotFoundError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.queues import ScannerSlots
from nessus_pool.windows import Calendar, Span

#: what a scanner's message says until its first probe answers (see ScannerSlots)
_NOT_PROBED = ScannerSlots.message


class WindowView(msgspec.Struct, kw_only=True):
    """One maintenance window occurrence (overlapping windows merged)."""

    start_ms: int
    end_ms: int
    #: what a scan running when it starts does: finish, pause or stop
    on_window: str
    name: str | None = None


def window_view(span: Span | None) -> WindowView | None:
    if span is None:
        return None
    return WindowView(
        start_ms=span.start_ms, end_ms=span.end_ms, on_window=span.on_window, name=span.name
    )


class TaskView(msgspec.Struct, kw_only=True):
    task_id: str
    name: str
    status: str
    pool: str
    scanner: str | None
    scan_type: str
    targets: list[str]
    priority: int
    attempt: int
    credential: str | None
    queue_position: int | None = None
    estimated_wait_s: float | None = None
    eta_basis: str | None = None
    #: why a queued scan is not dispatched now (capacity_full, export_only, ...), else None
    waiting_reason: str | None = None
    progress_pct: int | None = None
    remote_scan_id: int | None = None
    remote_scan_name: str | None = None
    reason: str | None = None
    error: str | None = None
    dead_letter: bool = False
    authentication_status: str | None = None
    created_at_ms: int
    updated_at_ms: int
    dispatched_at_ms: int | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    export_available: bool = False
    #: the export's size, recorded when it was downloaded
    export_bytes: int | None = None
    results: dict[str, Any] | None = None
    #: while paused: since when, for how long so far, and by whom (user or window)
    paused_at_ms: int | None = None
    paused_for_s: float | None = None
    paused_by: str | None = None
    #: the schedule whose run this is, else None
    schedule_id: str | None = None
    #: served from memory while the database is unavailable: true, with the time the
    #: database last confirmed a write (absent otherwise)
    stale: bool | msgspec.UnsetType = msgspec.UNSET
    as_of_ms: int | msgspec.UnsetType | None = msgspec.UNSET


class TaskPage(msgspec.Struct, kw_only=True):
    tasks: list[TaskView]
    next_cursor: str | None


class ScannerView(msgspec.Struct, kw_only=True):
    id: str
    pool: str
    #: one word for tables: draining, disabled, probing (no probe answered yet), down,
    #: export-only or up; an operator's decision wins over health
    state: str
    url: str
    capacity: int
    active_scans: int
    enabled: bool
    draining: bool
    reachable: bool
    scan_api: bool
    export_only: bool
    version: str | None
    nessus_type: str | None
    message: str
    circuit_state: str
    #: what an operator must know about the change just made (the drain reply), else None
    note: str | None = None
    #: the maintenance window it is in now (its pool's or its own), and the next one
    window: WindowView | None = None
    next_window: WindowView | None = None


class PoolView(msgspec.Struct, kw_only=True):
    name: str
    capacity: int
    active: int
    utilisation: float
    queue_depth: int
    max_queued: int
    oldest_queued_age_s: float | None
    dlq_depth: int
    mean_scan_duration_s: float | None
    eta_basis: str
    scanners: list[ScannerView]
    #: why its queued scans are not dispatched now (see TaskView.waiting_reason), else None
    waiting_reason: str | None = None
    #: the pool's own maintenance window now, and its next one
    window: WindowView | None = None
    next_window: WindowView | None = None


def task_view(engine: Engine, t: Task, results: dict[str, Any] | None = None) -> TaskView:
    eta, basis = engine.estimated_wait_s(t) if t.status is TaskStatus.QUEUED else (None, None)
    waiting = engine.waiting_reason(t)
    if waiting == "maintenance_window":
        eta, basis = _after_windows(engine, t, eta, basis)
    now_ms = engine.clock.now_ms()
    paused = t.status is TaskStatus.PAUSED and t.paused_at_ms is not None
    return TaskView(
        task_id=t.task_id,
        name=t.name,
        status=t.status.value,
        pool=t.pool,
        scanner=t.scanner_id,
        scan_type=t.scan_type.value,
        targets=t.targets,
        priority=t.priority,
        attempt=t.attempt,
        credential=t.credential,
        queue_position=engine.queue_position(t),
        estimated_wait_s=eta,
        eta_basis=basis,
        waiting_reason=waiting,
        progress_pct=t.progress_pct,
        remote_scan_id=t.remote_scan_id,
        remote_scan_name=t.remote_scan_name,
        reason=t.reason,
        error=t.error,
        dead_letter=t.dead_letter,
        authentication_status=t.authentication_status,
        created_at_ms=t.created_at_ms,
        updated_at_ms=t.updated_at_ms,
        dispatched_at_ms=t.dispatched_at_ms,
        started_at_ms=t.started_at_ms,
        finished_at_ms=t.finished_at_ms,
        export_available=t.export_path is not None,
        export_bytes=t.export_bytes,
        results=results,
        paused_at_ms=t.paused_at_ms if paused else None,
        paused_for_s=round(max(0, now_ms - (t.paused_at_ms or now_ms)) / 1000, 1)
        if paused
        else None,
        paused_by=t.paused_by if paused else None,
        schedule_id=t.schedule_id,
    )


def _after_windows(
    engine: Engine, t: Task, eta: float | None, basis: str | None
) -> tuple[float | None, str | None]:
    """Every scanner that could take ``t`` is in a maintenance window: it waits at least
    until the first of those windows ends."""
    pool = engine.pools.get(t.pool)
    if pool is None:
        return eta, basis
    now_ms = engine.clock.now_ms()
    ends = [
        sc.calendar.free_at_ms(now_ms)
        for sc in pool.scanners.values()
        if t.requested_scanner is None or sc.scanner_id == t.requested_scanner
    ]
    if not ends:
        return eta, basis
    window_s = max(0, min(ends) - now_ms) / 1000
    return round(
        window_s + (eta or 0.0), 1
    ), f"after the maintenance window ({window_s:g} s); {basis}"


def _windows(calendar: Calendar, now_ms: int) -> tuple[WindowView | None, WindowView | None]:
    """The current and the next window of ``calendar`` (None, None without windows)."""
    if not calendar:
        return None, None
    return window_view(calendar.current(now_ms)), window_view(calendar.next(now_ms))


def scanner_views(engine: Engine, pool: str | None = None) -> list[ScannerView]:
    out = []
    for sc in engine.scanners.values():
        if pool is not None and sc.spec.pool != pool:
            continue
        s = sc.slots
        current, nxt = _windows(sc.calendar, engine.clock.now_ms())
        out.append(
            ScannerView(
                id=sc.scanner_id,
                pool=sc.spec.pool,
                state=scanner_state(s),
                url=sc.spec.url,
                capacity=s.capacity,
                active_scans=len(s.active),
                enabled=s.enabled,
                draining=s.draining or s.removed,
                reachable=s.reachable,
                scan_api=s.scan_api,
                export_only=s.reachable and not s.scan_api,
                version=s.version,
                nessus_type=s.nessus_type,
                message=s.message,
                circuit_state=sc.circuit_state,
                window=current,
                next_window=nxt,
            )
        )
    return out


def pool_view(engine: Engine, name: str) -> PoolView:
    pool = engine.pools.get(name)
    if pool is None:
        raise NotFoundError(f"pool {name!r} not found", field="pool")
    oldest = None
    seq = pool.queue.oldest_seq()
    if seq is not None:
        head = next((t for t in engine.tasks.values() if t.seq == seq), None)
        if head is not None:
            oldest = max(0.0, (engine.clock.now_ms() - head.created_at_ms) / 1000)
    if pool.shared is not None and pool.shared.oldest_created_ms is not None:  # [cluster]
        oldest = max(0.0, (engine.clock.now_ms() - pool.shared.oldest_created_ms) / 1000)
    mean = pool.mean_duration_s()
    cap = pool.capacity
    calendar = engine.windows.pool_calendars.get(name, Calendar())
    current, nxt = _windows(calendar, engine.clock.now_ms())
    return PoolView(
        name=name,
        capacity=cap,
        active=pool.active,
        utilisation=round(pool.active / cap, 3) if cap else 0.0,
        queue_depth=pool.queue_depth,
        max_queued=pool.config.max_queued,
        oldest_queued_age_s=oldest,
        dlq_depth=engine.dlq_counts.get(name, 0),
        mean_scan_duration_s=mean,
        eta_basis=(
            f"mean of the last {len(pool.durations_s)} completed scans"
            if mean is not None
            else "default duration (no completed scan yet)"
        ),
        scanners=scanner_views(engine, name),
        waiting_reason=engine.pool_waiting_reason(name),
        window=current,
        next_window=nxt,
    )


def scanner_state(s: ScannerSlots) -> str:
    """One word for a scanner: an operator's decision first (``draining``, ``disabled``),
    then health: ``probing`` until its first probe answers, ``down``, ``export-only``
    (the licence forbids the scan API) or ``up``."""
    if s.draining or s.removed:
        return "draining"
    if not s.enabled:
        return "disabled"
    if not s.reachable:
        return "probing" if s.message == _NOT_PROBED and s.version is None else "down"
    return "up" if s.scan_api else "export-only"
