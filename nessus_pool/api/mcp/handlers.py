"""Tool bodies: decode nothing, decide nothing, call the service and shape its answer the way
the seed server's users expect (``scanner_pool``, ``estimated_wait_minutes``, JSON-NL)."""

from __future__ import annotations

from typing import Any

import msgspec

from nessus_pool.api.mcp import schemas as s
from nessus_pool.api.mcp.tools import ToolContext, ToolOutput, ToolSpec
from nessus_pool.errors import NotFoundError, ValidationError
from nessus_pool.models import ScanType
from nessus_pool.results.query import (
    MAX_PAGE_SIZE,
    FindingsPage,
    parse_query,
    query_findings,
    to_jsonl,
)
from nessus_pool.service import Service, SubmitRequest, TaskView

MCP_MAX_PAGE_SIZE = min(100, MAX_PAGE_SIZE)
TERMINAL = frozenset({"completed", "failed", "canceled", "timed_out"})


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _scanner_url(svc: Service, scanner: str | None) -> str | None:
    if scanner is None:
        return None
    return next((v.url for v in svc.scanner_views() if v.id == scanner), None)


def _blank(value: str | None) -> str | None:
    """The seed defaulted optional strings to ""; treat that as not given."""
    return value or None


async def _submit(svc: Service, a: s.UntrustedScanArgs, scan_type: ScanType) -> s.SubmitOut:
    extra: dict[str, Any] = {}
    if isinstance(a, s.AuthenticatedScanArgs):
        extra = {
            "credential": _blank(a.credential),
            "ssh_username": a.ssh_username,
            "ssh_password": a.ssh_password,
            "elevate_privileges_with": a.elevate_privileges_with,
            "escalation_account": _blank(a.escalation_account),
            "escalation_password": _blank(a.escalation_password),
        }
    req = SubmitRequest(
        targets=a.targets,
        name=_blank(a.name),
        description=a.description,
        pool=_blank(a.scanner_pool),
        scanner=_blank(a.scanner_instance),
        scan_type=scan_type,
        priority=a.priority,
        idempotency_key=a.idempotency_key,
        **extra,
    )
    r = await svc.submit(req)
    where = f"queue position {r.queue_position}" if r.queue_position else r.status
    return s.SubmitOut(
        task_id=r.task_id,
        status=r.status,
        scan_type=scan_type.value,
        scanner_pool=r.pool,
        scanner_instance=r.scanner,
        scanner_url=_scanner_url(svc, r.scanner),
        queue_position=r.queue_position,
        estimated_wait_minutes=_minutes(r.estimated_wait_s),
        eta_basis=r.eta_basis,
        duplicate=r.duplicate,
        message=(
            ("Existing task returned (same idempotency_key). " if r.duplicate else "")
            + f"Scan accepted ({where}). Next: wait_for_scan(task_id={r.task_id!r}) or "
            "get_scan_status."
        ),
    )


async def run_untrusted_scan(svc: Service, a: s.UntrustedScanArgs, ctx: ToolContext) -> Any:
    return await _submit(svc, a, ScanType.UNTRUSTED)


async def run_authenticated_scan(svc: Service, a: s.AuthenticatedScanArgs, ctx: ToolContext) -> Any:
    return await _submit(svc, a, ScanType(a.scan_type))


def _next_step(v: TaskView) -> str:
    tid = v.task_id
    if v.status == "queued":
        return f"Queued; wait_for_scan(task_id={tid!r}) returns when it ends."
    if v.status not in TERMINAL:
        return f"In progress; wait_for_scan(task_id={tid!r}) returns when it ends."
    if v.export_available:
        return f"Read findings with get_scan_results(task_id={tid!r}, page=1)."
    if v.status == "canceled":
        return "Canceled; submit a new scan if needed."
    return "No results: see error_message and troubleshooting; fix the cause and resubmit."


