"""Tool bodies: decode nothing, call the service and shape its answer the way the seed
server's users expect (:mod:`.compat`: its keys, types and statuses, ours beside them)."""

from __future__ import annotations

import os
from typing import Any

from nessus_pool.api.mcp import compat
from nessus_pool.api.mcp import schemas as s
from nessus_pool.api.mcp.compare import compare_result
from nessus_pool.api.mcp.events import TaskLog
from nessus_pool.api.mcp.findings import results_text
from nessus_pool.api.mcp.schedules import SCHEDULE_TOOLS
from nessus_pool.api.mcp.tasks import status_message
from nessus_pool.api.mcp.tools import ToolContext, ToolSpec
from nessus_pool.errors import NotFoundError, ValidationError
from nessus_pool.models import TERMINAL_STATUSES, Escalation, ScanType, status_values
from nessus_pool.service import ScannerView, Service, SubmitRequest, TaskView

TERMINAL = frozenset(status_values(TERMINAL_STATUSES))
_CURSOR_MAX_DIGITS = 18


def _blank(value: str | None) -> str | None:
    """The seed defaulted optional strings to ""; treat that as not given."""
    return value or None


def _likely_scanner(svc: Service, pool: str, pinned: str | None) -> ScannerView | None:
    """The pinned scanner, else the reachable one with the most free slots right now."""
    views = svc.scanner_views(pool)
    if pinned:
        return next((v for v in views if v.id == pinned), None)
    usable = [
        v
        for v in views
        if v.enabled and v.reachable and v.scan_api and not v.draining
        and v.circuit_state != "open"
    ]  # fmt: skip
    return max(usable, key=lambda v: (v.capacity - v.active_scans, v.id), default=None)


def _check_escalation(a: s.AuthenticatedScanArgs) -> None:
    """The seed refuses a privileged scan with inline credentials and no escalation method;
    a named credential set carries its own."""
    if (
        a.scan_type == "authenticated_privileged"
        and not a.credential
        and a.elevate_privileges_with in (None, Escalation.NOTHING)
    ):
        methods = ", ".join(e.value for e in Escalation if e is not Escalation.NOTHING)
        raise ValidationError(
            f"authenticated_privileged scan requires elevate_privileges_with ({methods})",
            field="elevate_privileges_with",
        )


async def _submit(svc: Service, a: s.UntrustedScanArgs, scan_type: ScanType) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if isinstance(a, s.AuthenticatedScanArgs):
        _check_escalation(a)
        extra = {
            "credential": _blank(a.credential),
            "ssh_username": a.ssh_username,
            "ssh_password": a.ssh_password,
            "elevate_privileges_with": a.elevate_privileges_with,
            "escalation_account": _blank(a.escalation_account),
            "escalation_password": _blank(a.escalation_password),
        }
    pinned = _blank(a.scanner_instance)
    req = SubmitRequest(
        targets=a.targets,
        name=_blank(a.name),
        description=a.description,
        pool=_blank(a.scanner_pool),
        scanner=pinned,
        scan_type=scan_type,
        priority=a.priority,
        idempotency_key=a.idempotency_key,
        policy=_blank(a.policy),
        **extra,
    )
    r = await svc.submit(req)
    where = f"queue position {r.queue_position}" if r.queue_position else r.status
    message = (
        "Returning existing task (idempotency key matched). " if r.duplicate else ""
    ) + f"Scan enqueued ({where}). Next: wait_for_scan(task_id={r.task_id!r}) returns when it ends."
    return compat.submit_result(
        r,
        scan_type=scan_type.value,
        scanner=_likely_scanner(svc, r.pool, r.scanner),
        pinned=pinned is not None,
        message=message,
    )


async def run_untrusted_scan(svc: Service, a: s.UntrustedScanArgs, ctx: ToolContext) -> Any:
    return await _submit(svc, a, ScanType.UNTRUSTED)


async def run_authenticated_scan(svc: Service, a: s.AuthenticatedScanArgs, ctx: ToolContext) -> Any:
    return await _submit(svc, a, ScanType(a.scan_type))


