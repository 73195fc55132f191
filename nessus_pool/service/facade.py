"""``Service``: the one object the admin HTTP API and the MCP server call. It composes the
parts (submit, scoping, reads, views, dead letters) and adds nothing of its own but cancel,
scanner enablement and reload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from nessus_pool.config import Config
from nessus_pool.engine import Engine
from nessus_pool.errors import ConflictError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.resolve import Resolver
from nessus_pool.results.parser import Finding
from nessus_pool.results.query import FindingsQuery
from nessus_pool.scope import Scope
from nessus_pool.service.deadletters import DeadLetters
from nessus_pool.service.reads import Reads
from nessus_pool.service.scoping import Scoping
from nessus_pool.service.submit import SubmitRequest, SubmitResult, Submitter
from nessus_pool.service.views import (
    PoolView,
    ScannerView,
    TaskPage,
    TaskView,
    pool_view,
    scanner_views,
)

TERMINAL_STATUSES = frozenset(s.value for s in TaskStatus if s.is_terminal)


class ReloadOutcome(msgspec.Struct, kw_only=True):
    applied: bool
    message: str
    changes: dict[str, list[str]] = {}
    warnings: list[str] = []


class Service:
    def __init__(
        self,
        engine: Engine,
        config: Callable[[], Config],
        reload: Callable[[], Awaitable[ReloadOutcome]] | None = None,
    ) -> None:
        self.engine = engine
        self._config = config
        self._reload = reload
        self._reads = Reads(engine)
        self._scoping = Scoping(engine, config)
        self._submitter = Submitter(engine, config, self._scoping)
        self._dead_letters = DeadLetters(engine, self._reads)
        engine.scope_check = self._scoping.recheck

    @property
    def config(self) -> Config:
        return self._config()

    @property
    def resolver(self) -> Resolver:
        """Resolves hostnames for scope checks (tests replace it)."""
        return self._scoping.resolver

    @resolver.setter
    def resolver(self, resolver: Resolver) -> None:
        self._scoping.resolver = resolver

    # --- scans ---------------------------------------------------------------------------

    async def submit(self, req: SubmitRequest) -> SubmitResult:
        return await self._submitter.submit(req)

    def scope_for(self, pool: str) -> Scope:
        """The pool's scope, built once per pool config (a reload makes a new one)."""
        return self._scoping.scope_for(pool)

    def view(self, t: Task, results: dict[str, Any] | None = None) -> TaskView:
        return self._reads.view(t, results)

    async def get_task(self, task_id: str, *, with_results: bool = True) -> TaskView:
        return await self._reads.get_task(task_id, with_results=with_results)

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
        return await self._reads.list_tasks(
            status=status,
            pool=pool,
            target=target,
            created_from_ms=created_from_ms,
            created_to_ms=created_to_ms,
            dead_letter=dead_letter,
            page_size=page_size,
            cursor=cursor,
            limit=limit,
        )

    async def cancel(self, task_id: str) -> TaskView:
        """A queued task ends ``canceled`` at once; a dispatched one is stopped on its
        scanner, so the reply says ``cancelling`` until the engine has done so."""
        t = await self._reads.task(task_id)
        if t.status.is_terminal:
            raise ConflictError(f"task {task_id} already ended ({t.status.value})", field="task_id")
        view = self.view(await self.engine.cancel(task_id))
        if view.status not in TERMINAL_STATUSES:
            view.status = "cancelling"
        return view

    async def wait_for(
        self,
        task_id: str,
        timeout_s: float,
        on_progress: Callable[[TaskView], Awaitable[None]] | None = None,
    ) -> TaskView:
        """Wait (bounded) for the task to end, reporting each change."""
        return await self._reads.wait_for(task_id, timeout_s, on_progress)

    # --- results -------------------------------------------------------------------------

    async def findings(self, task_id: str) -> list[Finding]:
        return await self._reads.findings(task_id)

    async def results(self, task_id: str, query: FindingsQuery) -> dict[str, Any]:
        return await self._reads.results(task_id, query)

    async def export_path(self, task_id: str) -> str:
        return await self._reads.export_path(task_id)

    async def compare(self, task_id: str, base_task_id: str | None = None) -> dict[str, Any]:
        return await self._reads.compare(task_id, base_task_id)

    # --- pools and scanners --------------------------------------------------------------

    def scanner_views(self, pool: str | None = None) -> list[ScannerView]:
        return scanner_views(self.engine, pool)

    async def pool_views(self) -> list[PoolView]:
        return [await self.pool_view(name) for name in self.engine.pools]

    async def pool_view(self, name: str) -> PoolView:
        return pool_view(self.engine, name)

    def set_scanner_enabled(self, scanner_id: str, enabled: bool) -> ScannerView:
        self.engine.set_scanner_enabled(scanner_id, enabled)
        return next(v for v in self.scanner_views() if v.id == scanner_id)

    # --- dead-letter queue ---------------------------------------------------------------

    async def dlq_list(
        self, *, pool: str | None = None, page_size: int = 50, cursor: str | None = None
    ) -> TaskPage:
        return await self._dead_letters.dlq_list(pool=pool, page_size=page_size, cursor=cursor)

    async def dlq_get(self, task_id: str) -> dict[str, Any]:
        return await self._dead_letters.dlq_get(task_id)

    async def dlq_retry(self, task_id: str) -> TaskView:
        """A fresh attempt that really runs: the task goes back to its pool's queue with its
        attempt count reset and its dead-letter mark cleared."""
        return await self._dead_letters.dlq_retry(task_id)

    async def dlq_purge(
        self,
        *,
        task_ids: list[str] | None = None,
        pool: str | None = None,
        older_than_s: float | None = None,
        confirm: bool = False,
    ) -> dict[str, Any]:
        """Delete dead letters by id, or in bulk by pool and/or age. A bulk purge without
        ``confirm`` is a dry run that lists what it would delete."""
        return await self._dead_letters.dlq_purge(
            task_ids=task_ids, pool=pool, older_than_s=older_than_s, confirm=confirm
        )

    async def reload(self) -> ReloadOutcome:
        if self._reload is None:
            raise ConflictError("reload is not available here")
        return await self._reload()