def status_out(v: TaskView, wait_timed_out: bool | None = None) -> s.StatusOut:
    res = v.results or {}
    summary = res.get("summary")
    validation = res.get("validation") or {}
    results_summary = None
    if summary is not None:
        results_summary = {
            **summary,
            "hosts_total": res.get("hosts_total", 0),
            "hosts_by_authentication_status": validation.get("hosts_by_status", {}),
        }
    return s.StatusOut(
        task_id=v.task_id,
        name=v.name,
        status=v.status,
        scan_type=v.scan_type,
        scanner_pool=v.pool,
        scanner_instance=v.scanner,
        targets=v.targets,
        credential=v.credential,
        progress=v.progress_pct,
        queue_position=v.queue_position,
        estimated_wait_minutes=_minutes(v.estimated_wait_s),
        eta_basis=v.eta_basis,
        attempt=v.attempt,
        nessus_scan_id=v.remote_scan_id,
        created_at_ms=v.created_at_ms,
        started_at_ms=v.started_at_ms,
        finished_at_ms=v.finished_at_ms,
        error_message=v.error,
        reason=v.reason,
        dead_letter=v.dead_letter,
        authentication_status=v.authentication_status,
        validation_warnings=list(validation.get("warnings", [])),
        results_summary=results_summary,
        troubleshooting=list(validation.get("troubleshooting", [])),
        results_available=v.export_available,
        next_step=_next_step(v),
        wait_timed_out=wait_timed_out,
    )


async def get_scan_status(svc: Service, a: s.TaskArgs, ctx: ToolContext) -> Any:
    return status_out(await svc.get_task(a.task_id))


async def cancel_scan(svc: Service, a: s.TaskArgs, ctx: ToolContext) -> Any:
    return status_out(await svc.cancel(a.task_id))


async def wait_for_scan(svc: Service, a: s.WaitArgs, ctx: ToolContext) -> Any:
    progress = ctx.progress

    async def on_progress(v: TaskView) -> None:
        if progress is not None:
            pct = float(v.progress_pct or 0)
            await progress(pct, 100.0, f"{v.status} {pct:.0f}%")

    first = await svc.get_task(a.task_id, with_results=False)
    if first.status not in TERMINAL:
        await on_progress(first)
    v = await svc.wait_for(a.task_id, a.timeout_s, on_progress)
    return status_out(v, wait_timed_out=v.status not in TERMINAL)


def _filters(f: s.Filters | None) -> dict[str, Any]:
    if f is None:
        return {}
    raw = {k: v for k, v in msgspec.structs.asdict(f).items() if v is not None}
    if "severity" in raw:
        raw["severities"] = [*raw.get("severities", []), raw.pop("severity")]
    if "cvss_score" in raw:
        score = raw.pop("cvss_score")
        text = str(score).strip().lstrip(">=").strip()
        try:
            raw["min_cvss3"] = float(text)
        except ValueError:
            raise ValidationError(
                'cvss_score must be a number or ">N", e.g. ">7.0"', field="filters.cvss_score"
            ) from None
    return raw


async def get_scan_results(svc: Service, a: s.ResultsArgs, ctx: ToolContext) -> Any:
    profile = "custom" if a.custom_fields is not None else a.schema_profile
    raw = {
        **_filters(a.filters),
        "page": a.page,
        "page_size": min(a.page_size, MCP_MAX_PAGE_SIZE),
        "profile": profile,
    }
    if a.custom_fields is not None:
        raw["fields"] = a.custom_fields
    query = parse_query(raw)
    view = await svc.get_task(a.task_id, with_results=False)
    page: FindingsPage = query_findings(await svc.findings(a.task_id), query)
    metadata = {
        "name": view.name,
        "status": view.status,
        "scan_type": view.scan_type,
        "scanner_pool": view.pool,
        "targets": view.targets,
        "authentication_status": view.authentication_status,
        "filters": {k: v for k, v in raw.items() if k not in ("page", "page_size", "profile")},
    }
    structured = s.ResultsOut(task_id=a.task_id, **msgspec.structs.asdict(page))
    return ToolOutput(structured, to_jsonl(page, task_id=a.task_id, metadata=metadata))


