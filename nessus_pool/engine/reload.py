"""SIGHUP: apply a new set of pools and scanners to a running engine, through its public
operations only (add a pool or scanner, retire a scanner, restart a probe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nessus_pool.config import PoolConfig
from nessus_pool.engine.scanner import ScannerSpec
from nessus_pool.errors import ConflictError

if TYPE_CHECKING:
    from nessus_pool.engine.core import Engine


async def apply_reload(engine: Engine, pools: list[PoolConfig], specs: list[ScannerSpec]) -> None:
    """Apply a new set of pools and scanners atomically: every check first, then changes.
    A removed scanner with running scans drains first; a pool is removed only when empty."""
    new_pools = {p.name: p for p in pools}
    new_specs = {s.scanner_id: s for s in specs}
    for name, pool in engine.pools.items():
        if name not in new_pools and (pool.queue or pool.active):
            raise ConflictError(
                f"pool {name!r} still has {len(pool.queue)} queued and {pool.active} running "
                "scans; let them finish (or cancel them) before removing the pool"
            )
    for sid, sc in engine.scanners.items():
        spec = new_specs.get(sid)
        if spec is not None and spec.pool != sc.spec.pool and sc.slots.active:
            raise ConflictError(
                f"scanner {sid!r} has running scans and cannot move from pool "
                f"{sc.spec.pool!r} to {spec.pool!r} now"
            )
    for name, pc in new_pools.items():
        if name in engine.pools:
            engine.pools[name].set_config(pc)
        else:
            engine.add_pool(pc)
    for sid, sc in list(engine.scanners.items()):
        spec = new_specs.get(sid)
        if spec is None or spec.pool != sc.spec.pool:
            await engine.retire_scanner(sc)
            continue
        if spec.connection_key() != sc.spec.connection_key():
            old = sc.client
            sc.client = engine.client_factory(spec)
            await old.close()
            sc.probe_now.set()
        sc.spec = spec
        sc.slots.capacity = spec.capacity
        sc.slots.enabled = spec.enabled
        pc = new_pools[spec.pool]
        sc.breaker.threshold, sc.breaker.reset_s = pc.breaker_failures, pc.breaker_reset_s
        if sc.slots.removed:  # removed by an earlier reload, listed again before it retired
            sc.slots.removed = False
            engine.start_probe(sc)
            sc.probe_now.set()
    for sid, spec in new_specs.items():
        if sid not in engine.scanners:
            engine.add_scanner(spec)
    for name in [n for n in engine.pools if n not in new_pools]:
        pool = engine.pools.pop(name)
        if pool.dispatcher is not None:
            pool.dispatcher.cancel()
    engine.windows.refresh()
    for pool in engine.pools.values():
        pool.wake.set()