#: the page next_step suggests: a minimal finding costs about 400 bytes of tool result (the
#: JSON-NL text is sent twice, as content and as structuredContent), so 10 stay under 6 KB
LIST_PAGE_SIZE = 10


def next_step(v: TaskView) -> str:
    """The cheapest useful next call."""
    tid = v.task_id
    if v.status == "paused":
        return (
            f"Paused ({v.paused_by}, {v.paused_for_s} s); resume_scan(task_id={tid!r}) resumes it."
        )
    if v.status not in TERMINAL:
        return f"wait_for_scan(task_id={tid!r}) returns when it ends (no need to poll)."
    if v.export_available and v.authentication_status == "failed":
        # its findings are only what an unauthenticated scan sees: the credential comes first
        return (
            "Authentication failed: fix the credential before reading findings. "
            "troubleshooting above says the likely cause and what to check; "
            f"the troubleshoot_authentication prompt (task_id={tid!r}) gives each host's "
            "verdict. Then run_authenticated_scan again."
        )
    if v.export_available:
        summary = (v.results or {}).get("summary") or {}
        vulns = summary.get("vulnerabilities_total")
        if v.authentication_status == "partial":
            return (
                "Authentication partial (some hosts or protocols refused the credential): "
                "troubleshooting_details names them; get_scan_results(task_id="
                f'{tid!r}, schema_profile="minimal") lists the findings found.'
            )
        if vulns == 0:
            return (
                "No findings above informational. To list those: get_scan_results(task_id="
                f'{tid!r}, schema_profile="minimal", filters={{"min_severity": "info"}}).'
            )
        if vulns is None:
            count = f"the worst {LIST_PAGE_SIZE} findings"
        elif vulns > LIST_PAGE_SIZE:
            count = f"the worst {LIST_PAGE_SIZE} of the {vulns} findings"
        else:
            count = f"the {vulns} findings"
        return (
            f'get_scan_results(task_id={tid!r}, schema_profile="minimal", '
            f"page_size={LIST_PAGE_SIZE}) lists {count} above informational (under 6 KB); "
            'then schema_profile="brief" with filters (e.g. {"plugin_id": ...}) for the '
            "ones that matter."
        )
    if v.status == "canceled":
        return "Canceled; submit a new scan if needed."
    return "No results: read error_message and troubleshooting, fix the cause, resubmit."


async def _export_bytes(svc: Service, v: TaskView) -> int | None:
    if not v.export_available:
        return None
    if v.export_bytes is not None:
        # recorded at the download: no task lookup and stat() per call (2.5% of a call's
        # CPU), and every daemon of a cluster gives the same size, not only the one that
        # keeps the file
        return v.export_bytes
    try:
        path = await svc.export_path(v.task_id)
        # one stat() of a file under our own storage directory: microseconds, where a
        # thread hop cost ~30 us of loop time per get_scan_status (issue 18)
        return os.path.getsize(path)  # noqa: ASYNC240 (see above)
    except (NotFoundError, OSError):
        return None


async def status_out(
    svc: Service, v: TaskView, wait_timed_out: bool | None = None
) -> dict[str, Any]:
    out = compat.status_result(v, next_step=next_step(v), export_bytes=await _export_bytes(svc, v))
    if wait_timed_out is not None:
        out["wait_timed_out"] = wait_timed_out
    if v.stale is True:  # served from memory while the database is unavailable
        out["stale"] = True
        out["as_of"] = compat.iso(v.as_of_ms if isinstance(v.as_of_ms, int) else None)
    return out


async def get_scan_status(svc: Service, a: s.TaskArgs, ctx: ToolContext) -> Any:
    return await status_out(svc, await svc.get_task(a.task_id))


def kept_status(svc: Service, a: s.TaskArgs) -> tuple[str, object] | None:
    """A status reply is kept while the service answers for the task from an equal entry
    (:meth:`Reads.kept_entry`: a finished task's cache entry, a copy of a running one).
    Agents poll a lot; server CPU per call in bench/mcp.py at C=10: a finished task 119
    -> 84 us (01f3c6e), a running one 70 -> 57 us (``--task running``, a faster VM)."""
    entry = svc.kept_entry(a.task_id)
    return None if entry is None else (a.task_id, entry)