async def compare_scans(svc: Service, a: s.CompareArgs, ctx: ToolContext) -> Any:
    return msgspec.convert(await svc.compare(a.task_id, a.base_task_id), s.CompareOut)


async def list_tasks(svc: Service, a: s.ListTasksArgs, ctx: ToolContext) -> Any:
    status = a.status_filter
    if status:  # the seed called it "timeout"
        status = ",".join("timed_out" if x.strip() == "timeout" else x for x in status.split(","))
    page = await svc.list_tasks(
        status=status,
        pool=_blank(a.scanner_pool),
        target=_blank(a.target_filter),
        limit=a.limit,
        cursor=_blank(a.cursor),
    )
    tasks = [
        s.TaskBrief(
            task_id=v.task_id,
            name=v.name,
            status=v.status,
            scan_type=v.scan_type,
            scanner_pool=v.pool,
            scanner_instance=v.scanner,
            targets=v.targets,
            progress=v.progress_pct,
            queue_position=v.queue_position,
            authentication_status=v.authentication_status,
            created_at_ms=v.created_at_ms,
            finished_at_ms=v.finished_at_ms,
        )
        for v in page.tasks
    ]
    return s.TaskListOut(tasks=tasks, total=len(tasks), next_cursor=page.next_cursor)


def _pool_names(svc: Service) -> list[str]:
    return list(svc.engine.pools)


def _pool_or_default(svc: Service, pool: str | None) -> str:
    if pool:
        return pool
    names = _pool_names(svc)
    if not names:
        raise NotFoundError("no pool is configured")
    return names[0]


async def list_scanners(svc: Service, a: s.PoolArgs, ctx: ToolContext) -> Any:
    views = svc.scanner_views(_blank(a.scanner_pool))
    return s.ScannersOut(scanners=views, total=len(views), pools=_pool_names(svc))


async def list_pools(svc: Service, a: s.NoArgs, ctx: ToolContext) -> Any:
    views = await svc.pool_views()
    return s.PoolsOut(
        pools=[v.name for v in views],
        default_pool=views[0].name if views else None,
        details=[
            s.PoolBrief(
                name=v.name,
                scanners=len(v.scanners),
                capacity=v.capacity,
                active=v.active,
                queue_depth=v.queue_depth,
            )
            for v in views
        ],
    )


async def get_pool_status(svc: Service, a: s.PoolArgs, ctx: ToolContext) -> Any:
    v = await svc.pool_view(_pool_or_default(svc, a.scanner_pool))
    return s.PoolStatusOut(
        pool=v.name,
        total_scanners=len(v.scanners),
        total_capacity=v.capacity,
        total_active=v.active,
        available_capacity=max(0, v.capacity - v.active),
        utilization_pct=round(v.utilisation * 100, 1),
        queue_depth=v.queue_depth,
        max_queued=v.max_queued,
        oldest_queued_age_s=v.oldest_queued_age_s,
        dlq_depth=v.dlq_depth,
        mean_scan_duration_s=v.mean_scan_duration_s,
        eta_basis=v.eta_basis,
        scanners=v.scanners,
    )


async def get_queue_status(svc: Service, a: s.PoolArgs, ctx: ToolContext) -> Any:
    v = await svc.pool_view(_pool_or_default(svc, a.scanner_pool))
    queued = await svc.list_tasks(status="queued", pool=v.name, limit=500)
    ahead = sorted(queued.tasks, key=lambda t: t.queue_position or 1 << 30)[:10]
    return s.QueueOut(
        pool=v.name,
        queue_depth=v.queue_depth,
        max_queued=v.max_queued,
        oldest_queued_age_s=v.oldest_queued_age_s,
        dlq_size=v.dlq_depth,
        next_tasks=[
            s.QueuedTask(
                task_id=t.task_id,
                name=t.name,
                queue_position=t.queue_position,
                estimated_wait_minutes=_minutes(t.estimated_wait_s),
                priority=t.priority,
                created_at_ms=t.created_at_ms,
            )
            for t in ahead
        ],
    )


