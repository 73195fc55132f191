"""Reading tasks: one task (with its results summary), pages of tasks, waiting for one to
end, its findings, its export file and the difference between two scans."""

from __future__ import annotations

import asyncio
import collections
import copy
import ipaddress
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from nessus_pool.engine import Engine
from nessus_pool.errors import ConflictError, NotFoundError, ValidationError
from nessus_pool.logs import release_task_secrets
from nessus_pool.models import Task, TaskStatus
from nessus_pool.results.parser import Finding
from nessus_pool.results.query import (
    PROFILES,
    FindingsQuery,
    diff_findings,
    query_findings,
    severity_value,
)
from nessus_pool.results.types import AuthStatus
from nessus_pool.service.ids import check_task_id
from nessus_pool.service.views import TaskPage, TaskView, task_view
from nessus_pool.store import HostFilter, TaskFilter

FINISHED_CACHE = 4096
MAX_PAGE_SIZE = 500
#: cursors are task sequence numbers: SQLite integers
_CURSOR = re.compile(r"[0-9]{1,19}")
_MAX_CURSOR = 2**63 - 1
_finding_dec = msgspec.msgpack.Decoder(Finding)
_json_dec = msgspec.json.Decoder()


class _ResultsRow(msgspec.Struct, kw_only=True):
    """A results row as the status read takes it: summary and validation as plain data, the
    host count; anything else (a ``hosts`` array of a row that no migration rewrote) is
    skipped by the decoder without being built."""

    summary: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    hosts_total: int | None = None
    auth_plugins_found: int = 0


_results_dec = msgspec.json.Decoder(_ResultsRow)
_AUTH_STATUSES = tuple(s.value for s in AuthStatus)
#: host names read per side of a comparison (callers that want "everything" get this many)
MAX_HOST_DIFF_NAMES = 10_000
#: pages past this are refused (cursors reach any depth)
_MAX_PAGE = 1_000_000


