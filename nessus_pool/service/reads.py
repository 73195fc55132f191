"""Reading tasks: one task (with its results summary), pages of tasks, waiting for one to
end, its findings, its export file and the difference between two scans."""

from __future__ import annotations

import collections
import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from nessus_pool.engine import Engine
from nessus_pool.errors import ConflictError, NotFoundError, ValidationError
from nessus_pool.logs import release_task_secrets
from nessus_pool.models import Task, TaskStatus
from nessus_pool.results.parser import Finding
from nessus_pool.results.query import PROFILES, FindingsQuery, diff_findings, query_findings
from nessus_pool.service.ids import check_task_id
from nessus_pool.service.views import TaskPage, TaskView, task_view
from nessus_pool.store import TaskFilter

FINISHED_CACHE = 4096
MAX_PAGE_SIZE = 500
#: cursors are task sequence numbers: SQLite integers
_CURSOR = re.compile(r"[0-9]{1,19}")
_MAX_CURSOR = 2**63 - 1
_finding_dec = msgspec.msgpack.Decoder(Finding)
_json_dec = msgspec.json.Decoder()


class Reads:
    """Task reads, with a cache of finished tasks kept right by the engine's change hook."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: finished tasks with their results summary, most recently read last: status
        #: polling of finished scans (agents do a lot of it) never touches SQLite
        self._finished: collections.OrderedDict[str, tuple[Task, dict[str, Any] | None]] = (
            collections.OrderedDict()
        )
        engine.on_change.append(self._forget)

    def view(self, t: Task, results: dict[str, Any] | None = None) -> TaskView:
        return task_view(self.engine, t, results)

    def writable_now(self) -> None:
        """Raise StorageUnavailableError (503, Retry-After) while the database is away: a
        write would only queue behind the store's reconnect, unacknowledged."""
        self.engine.store.outage.check(write=True)

    def _marked_stale(self, view: TaskView) -> TaskView:
        """A view served from memory while the database is away says so, and since when."""
        outage = self.engine.store.outage
        if outage.down:
            view.stale = True
            view.as_of_ms = outage.last_ok_ms or outage.since_ms
        return view

    async def task(self, task_id: str) -> Task:
        """The task, live or stored; ``NotFoundError`` (field ``task_id``) if there is none."""
        check_task_id(task_id)
        t = self.engine.tasks.get(task_id)
        if t is not None:
            return t
        cached = self._finished.get(task_id)
        if cached is not None:
            self._finished.move_to_end(task_id)
            return cached[0]
        t = await self.engine.store.get_task(task_id)
        if t is None:
            raise NotFoundError(f"task {task_id!r} not found", field="task_id")
        return t

    def _forget(self, task_id: str) -> None:
        self._finished.pop(task_id, None)
        if task_id not in self.engine.tasks:  # it has ended
            release_task_secrets(task_id)

    async def get_task(self, task_id: str, *, with_results: bool = True) -> TaskView:
        t = await self.task(task_id)
        if not (with_results and t.status.is_terminal):
            return self._marked_stale(self.view(t))
        cached = self._finished.get(task_id)
        if cached is not None:
            return self._marked_stale(self.view(cached[0], cached[1]))
        results = None
        blob = await self.engine.store.get_results(task_id)
        if blob is not None:
            full = _json_dec.decode(blob)
            hosts = full.get("hosts", [])
            results = {
                "summary": full.get("summary"),
                "validation": full.get("validation"),
                "hosts": hosts[:50],
                "hosts_total": len(hosts),
            }
        if task_id not in self.engine.tasks:
            # a finished task changes only through the engine, which tells us (_forget)
            self._finished[task_id] = (t, results)
            if len(self._finished) > FINISHED_CACHE:
                self._finished.popitem(last=False)
        return self.view(t, results)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        pool: str | None = None,
        target: str | None = None,
        created_from_ms: int | None = None,
        created_to_ms: int | None = None,
        dead_letter: bool | None = None,
        page_size: int = 50,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first. ``limit`` is the older name of ``page_size``
        (MCP's ``list_tasks`` still says ``limit``)."""
        field = "page_size" if limit is None else "limit"
        limit = page_size if limit is None else limit
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValidationError(f"{field} must be 1..{MAX_PAGE_SIZE}", field=field)
        statuses = None
        if status:
            statuses = [s.strip() for s in status.split(",") if s.strip()]
            bad = [s for s in statuses if s not in TaskStatus.__members__.values()]
            if bad:
                raise ValidationError(
                    f"unknown status {bad[0]!r} (one of {', '.join(s.value for s in TaskStatus)})",
                    field="status",
                )
        before = _cursor(cursor)
        match = _target_matcher(target)
        out: list[Task] = []
        while len(out) < limit:
            batch = await self.engine.store.list_tasks(
                TaskFilter(
                    statuses=statuses,
                    pool=pool,
                    dead_letter=dead_letter,
                    created_from_ms=created_from_ms,
                    created_to_ms=created_to_ms,
                    before_seq=before,
                ),
                limit=limit if match is None else 500,
            )
            if not batch:
                break
            for t in batch:
                live = self.engine.tasks.get(t.task_id, t)
                if match is None or match(live):
                    out.append(live)
                    if len(out) == limit:
                        break
            before = batch[-1].seq if len(out) < limit else out[-1].seq
            if len(batch) < (limit if match is None else 500):
                break
        more = len(out) == limit
        return TaskPage(
            tasks=[self.view(t) for t in out],
            next_cursor=str(out[-1].seq) if more and out else None,
        )

    async def wait_for(
        self,
        task_id: str,
        timeout_s: float,
        on_progress: Callable[[TaskView], Awaitable[None]] | None = None,
    ) -> TaskView:
        """Wait (bounded) for the task to end, reporting each change."""
        t = await self.task(task_id)
        deadline = self.engine.clock.monotonic_s() + max(0.0, timeout_s)
        while not t.status.is_terminal:
            left = deadline - self.engine.clock.monotonic_s()
            if left <= 0:
                break
            await self.engine.wait_change(task_id, left)
            t = await self.task(task_id)
            if on_progress is not None and not t.status.is_terminal:
                await on_progress(self.view(t))
        return await self.get_task(task_id)

    async def findings(self, task_id: str) -> list[Finding]:
        t = await self.task(task_id)
        if not t.status.is_terminal:
            raise ConflictError(
                f"task {task_id} is {t.status.value}; results exist once it has ended"
            )
        blobs = await self.engine.store.get_findings_blobs(task_id)
        return [_finding_dec.decode(b) for b in blobs]

    async def results(self, task_id: str, query: FindingsQuery) -> dict[str, Any]:
        page = query_findings(await self.findings(task_id), query)
        return msgspec.to_builtins(page)  # type: ignore[no-any-return]

    async def export_path(self, task_id: str) -> str:
        t = await self.task(task_id)
        if t.export_path is None:
            raise NotFoundError(
                f"task {task_id} has no export (status {t.status.value})", field="task_id"
            )
        return t.export_path

    async def compare(
        self,
        task_id: str,
        base_task_id: str | None = None,
        *,
        limit: int = 100,
        fields: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """What changed since ``base_task_id`` (default: the last completed scan of the same
        targets): see :func:`diff_findings`; ``limit`` items per list, ``fields`` of each."""
        t = await self.task(task_id)
        if base_task_id is None:
            base = await self._previous_same_targets(t)
            if base is None:
                raise NotFoundError(
                    f"no earlier completed scan of the same targets as {task_id}; pass "
                    "base_task_id (CLI: --base)",
                    field="base_task_id",
                )
            base_task_id = base.task_id
        new = await self.findings(task_id)
        try:
            old = await self.findings(base_task_id)
        except NotFoundError:  # the base, not task_id, is what the caller got wrong
            raise NotFoundError(
                f"base task {base_task_id!r} not found", field="base_task_id"
            ) from None
        # a host the newer scan never scanned is not fixed: the hosts come from each
        # export's ReportHost list (stored with the results), not from the findings
        diff = diff_findings(
            old,
            new,
            limit=limit,
            fields=fields or PROFILES["summary"],
            old_hosts=await self._scanned_hosts(base_task_id),
            new_hosts=await self._scanned_hosts(task_id),
        )
        return {"task_id": task_id, "base_task_id": base_task_id, "diff": msgspec.to_builtins(diff)}

    async def _scanned_hosts(self, task_id: str) -> list[str] | None:
        """The hosts a finished scan's export listed (None when no results are stored:
        then the diff takes the hosts of its findings)."""
        blob = await self.engine.store.get_results(task_id)
        if blob is None:
            return None
        hosts = _json_dec.decode(blob).get("hosts", [])
        return [str(h["name"]) for h in hosts if isinstance(h, dict) and "name" in h]

    async def _previous_same_targets(self, t: Task) -> Task | None:
        before = t.seq
        for _ in range(20):
            batch = await self.engine.store.list_tasks(
                # completed only: a failed or timed-out scan's findings are partial, and
                # the error for none found says "no earlier completed scan"
                TaskFilter(statuses=["completed"], pool=t.pool, before_seq=before),
                limit=200,
            )
            for cand in batch:
                if sorted(cand.targets) == sorted(t.targets) and cand.export_path:
                    return cand
            if len(batch) < 200:
                return None
            before = batch[-1].seq
        return None


def _cursor(cursor: str | None) -> int | None:
    """A list cursor is the ``next_cursor`` of the previous page: a task sequence number."""
    if not cursor:
        return None
    if not _CURSOR.fullmatch(cursor) or int(cursor) > _MAX_CURSOR:
        raise ValidationError(
            "cursor is not valid: pass the next_cursor of the previous page", field="cursor"
        )
    return int(cursor)


def _target_matcher(target: str | None) -> Callable[[Task], bool] | None:
    if not target:
        return None
    try:
        net = ipaddress.ip_network(target, strict=False)
    except ValueError:
        needle = target.lower()
        return lambda t: any(needle in x.lower() for x in t.targets)

    def match(t: Task) -> bool:
        for x in t.targets:
            try:
                if ipaddress.ip_network(x.split("-")[0], strict=False).overlaps(net):
                    return True
            except (ValueError, TypeError):
                continue
        return False

    return match