_SUBMIT_NOTE = (
    " Returns at once with task_id, queue_position and estimated_wait_minutes; the scan runs "
    "in the background on a scanner of the pool."
)

TOOLS: list[ToolSpec] = [
    ToolSpec("run_untrusted_scan", "Run network scan", "Start a network-only (unauthenticated) "
             "Nessus vulnerability scan of the targets." + _SUBMIT_NOTE,
             s.UntrustedScanArgs, s.SubmitOut, run_untrusted_scan,
             read_only=False, open_world=True),
    ToolSpec("run_authenticated_scan", "Run authenticated scan", "Start an SSH-authenticated "
             "Nessus scan (deeper: installed packages, configuration). Prefer credential (a "
             "named credential set on the server); inline ssh_username/ssh_password also work "
             "unless disabled. Secrets are never echoed." + _SUBMIT_NOTE,
             s.AuthenticatedScanArgs, s.SubmitOut, run_authenticated_scan,
             read_only=False, open_world=True),
    ToolSpec("get_scan_status", "Scan status", "Status of a scan task: queue position and ETA "
             "while queued, progress while running; afterwards authentication status, "
             "validation warnings, results summary and troubleshooting.",
             s.TaskArgs, s.StatusOut, get_scan_status, read_only=True, idempotent=True),
    ToolSpec("wait_for_scan", "Wait for scan", "Wait until the scan ends or timeout_s passes "
             "(at most 600 s), sending progress notifications when the request has a "
             "progressToken. Returns the same fields as get_scan_status plus wait_timed_out.",
             s.WaitArgs, s.StatusOut, wait_for_scan, read_only=True, idempotent=True),
    ToolSpec("get_scan_results", "Scan findings", "One page of a finished scan's findings as "
             "JSON-NL (schema line, metadata line, one line per finding, pagination line), "
             "filtered and sorted (default: most severe first). Page through with page; never "
             "the whole export at once.",
             s.ResultsArgs, s.ResultsOut, get_scan_results, read_only=True, idempotent=True),
    ToolSpec("compare_scans", "Compare scans", "What changed between two scans of the same "
             "targets: new, fixed and severity-changed findings (worst first) with counts.",
             s.CompareArgs, s.CompareOut, compare_scans, read_only=True, idempotent=True),
    ToolSpec("cancel_scan", "Cancel scan", "Cancel a queued or running scan (stops it on the "
             "scanner). A scan that already ended cannot be canceled.",
             s.TaskArgs, s.StatusOut, cancel_scan, read_only=False, destructive=True,
             idempotent=True, open_world=True),
    ToolSpec("list_tasks", "List scans", "Recent scan tasks, newest first, filtered by status, "
             "pool or target (CIDR-aware).",
             s.ListTasksArgs, s.TaskListOut, list_tasks, read_only=True, idempotent=True),
    ToolSpec("list_scanners", "List scanners", "Scanners with capacity, load, reachability and "
             "circuit-breaker state, optionally for one pool.",
             s.PoolArgs, s.ScannersOut, list_scanners, read_only=True, idempotent=True),
    ToolSpec("list_pools", "List pools", "Scanner pools and the default pool.",
             s.NoArgs, s.PoolsOut, list_pools, read_only=True, idempotent=True),
    ToolSpec("get_pool_status", "Pool status", "Capacity, utilisation, queue depth and "
             "per-scanner load of one pool.",
             s.PoolArgs, s.PoolStatusOut, get_pool_status, read_only=True, idempotent=True),
    ToolSpec("get_queue_status", "Queue status", "Queue depth, oldest wait, dead letters and "
             "the next tasks in line for one pool.",
             s.PoolArgs, s.QueueOut, get_queue_status, read_only=True, idempotent=True),
]  # fmt: skip