#: live states whose ``get_task`` answer depends on the task's own fields only
_SELF_CONTAINED = frozenset({TaskStatus.DISPATCHING, TaskStatus.RUNNING, TaskStatus.EXPORTING})


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

    def kept_entry(self, task_id: str) -> object | None:
        """What ``get_task(task_id)`` answers from, for a caller that keeps what it derived
        from the answer (the MCP status reply) while the entries it sees compare equal:

        - a finished, cached task: its cache entry (the engine's change hook drops it when
          the task changes);
        - a live task dispatching, running or exporting: a copy of it. In those states the
          answer is a function of the task's own fields (no queue position or wait
          estimate, no time since a pause), so equal copies give equal answers, whether
          the change came through the change hook or not.

        None when the answer must be built: another state, a task not held here, an
        export size that only a ``stat()`` gives, or the database away (the answer is then
        marked stale, with a time)."""
        if self.engine.store.outage.down:
            return None
        t = self.engine.tasks.get(task_id)
        if t is None:
            return self._finished.get(task_id)
        if (
            t.status not in _SELF_CONTAINED
            or task_id in self.engine.ending
            or (t.export_path is not None and t.export_bytes is None)
        ):
            return None
        return copy.copy(t)

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
            # the summary row only: per-host results are rows of their own (hosts())
            row = _results_dec.decode(blob)
            hosts_total = row.hosts_total
            if hosts_total is None:
                hosts_total = int((row.summary or {}).get("hosts_scanned") or 0)
            results = {
                "summary": row.summary,
                "validation": row.validation,
                "hosts_total": hosts_total,
                "auth_plugins_found": row.auth_plugins_found,
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

    async def hosts(
        self,
        task_id: str,
        *,
        page: int = 1,
        page_size: int = 50,
        cursor: str | None = None,
        auth_status: str | None = None,
        min_severity: str | int | None = None,
    ) -> dict[str, Any]:
        """One page of an ended scan's per-host results, in export order: by ``page``
        (1-based) or after ``cursor`` (the ``next_cursor`` of the previous page, cheaper
        deep into a large scan); filtered by ``auth_status`` and by ``min_severity`` (hosts
        with a finding of that severity or above). Memory is bounded by the page size."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValidationError(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
        if not 1 <= page <= _MAX_PAGE:
            raise ValidationError(f"page must be 1..{_MAX_PAGE}", field="page")
        if auth_status is not None and auth_status not in _AUTH_STATUSES:
            raise ValidationError(
                f"unknown auth_status {auth_status[:40]!r} (one of {', '.join(_AUTH_STATUSES)})",
                field="auth_status",
            )
        flt = HostFilter(
            auth_status=auth_status,
            min_severity=None if min_severity is None else severity_value(min_severity),
        )
        after = _cursor(cursor)
        if after is not None and page != 1:
            raise ValidationError(
                "give page or cursor, not both (a cursor already says where the page starts)",
                field="cursor",
            )
        t = await self.task(task_id)
        if not t.status.is_terminal:
            raise ConflictError(
                f"task {task_id} is {t.status.value}; results exist once it has ended"
            )
        store = self.engine.store
        rows = await store.host_page(
            task_id,
            flt,
            after_seq=-1 if after is None else after,
            offset=0 if after is not None else (page - 1) * page_size,
            limit=page_size,
        )
        total = await self._hosts_total(task_id, flt)
        return {
            "task_id": task_id,
            "hosts": [_json_dec.decode(data) for _, data in rows],
            "total": total,
            "page": None if after is not None else page,
            "page_size": page_size,
            "pages": max(1, -(-total // page_size)),
            "next_cursor": str(rows[-1][0]) if len(rows) == page_size else None,
        }

    async def _hosts_total(self, task_id: str, flt: HostFilter) -> int:
        """The hosts a filter matches: from the results row's counts when it can say (a
        count over a million rows takes about 0.2 s), else counted."""
        blob = (
            None if flt.min_severity is not None else await self.engine.store.get_results(task_id)
        )
        if blob is not None:
            row = _results_dec.decode(blob)
            if flt.auth_status is None and row.hosts_total is not None:
                return row.hosts_total
            by_status = (row.validation or {}).get("hosts_by_status")
            if flt.auth_status is not None and isinstance(by_status, dict):
                return int(by_status.get(flt.auth_status, 0))
        return await self.engine.store.count_hosts(task_id, flt)

    async def export_path(self, task_id: str) -> str:
        t = await self.task(task_id)
        if t.export_path is None:
            raise NotFoundError(
                f"task {task_id} has no export (status {t.status.value})", field="task_id"
            )
        return t.export_path

    async def export_download(self, task_id: str) -> str:
        """:meth:`export_path` for a download: [cluster] a file kept by another daemon (on
        another host) is a ``NotFoundError`` naming that daemon, not a bare 404."""
        path = await self.export_path(task_id)
        member = self.engine.cluster
        if member is not None and not await asyncio.to_thread(os.path.isfile, path):
            t = await self.task(task_id)
            raise NotFoundError(
                await member.export_elsewhere(task_id, t.scanner_id), field="task_id"
            )
        return path

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
        # export's ReportHost list (stored per host), not from the findings; read from the
        # store by name, so memory does not grow with the host count
        store = self.engine.store
        listed = (
            await store.get_results(base_task_id) is not None
            and await store.get_results(task_id) is not None
        )
        if listed:
            # one more than shown marks the diff truncated; never more than a constant
            names = min(limit, MAX_HOST_DIFF_NAMES) + 1
            diff = diff_findings(
                old,
                new,
                limit=limit,
                fields=fields or PROFILES["summary"],
                old_hosts=await store.hosts_among(base_task_id, {f.host for f in new}),
                new_hosts=await store.hosts_among(task_id, {f.host for f in old}),
                hosts_gone=await store.hosts_only_in(base_task_id, task_id, names),
                hosts_added=await store.hosts_only_in(task_id, base_task_id, names),
            )
        else:  # a scan without stored results: the hosts of its findings
            diff = diff_findings(old, new, limit=limit, fields=fields or PROFILES["summary"])
        return {"task_id": task_id, "base_task_id": base_task_id, "diff": msgspec.to_builtins(diff)}

    async def _previous_same_targets(self, t: Task) -> Task | None:
        """The last completed scan of the same targets; for a schedule's run, the last
        completed run of the same schedule (in any pool, whatever its targets were)."""
        before = t.seq
        pool = None if t.schedule_id is not None else t.pool
        for _ in range(20):
            batch = await self.engine.store.list_tasks(
                # completed only: a failed or timed-out scan's findings are partial, and
                # the error for none found says "no earlier completed scan"
                TaskFilter(statuses=["completed"], pool=pool, before_seq=before),
                limit=200,
            )
            for cand in batch:
                same = (
                    cand.schedule_id == t.schedule_id
                    if t.schedule_id is not None
                    else sorted(cand.targets) == sorted(t.targets)
                )
                if same and cand.export_path:
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
