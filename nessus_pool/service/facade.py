"""``Service``: the one object the admin HTTP API and the MCP server call. It is made of the
parts (reads and dead letters by inheritance, submit and scoping by composition, views as
functions) and adds nothing of its own but cancel, scanner enablement and reload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from nessus_pool.config import Config
from nessus_pool.engine import Engine
from nessus_pool.errors import ConflictError, ReloadRefusedError
from nessus_pool.models import TaskStatus
from nessus_pool.resolve import Resolver
from nessus_pool.scope import Scope
from nessus_pool.service import pause as _pause
from nessus_pool.service.deadletters import DeadLetters
from nessus_pool.service.policies import PoolPolicies, list_policies
from nessus_pool.service.schedules import Schedules
from nessus_pool.service.scoping import Scoping
from nessus_pool.service.submit import SubmitRequest, SubmitResult, Submitter
from nessus_pool.service.views import (
    PoolView,
    ScannerView,
    TaskView,
    pool_view,
    scanner_views,
)

TERMINAL_STATUSES = frozenset(s.value for s in TaskStatus if s.is_terminal)


#: a drain lasts until the daemon stops (kept in memory, not in the store)
DRAIN_NOTE = (
    "the drain lasts until the daemon restarts (it is not stored); to keep the scanner out "
    "across restarts set enabled = false for it in the config and reload"
)


class ReloadOutcome(msgspec.Struct, kw_only=True):
    applied: bool
    message: str
    changes: dict[str, list[str]] = {}
    warnings: list[str] = []


class Service(DeadLetters):
    """Reads (get, list, wait, results, export, compare) and the dead-letter operations are
    inherited (``Reads`` <- ``DeadLetters`` <- ``Service``); submit and scoping are composed
    and delegated to."""

    def __init__(
        self,
        engine: Engine,
        config: Callable[[], Config],
        reload: Callable[[], Awaitable[ReloadOutcome]] | None = None,
    ) -> None:
        super().__init__(engine)
        self._config = config
        self._reload = reload
        self._scoping = Scoping(engine, config)
        self._submitter = Submitter(engine, config, self._scoping)
        self.schedules = Schedules(engine, config, self._submitter, self._scoping)
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
        self.writable_now()
        return await self._submitter.submit(req)

    def scope_for(self, pool: str) -> Scope:
        """The pool's scope, built once per pool config (a reload makes a new one)."""
        return self._scoping.scope_for(pool)

    async def cancel(self, task_id: str) -> TaskView:
        """A queued task ends ``canceled`` at once; a dispatched one is stopped on its
        scanner, so the reply says ``cancelling`` until the engine has done so."""
        self.writable_now()
        t = await self.task(task_id)
        if t.status.is_terminal:
            raise ConflictError(f"task {task_id} already ended ({t.status.value})", field="task_id")
        view = self.view(await self.engine.cancel(task_id))
        if view.status not in TERMINAL_STATUSES:
            view.status = "cancelling"
        return view

    async def pause(self, task_id: str) -> TaskView:
        return await _pause.pause(self.engine, task_id)

    async def resume(self, task_id: str) -> TaskView:
        return await _pause.resume(self.engine, task_id)

    def on_task_change(self, hook: Callable[[str], None]) -> Callable[[], None]:
        """Call ``hook(task_id)`` on every task change (submit, status, progress), on the
        loop, without awaiting: it must only record the id. Returns the function that
        removes the hook (MCP subscriptions use this instead of polling)."""
        hooks = self.engine.on_change
        hooks.append(hook)

        def stop() -> None:
            if hook in hooks:
                hooks.remove(hook)

        return stop

    # --- pools and scanners --------------------------------------------------------------

    def scanner_views(self, pool: str | None = None) -> list[ScannerView]:
        return scanner_views(self.engine, pool)

    async def pool_views(self) -> list[PoolView]:
        return [await self.pool_view(name) for name in self.engine.pools]

    async def pool_view(self, name: str) -> PoolView:
        return pool_view(self.engine, name)

    def policies(self, pool: str | None = None) -> list[PoolPolicies]:
        """Saved Nessus policies per pool and scanner, as the scanners' last probes listed
        them (every ``probe-interval-s``), with each pool's ``default-policy``."""
        return list_policies(self.engine, pool)

    def set_scanner_enabled(self, scanner_id: str, enabled: bool) -> ScannerView:
        """Drain a scanner or take it back. A drain is held in memory only: the reply's
        ``note`` says so (a restart brings the scanner back up)."""
        self.engine.set_scanner_enabled(scanner_id, enabled)
        view = next(v for v in self.scanner_views() if v.id == scanner_id)
        if not enabled:
            view.note = DRAIN_NOTE
        return view

    async def reload(self) -> ReloadOutcome:
        """Reload the config file (what SIGHUP does): the applied outcome, or
        :class:`ReloadRefusedError` (the old configuration keeps running)."""
        if self._reload is None:
            raise ConflictError("reload is not available here")
        outcome = await self._reload()
        if not outcome.applied:
            raise ReloadRefusedError(outcome.message)
        return outcome
