"""Which pool may scan which targets: the pool a submit lands in, and the scope check again
at launch (DNS can change between submit and dispatch)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from nessus_pool.config import Config, PoolConfig
from nessus_pool.engine import Engine
from nessus_pool.engine.pool import never_launches
from nessus_pool.errors import ConflictError, ScopeError, ValidationError
from nessus_pool.models import Task
from nessus_pool.resolve import Resolver, resolve_hosts
from nessus_pool.scope import Scope
from nessus_pool.targets import OFFLOAD_CHARS, targets_size

T = TypeVar("T")


class Scoping:
    """Each pool's :class:`Scope`, cached per pool config, and the resolver used to check
    hostnames (tests replace it)."""

    def __init__(self, engine: Engine, config: Callable[[], Config]) -> None:
        self.engine = engine
        self._config = config
        self._scopes: dict[str, tuple[PoolConfig, bool, Scope]] = {}
        self.resolver: Resolver = resolve_hosts

    async def recheck(self, t: Task) -> str | None:
        """At launch: hostnames are resolved again (DNS can change) and checked."""
        if t.pool not in self.engine.pools:
            return None
        scope = self.scope_for(t.pool)
        big = targets_size(t.targets) > OFFLOAD_CHARS
        hosts = await _off_loop(big, scope.needs_resolution, t.targets)
        resolved = await self.resolver(hosts) if hosts else {}
        return await _off_loop(big, _first_out_of_scope, scope, t.targets, resolved)

    def scope_for(self, pool: str) -> Scope:
        """The pool's scope, built once per pool config (a reload makes a new one)."""
        state = self.engine.pools[pool]
        real = any(not sc.spec.simulated for sc in state.scanners.values())
        mandatory = self._config().security.require_scope and real
        cached = self._scopes.get(pool)
        if cached is not None and cached[0] is state.config and cached[1] == mandatory:
            return cached[2]
        scope = Scope(
            state.config.allowed_targets, state.config.denied_targets, mandatory=mandatory
        )
        self._scopes[pool] = (state.config, mandatory, scope)
        return scope

    async def pick_pool(
        self, requested: str | None, targets: list[str], *, big: bool = False
    ) -> str:
        """The requested pool if its scope allows every target; without one, the pool whose
        scope covers all targets most narrowly (config order breaks ties). ``big``: check
        in a thread, the work grows with the targets."""
        pools = list(self.engine.pools)
        if requested is not None and requested not in self.engine.pools:
            raise ValidationError(
                f"pool {requested!r} does not exist (pools: {', '.join(pools) or 'none'})",
                field="pool",
            )
        if not pools:
            raise ValidationError("no pool is configured", field="pool")
        if requested is not None:
            # (an export-only pool is refused by the engine, naming each scanner's licence)
            blocker = self.no_scanner(requested)
            if blocker is not None:
                raise ConflictError(
                    f"{blocker}: a scan sent there would wait forever. Add a scanner to it "
                    "(config, then SIGHUP) or use another pool",
                    field="pool",
                )
            return await self._ranked(requested, [requested], targets, big)
        if all(self.scope_for(name).open for name in pools):
            # no pool restricts anything (the common case): the first pool that can launch,
            # what the ranking below picks, without checking the pools after it
            for name in pools:
                if self.cannot_launch(name) is None:
                    return name
        # a pool that cannot launch is no choice: its scans would only wait
        blocked = {name: why for name in pools if (why := self.cannot_launch(name)) is not None}
        names = [name for name in pools if name not in blocked]
        try:
            if not names:
                raise ScopeError("no pool can launch scans", field="pool")
            return await self._ranked(None, names, targets, big)
        except ScopeError:
            if not blocked:
                raise
            # say so when only a pool that cannot launch may scan them
            try:
                would = await self._ranked(None, list(blocked), targets, big)
            except ScopeError:
                would = None
            if would is None and names:
                raise
            why = blocked[would] if would is not None else "; ".join(blocked.values())
            raise ConflictError(
                f"no pool that can launch scans may scan these targets ({why}). Add a "
                "scanner to that pool (config, then SIGHUP) or widen another pool's "
                "allowed-targets",
                field="pool",
            ) from None

    async def _ranked(
        self, requested: str | None, names: list[str], targets: list[str], big: bool
    ) -> str:
        scopes = {name: self.scope_for(name) for name in names}
        if all(sc.open for sc in scopes.values()):
            return names[0]  # no pool restricts anything: nothing to check or rank
        hosts = await _off_loop(big, _hosts_to_resolve, list(scopes.values()), targets)
        resolved = await self.resolver(hosts) if hosts else {}
        return await _off_loop(big, _rank_pools, requested, names, scopes, targets, resolved)

    def cannot_launch(self, name: str) -> str | None:
        """:meth:`no_scanner`, or every scanner of the pool is export-only."""
        why = self.no_scanner(name)
        if why is None and never_launches(self.engine.pools[name]):
            why = f"every scanner of pool {name!r} is export-only"
        return why

    def no_scanner(self, name: str) -> str | None:
        """Why pool ``name`` cannot launch any scan as configured now (no scanner, or none
        enabled), else None. A draining, unreachable or not yet probed scanner may still
        launch: it counts."""
        scanners = self.engine.pools[name].scanners.values()
        if any(sc.slots.enabled and not sc.slots.removed for sc in scanners):
            return None  # checked per submit: the common answer without building lists
        live = [sc for sc in scanners if not sc.slots.removed]
        if not live:
            return f"pool {name!r} has no scanners"
        if not any(sc.slots.enabled for sc in live):
            return f"pool {name!r} has no enabled scanner"
        return None


def _rank_pools(
    requested: str | None,
    names: list[str],
    scopes: dict[str, Scope],
    targets: list[str],
    resolved: dict[str, list[str]],
) -> str:
    """The narrowest pool of ``names`` whose scope allows every target (pure CPU work that
    grows with the targets: a thread may run it)."""
    best: tuple[float, int, str] | None = None
    first_error: ScopeError | None = None
    for i, name in enumerate(names):
        try:
            scopes[name].check(targets, resolved)
        except ScopeError as exc:
            first_error = first_error or exc
            continue
        key = (scopes[name].breadth(targets, resolved), i, name)
        best = key if best is None or key < best else best
    if best is None:
        assert first_error is not None
        if requested is not None:
            raise first_error
        raise ScopeError(f"no pool may scan these targets: {first_error}", field=first_error.field)
    return best[2]


async def _off_loop(big: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, in a thread when ``big`` (work that grows with a request's targets
    must not stall the event loop: 65,536 addresses take about a second)."""
    return await asyncio.to_thread(fn, *args) if big else fn(*args)


def _hosts_to_resolve(scopes: list[Scope], targets: list[str]) -> list[str]:
    return sorted({h for sc in scopes for h in sc.needs_resolution(targets)})


def _first_out_of_scope(
    scope: Scope, targets: list[str], resolved: dict[str, list[str]]
) -> str | None:
    for target in targets:
        reason = scope.why_not(target, resolved)
        if reason is not None:
            return reason
    return None