async def cancel_scan(svc: Service, a: s.TaskArgs, ctx: ToolContext) -> Any:
    return await status_out(svc, await svc.cancel(a.task_id))


async def pause_scan(svc: Service, a: s.TaskArgs, ctx: ToolContext) -> Any:
    return await status_out(svc, await svc.pause(a.task_id))


async def resume_scan(svc: Service, a: s.TaskArgs, ctx: ToolContext) -> Any:
    return await status_out(svc, await svc.resume(a.task_id))


async def wait_for_scan(svc: Service, a: s.WaitArgs, ctx: ToolContext) -> Any:
    progress = ctx.progress
    log = TaskLog(ctx.log, ctx.log_level) if ctx.log and ctx.log_level else None

    async def on_progress(v: TaskView) -> None:
        if progress is not None:
            pct = float(v.progress_pct or 0)
            await progress(pct, 100.0, f"{v.status} {pct:.0f}%")
        if log is not None:
            await log(v, status_message(v, svc.engine.clock.now_ms()))

    first = await svc.get_task(a.task_id, with_results=False)
    if first.status not in TERMINAL:
        await on_progress(first)
    v = await svc.wait_for(a.task_id, a.timeout_s, on_progress)
    if log is not None and v.status in TERMINAL:
        await log(v, status_message(v, svc.engine.clock.now_ms()))
    return await status_out(svc, v, wait_timed_out=v.status not in TERMINAL)


async def get_scan_results(svc: Service, a: s.ResultsArgs, ctx: ToolContext) -> Any:
    return await results_text(svc, a)


async def compare_scans(svc: Service, a: s.CompareArgs, ctx: ToolContext) -> Any:
    return await compare_result(svc, a)


def check_cursor(cursor: str | None, field: str = "cursor") -> str | None:
    """A cursor we could have handed out: ASCII digits, bounded (``"²".isdigit()`` is True
    and 10**23 overflows SQLite's integer)."""
    if not cursor:
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= _CURSOR_MAX_DIGITS):
        raise ValidationError(
            f"{field} is not valid: pass next_cursor of a previous page", field=field
        )
    return cursor


async def list_tasks(svc: Service, a: s.ListTasksArgs, ctx: ToolContext) -> Any:
    status = a.status_filter
    if status:  # the seed's words: timeout; queued includes our dispatching
        words = {
            "timeout": "timed_out",
            "queued": "queued,dispatching",
            "running": "running,exporting",
        }
        status = ",".join(words.get(x.strip(), x.strip()) for x in status.split(","))
    page = await svc.list_tasks(
        status=status,
        pool=_blank(a.scanner_pool),
        target=_blank(a.target_filter),
        limit=a.limit,
        cursor=check_cursor(a.cursor),
    )
    tasks = [compat.task_entry(v) for v in page.tasks]
    return {"tasks": tasks, "total": len(tasks), "next_cursor": page.next_cursor}


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
    return {
        "scanners": [compat.scanner_entry(v) for v in views],
        "total": len(views),
        "pools": _pool_names(svc),
    }


async def list_policies(svc: Service, a: s.PoolArgs, ctx: ToolContext) -> Any:
    return {"pools": svc.policies(_blank(a.scanner_pool))}


async def list_pools(svc: Service, a: s.NoArgs, ctx: ToolContext) -> Any:
    names = _pool_names(svc)
    return {"pools": names, "default_pool": names[0] if names else None}


async def get_pool_status(svc: Service, a: s.PoolArgs, ctx: ToolContext) -> Any:
    return compat.pool_status(await svc.pool_view(_pool_or_default(svc, a.scanner_pool)))


