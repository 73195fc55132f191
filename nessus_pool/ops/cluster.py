"""``nessus-pool cluster``: the daemons sharing a PostgreSQL database, their heartbeats,
pools defined differently between them, and who holds each scanner (via the admin API)."""

from __future__ import annotations

import argparse

from nessus_pool.ops.client import ApiClient
from nessus_pool.ops.output import emit_json, note, out
from nessus_pool.render import render_table


def cmd_cluster(client: ApiClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/api/v1/cluster")
    if args.json:
        emit_json(data)
        return 0
    out(data["mode"])
    out()
    out(
        render_table(
            ["DAEMON", "HOST", "PID", "VERSION", "HEARTBEAT", "ALIVE", "ZONE"],
            [
                [
                    d["daemon_id"] + (" *" if d.get("this") else ""),
                    d["host"],
                    d["pid"],
                    d["version"],
                    "-" if d.get("heartbeat_age_s") is None else f"{d['heartbeat_age_s']:g}s ago",
                    "yes" if d["alive"] else "NO",
                    "all" if d.get("zone") is None else ",".join(d["zone"]) or "(none)",
                ]
                for d in data["daemons"]
            ],
        )
    )
    if data.get("leases"):
        out()
        out(
            render_table(
                ["SCANNER", "OWNER", "EPOCH", "EXPIRES IN"],
                [
                    [
                        lease["scanner_id"],
                        lease["owner"] + ("" if lease["owner_alive"] else " (dead)"),
                        lease["epoch"],
                        f"{lease['expires_in_s']:g}s"
                        if lease["expires_in_s"] >= 0
                        else f"expired {-lease['expires_in_s']:g}s ago",
                    ]
                    for lease in data["leases"]
                ],
            )
        )
    for pool, by_daemon in data.get("pools_differ", {}).items():
        defined = ", ".join(f"{d}={h or 'missing'}" for d, h in by_daemon.items())
        note(f"warning: pool {pool!r} is defined differently by the live daemons ({defined})")
    if data.get("config_hashes_differ"):
        note("warning: the live daemons run different configs (pools, security, credentials)")
    return 0
