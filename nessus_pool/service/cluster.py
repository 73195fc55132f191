"""The cluster as an operator sees it (``GET /api/v1/cluster``, ``nessus-pool cluster``):
the daemons sharing the database, their heartbeats and versions, pools defined differently
between them, and who holds each scanner's lease."""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING

import msgspec

from nessus_pool import __version__

if TYPE_CHECKING:
    from nessus_pool.service.facade import Service


class DaemonView(msgspec.Struct, kw_only=True):
    daemon_id: str
    host: str
    pid: int
    version: str
    #: this daemon answered the request
    this: bool = False
    heartbeat_age_s: float | None = None
    alive: bool = True
    started_at_ms: int | None = None
    config_hash: str | None = None
    #: scanner ids or globs it may own (None: every scanner)
    zone: list[str] | None = None


class LeaseView(msgspec.Struct, kw_only=True):
    scanner_id: str
    owner: str
    epoch: int
    #: negative once expired (a dead owner; another daemon of the zone takes it)
    expires_in_s: float
    owner_alive: bool


class ClusterView(msgspec.Struct, kw_only=True):
    #: "cluster (PostgreSQL)", "single daemon (SQLite)" or "single daemon (PostgreSQL)"
    mode: str
    daemons: list[DaemonView]
    leases: list[LeaseView] = []
    #: pool -> daemon id -> hash of its definition, for pools the live daemons define
    #: differently (or some lack): they should share one config
    pools_differ: dict[str, dict[str, str | None]] = {}
    config_hashes_differ: bool = False
    lease_s: float | None = None


async def cluster_view(service: Service) -> ClusterView:
    engine = service.engine
    member = engine.cluster
    if member is None:
        from nessus_pool.store.sqlite import Store

        kind = "SQLite" if isinstance(engine.store, Store) else "PostgreSQL"
        me = DaemonView(
            daemon_id=socket.gethostname(), host=socket.gethostname(), pid=os.getpid(),
            version=__version__, this=True,
        )  # fmt: skip
        return ClusterView(mode=f"single daemon ({kind})", daemons=[me])
    daemons_rows, lease_rows = await member.snapshot()
    now_ms = engine.clock.now_ms()
    lease_ms = member.settings.lease_s * 1000
    daemons: list[DaemonView] = []
    pools_of: dict[str, dict[str, str]] = {}
    for r in daemons_rows:
        age_ms = now_ms - int(r["heartbeat_at_ms"])
        alive = age_ms < lease_ms
        daemons.append(
            DaemonView(
                daemon_id=r["daemon_id"],
                host=r["host"],
                pid=int(r["pid"]),
                version=r["version"],
                this=r["daemon_id"] == member.daemon_id,
                heartbeat_age_s=round(max(0, age_ms) / 1000, 1),
                alive=alive,
                started_at_ms=int(r["started_at_ms"]),
                config_hash=r["config_hash"],
                zone=json.loads(r["zone"]),
            )
        )
        if alive:
            pools_of[r["daemon_id"]] = json.loads(r["pools"])
    alive_ids = {d.daemon_id for d in daemons if d.alive}
    names = sorted({p for pools in pools_of.values() for p in pools})
    differ = {
        name: {d: pools.get(name) for d, pools in sorted(pools_of.items())}
        for name in names
        if len({pools.get(name) for pools in pools_of.values()}) > 1
    }
    leases = [
        LeaseView(
            scanner_id=r["scanner_id"],
            owner=r["owner"],
            epoch=int(r["epoch"]),
            expires_in_s=round((int(r["expires_at_ms"]) - now_ms) / 1000, 1),
            owner_alive=r["owner"] in alive_ids,
        )
        for r in lease_rows
    ]
    return ClusterView(
        mode="cluster (PostgreSQL)",
        daemons=daemons,
        leases=leases,
        pools_differ=differ,
        config_hashes_differ=len({d.config_hash for d in daemons if d.alive}) > 1,
        lease_s=member.settings.lease_s,
    )
