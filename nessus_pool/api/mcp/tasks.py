"""MCP Tasks over scan tasks: the MCP task id IS the scan's task_id, so a task outlives the
session and the daemon (``tasks/get`` after a restart reads the store through the service).

Two wire forms of one model:

- 2025-11-25 (experimental tasks): ``tools/call`` with ``params.task`` answers
  ``{"task": Task}``; ``tasks/get``, ``tasks/result`` (blocks until the scan ends),
  ``tasks/list``, ``tasks/cancel``; ``ttl`` / ``pollInterval``; a failed scan is ``failed``.
- 2026-07-28 (``io.modelcontextprotocol/tasks`` extension): server-directed; a scan tool
  called by a client that declares the extension answers ``resultType: "task"``; ``tasks/get``
  inlines the final ``result``; ``tasks/update`` and ``tasks/cancel`` acknowledge with an empty
  result; ``ttlMs`` / ``pollIntervalMs``; a failed scan is ``completed`` with an ``isError``
  result (``failed`` is only for JSON-RPC errors there), no ``tasks/list``.

The final result is the ``get_scan_status`` CallToolResult at completion. Retention is
housekeeping's: a finished scan is kept ``finished-ttl-s`` after it ends, so the ``ttl``
(from creation) is the scan's run time so far plus that.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import msgspec

from nessus_pool.api.mcp import compat
from nessus_pool.errors import ConflictError, NotFoundError, ValidationError
from nessus_pool.logs import redact

if TYPE_CHECKING:
    from nessus_pool.api.mcp.tools import Toolbox, ToolContext
    from nessus_pool.service import Service, TaskView

TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
RELATED_TASK: Final = "io.modelcontextprotocol/related-task"
#: the tools whose call may become a task: the two that start a scan
TASK_TOOLS: Final = frozenset({"run_untrusted_scan", "run_authenticated_scan"})
TASKS_PAGE_SIZE = 50
#: suggested polling interval: the pool's own poll interval, within these bounds
POLL_MIN_MS: Final = 1_000
POLL_MAX_MS: Final = 60_000
#: longest single wait inside tasks/result before re-reading the task (no busy loop)
RESULT_WAIT_S: Final = 300.0
_TERMINAL_FAILED: Final = frozenset({"failed", "timed_out"})
_dec = msgspec.json.Decoder()


class TaskLookupError(Exception):
    """A taskId that names no task we keep, or a bad cursor (JSON-RPC -32602)."""

    def __init__(self, message: str, field: str = "taskId") -> None:
        super().__init__(message)
        self.field = field


def mcp_status(v: TaskView) -> str:
    """working / completed / failed / cancelled (2025-11-25 words). A scan that ran but
    could not log in is ``completed`` (its report says so), as ``get_scan_status`` has it."""
    status = compat.seed_status(v)
    if v.status == "canceled":
        return "cancelled"
    if status == "completed":
        return "completed"
    if v.status in _TERMINAL_FAILED:
        return "failed"
    return "working"


def _minutes(seconds: float) -> str:
    m = max(1, math.ceil(seconds / 60))
    return f"about {m} minute{'s' if m != 1 else ''}"


def status_message(v: TaskView, now_ms: int) -> str:
    """One line for a person or a model: queue position, progress and ETA while it runs, the
    outcome when it ends. Built from our own fields only (no arguments, no credentials)."""
    where = f"pool {v.pool}"
    if v.status == "queued":
        text = f"queued in {where}, position {v.queue_position or '?'}"
        if v.estimated_wait_s is not None:
            text += f"; starts in {_minutes(v.estimated_wait_s)} ({v.eta_basis})"
        return text
    if v.status == "dispatching":
        return f"starting on scanner {v.scanner or '?'} ({where})"
    if v.status == "running":
        pct = v.progress_pct or 0
        text = f"running on scanner {v.scanner or '?'}, {pct}% done"
        if 0 < pct < 100 and v.started_at_ms is not None:
            left_s = (now_ms - v.started_at_ms) / 1000 * (100 - pct) / pct
            text += f", {_minutes(left_s)} left"
        return text
    if v.status == "paused":
        return f"paused on scanner {v.scanner or '?'} by {v.paused_by} for {v.paused_for_s} s"
    if v.status == "exporting":
        return f"scan done on {v.scanner or '?'}; downloading and parsing its results"
    if v.status == "cancelling":
        return "cancellation requested; stopping the scan on its scanner"
    if v.status == "canceled":
        return "canceled"
    if mcp_status(v) == "completed":
        summary = (v.results or {}).get("summary") or {}
        vulns = summary.get("vulnerabilities_total")
        found = f"{vulns} findings above informational" if vulns is not None else "finished"
        auth = f"; authentication {v.authentication_status}" if v.authentication_status else ""
        return f"completed: {found}{auth}"
    # a scanner's error text passes the same redaction as our logs (config and held secrets)
    return f"{v.status.replace('_', ' ')}: {redact((v.error or v.reason or 'no detail')[:300])}"


class TaskModel:
    """Builds MCP Task objects from scan views and serves the task methods via the service
    and the toolbox (``get_scan_status`` makes the final result)."""

    def __init__(self, svc: Service, toolbox: Toolbox) -> None:
        self.svc = svc
        self.toolbox = toolbox

    # --- shapes -------------------------------------------------------------------------------

    def _ttl_ms(self, v: TaskView, now_ms: int) -> int:
        keep_ms = int(self.svc.config.housekeeping.finished_ttl_s * 1000)
        end_ms = v.finished_at_ms if v.finished_at_ms is not None else now_ms
        return max(0, end_ms - v.created_at_ms) + keep_ms

    def _poll_ms(self, v: TaskView) -> int:
        pool = self.svc.config.pool(v.pool)
        interval_s = pool.poll_interval_s if pool is not None else 10.0
        return min(POLL_MAX_MS, max(POLL_MIN_MS, int(interval_s * 1000)))

    def task(self, v: TaskView, modern: bool) -> dict[str, Any]:
        now_ms = self.svc.engine.clock.now_ms()
        status = mcp_status(v)
        if modern and status == "failed":
            status = "completed"  # a tool-level failure: the result says isError
        out: dict[str, Any] = {
            "taskId": v.task_id,
            "status": status,
            "statusMessage": status_message(v, now_ms),
            "createdAt": compat.iso(v.created_at_ms),
            "lastUpdatedAt": compat.iso(v.updated_at_ms),
        }
        ttl, poll = self._ttl_ms(v, now_ms), self._poll_ms(v)
        if modern:
            out["ttlMs"], out["pollIntervalMs"] = ttl, poll
        else:
            out["ttl"], out["pollInterval"] = ttl, poll
        return out

    async def view(self, task_id: Any) -> TaskView:
        """Raises TaskLookupError for a malformed or unknown id (never echoing it at length)."""
        if not isinstance(task_id, str):
            raise TaskLookupError("params.taskId must be a string")
        try:
            return await self.svc.get_task(task_id)
        except (NotFoundError, ValidationError):
            raise TaskLookupError(
                "Failed to retrieve task: task not found (or deleted by retention)"
            ) from None

    async def final_result(self, v: TaskView, ctx: ToolContext) -> dict[str, Any]:
        """What the scan's tool call would have returned synchronously at the end: the
        ``get_scan_status`` result, ``isError`` when the scan failed."""
        result = await self.toolbox.call("get_scan_status", {"task_id": v.task_id}, ctx)
        if mcp_status(v) == "failed":
            result["isError"] = True
        return result

    # --- methods ------------------------------------------------------------------------------

    def created(self, structured: Any) -> str:
        """The task_id in a submit tool's structuredContent."""
        data = _dec.decode(structured) if isinstance(structured, msgspec.Raw) else structured
        return str(data["task_id"])

    async def detailed(self, v: TaskView) -> dict[str, Any]:
        """A 2026-07-28 DetailedTask: the Task, with the final ``result`` once completed."""
        from nessus_pool.api.mcp.tools import ToolContext

        out = self.task(v, True)
        if out["status"] == "completed":
            out["result"] = await self.final_result(v, ToolContext(role="read"))
        return out

    async def get(self, task_id: Any, modern: bool) -> dict[str, Any]:
        v = await self.view(task_id)
        if not modern:
            return self.task(v, False)
        return {"resultType": "complete", **(await self.detailed(v))}

    async def list_page(self, cursor: Any) -> dict[str, Any]:
        if cursor is not None and not (
            isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) < 19
        ):
            raise TaskLookupError("params.cursor is not a cursor this server handed out", "cursor")
        page = await self.svc.list_tasks(page_size=TASKS_PAGE_SIZE, cursor=cursor)
        out: dict[str, Any] = {"tasks": [self.task(v, False) for v in page.tasks]}
        if page.next_cursor is not None:
            out["nextCursor"] = page.next_cursor
        return out

    async def cancel(self, task_id: Any, modern: bool) -> dict[str, Any]:
        """Cancels the scan. 2025-11-25 wants the task ``cancelled`` in the reply, so a
        dispatched scan is waited for (bounded) while the engine stops it on its scanner."""
        v = await self.view(task_id)
        try:
            v = await self.svc.cancel(v.task_id)
        except ConflictError:
            if modern:  # an acknowledgement; the task keeps its terminal status
                return {"resultType": "complete"}
            raise TaskLookupError(
                f"task {v.task_id} already ended ({mcp_status(v)}); it cannot be cancelled"
            ) from None
        if modern:
            return {"resultType": "complete"}
        if v.status == "cancelling":
            v = await self.svc.wait_for(v.task_id, 30.0)
        return self.task(v, False)

    async def wait_result(
        self, task_id: Any, ctx: ToolContext, on_change: Any = None
    ) -> dict[str, Any]:
        """2025-11-25 ``tasks/result``: blocks until the scan ends, then the final result
        with the related-task ``_meta``. ``on_change(view)`` is awaited on each change."""
        v = await self.view(task_id)
        waited = False
        while mcp_status(v) == "working":
            waited = True
            v = await self.svc.wait_for(v.task_id, RESULT_WAIT_S, on_change)
        if waited and on_change is not None:
            await on_change(v)  # the end, which wait_for does not report
        result = await self.final_result(v, ctx)
        result["_meta"] = {RELATED_TASK: {"taskId": v.task_id}}
        return result