async def get_queue_status(svc: Service, a: s.PoolArgs, ctx: ToolContext) -> Any:
    v = await svc.pool_view(_pool_or_default(svc, a.scanner_pool))
    queued = await svc.list_tasks(status="queued", pool=v.name, limit=500)
    ahead = sorted(queued.tasks, key=lambda t: t.queue_position or 1 << 30)[:10]
    return compat.queue_status(v, ahead, svc.engine.clock.now_ms())


_O = s.open_object
_K = s.OUTPUT_KEYS
_SUBMIT = " Returns task_id and queue position at once."

TOOLS: list[ToolSpec] = [
    ToolSpec("run_untrusted_scan", "Run network scan",
             "Start an unauthenticated Nessus scan." + _SUBMIT,
             s.UntrustedScanArgs, _O(_K["submit"]), run_untrusted_scan,
             read_only=False, open_world=True, task_support="optional"),
    ToolSpec("run_authenticated_scan", "Run authenticated scan",
             "Start an SSH-authenticated Nessus scan. "
             "Prefer credential (a server-side set) over inline ssh_*." + _SUBMIT,
             s.AuthenticatedScanArgs, _O(_K["submit"]), run_authenticated_scan,
             read_only=False, open_world=True, task_support="optional"),
    ToolSpec("get_scan_status", "Scan status",
             "Status and progress; when done: authentication_status, results_summary, "
             "troubleshooting, next_step.",
             s.TaskArgs, _O(_K["status"]), get_scan_status, read_only=True, idempotent=True,
             memo=kept_status),
    ToolSpec("wait_for_scan", "Wait for scan",
             "Wait until the scan ends or timeout_s passes; "
             "returns get_scan_status + wait_timed_out.",
             s.WaitArgs, _O(_K["wait"]), wait_for_scan, read_only=True, idempotent=True),
    ToolSpec("get_scan_results", "Scan findings",
             "Findings as JSON-NL, worst first. Without a severity filter, "
             "informational ones are left out (counted).",
             s.ResultsArgs, s.JSONL_OUTPUT, get_scan_results, read_only=True, idempotent=True),
    ToolSpec("compare_scans", "Compare scans",
             "New, fixed and changed findings between two scans.",
             s.CompareArgs, _O(_K["compare"]), compare_scans, read_only=True, idempotent=True),
    ToolSpec("cancel_scan", "Cancel scan", "Cancel a queued or running scan.",
             s.TaskArgs, _O(_K["status"]), cancel_scan, read_only=False, destructive=True,
             idempotent=True, open_world=True),
    ToolSpec("pause_scan", "Pause scan", "Pause a running scan; it keeps its slot.",
             s.TaskArgs, _O(_K["status"]), pause_scan, read_only=False, idempotent=True,
             open_world=True),
    ToolSpec("resume_scan", "Resume scan", "Resume a paused scan.",
             s.TaskArgs, _O(_K["status"]), resume_scan, read_only=False, idempotent=True,
             open_world=True),
    ToolSpec("list_tasks", "List scans",
             "Recent scans, newest first; filter by status, pool or target (CIDR-aware).",
             s.ListTasksArgs, _O(_K["tasks"]), list_tasks, read_only=True, idempotent=True),
    ToolSpec("list_scanners", "List scanners", "Scanners with capacity, load and health.",
             s.PoolArgs, _O(_K["scanners"]), list_scanners, read_only=True, idempotent=True),
    ToolSpec("list_policies", "List policies",
             "Saved policies per scanner.",
             s.PoolArgs, _O(_K["policies"]), list_policies, read_only=True, idempotent=True),
    ToolSpec("list_pools", "List pools", "Scanner pools and the default pool.",
             s.NoArgs, _O(_K["pools"]), list_pools, read_only=True, idempotent=True),
    ToolSpec("get_pool_status", "Pool status", "Capacity, utilization and queue of one pool.",
             s.PoolArgs, _O(_K["pool"]), get_pool_status, read_only=True, idempotent=True),
    ToolSpec("get_queue_status", "Queue status",
             "Queue depth, dead letters and next tasks of one pool.",
             s.PoolArgs, _O(_K["queue"]), get_queue_status, read_only=True, idempotent=True),
    *SCHEDULE_TOOLS,
]  # fmt: skip
