"""Secrets never leave: unique random canary passwords go in through every door (a named
credential set read from the environment, inline SSH and escalation passwords on the admin
API, an inline password through MCP, a request that is refused) and must be found nowhere
they could leak: the daemon's JSON log on stderr (debug level), every admin API and MCP
response, /metrics, the SQLite files (with -wal / -shm) and every file in the storage
directory, exports included, both while running and after shutdown.

The simulator only accepts audit/audit, so the canary logins fail and those scans end
``failed`` / ``authentication_failed``: they still run, export and get validated.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from _harness import (
    TERMINAL,
    Daemon,
    Simulator,
    all_tasks,
    free_port,
    log,
    parse_args,
    report,
    run,
    tempdir,
    wait_terminal,
    write_toml,
)

ENV = "NP_PROOF_CANARY_PASSWORD"
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def new_canaries() -> dict[str, str]:
    def c(tag: str) -> str:
        return f"Cnry{tag}-{secrets.token_urlsafe(18)}"

    return {
        "config_env": c("Env"),
        "inline_api": c("Api"),
        "inline_escalation": c("Esc"),
        "inline_mcp": c("Mcp"),
        "refused_request": c("Ref"),
    }


def variants(canary: str) -> list[bytes]:
    """The raw value plus its base64 forms at the three alignments (a blob on disk)."""
    raw = canary.encode()
    out = [raw]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)[4 * ((pad + 2) // 3) if pad else 0 :]
        out.append(enc[: len(enc) - 4])
    return out


def count_in(data: bytes, canary: str) -> int:
    return sum(data.count(v) for v in variants(canary) if v)


class Collector:
    """Every response body, grouped by where it came from."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = defaultdict(list)

    async def get(self, http: aiohttp.ClientSession, group: str, url: str) -> Any:
        async with http.get(url) as r:
            body = await r.read()
        self.bodies[group].append(body)
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    async def post(
        self, http: aiohttp.ClientSession, group: str, url: str, payload: Any, **kw: Any
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        async with http.post(url, json=payload, **kw) as r:
            body = await r.read()
            headers = r.headers
        self.bodies[group].append(body)
        text = body.decode(errors="replace")
        if text.startswith("event:") or "\ndata: " in text:
            lines = [x[6:] for x in text.splitlines() if x.startswith("data: ")]
            text = lines[-1] if lines else "{}"
        try:
            return r.status, json.loads(text or "{}"), headers
        except json.JSONDecodeError:
            return r.status, None, headers


async def mcp_session(
    http: aiohttp.ClientSession, col: Collector, base: str
) -> dict[str, str] | None:
    status, _, headers = await col.post(
        http,
        "mcp",
        f"{base}/mcp",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "nessus-pool-proof", "version": "1"},
            },
        },
        headers=MCP_HEADERS,
    )
    sid = headers.get("Mcp-Session-Id") if status == 200 else None  # type: ignore[union-attr]
    if sid is None:
        return None
    h = {**MCP_HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    await col.post(
        http,
        "mcp",
        f"{base}/mcp",
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=h,
    )
    return h


async def mcp_call(
    http: aiohttp.ClientSession,
    col: Collector,
    base: str,
    h: dict[str, str],
    n: int,
    tool: str,
    arguments: dict[str, Any],
) -> Any:
    _, body, _ = await col.post(
        http,
        "mcp",
        f"{base}/mcp",
        {
            "jsonrpc": "2.0",
            "id": n,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        },
        headers=h,
    )
    return body


def storage_counts(root: Path, canaries: dict[str, str]) -> tuple[dict[str, int], list[str], int]:
    """Counts per canary over every file under ``root``; the files holding any; files read."""
    counts = dict.fromkeys(canaries, 0)
    holders: list[str] = []
    files = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        files += 1
        data = path.read_bytes()
        for name, c in canaries.items():
            n = count_in(data, c)
            counts[name] += n
            if n:
                holders.append(f"{path.relative_to(root)}:{name}={n}")
    return counts, holders, files


def self_check(canaries: dict[str, str]) -> None:
    """The counter finds what it looks for (raw, and base64 at every alignment)."""
    for c in canaries.values():
        assert count_in(b"x" + c.encode() + b"y", c) == 1
        for pad in range(3):
            assert count_in(base64.b64encode(b"k" * pad + c.encode() + b"tail"), c) >= 1


async def main() -> int:
    args = parse_args(__doc__ or "")
    canaries = new_canaries()
    self_check(canaries)
    with tempdir("proof-canary-", args.keep) as tmp:
        sim = Simulator(scanners=2, scan_seconds=1.0, seed=9)
        await sim.start_sim()
        port = free_port()
        data_dir = tmp / "data"
        cfg = write_toml(
            tmp / "np.toml",
            {
                "server": {"listen": f"127.0.0.1:{port}"},
                "storage": {"path": str(data_dir)},
                "logging": {"format": "json", "level": "debug"},
                "security": {"allow-inline-credentials": True},
                "pools": [
                    {
                        "name": "lan",
                        "poll-interval-s": 0.1,
                        "scanners": [
                            {
                                "id": f"s{i}",
                                "url": sim.url(i),
                                "max-concurrent-scans": 3,
                                "access-key": {"env": "NP_PROOF_ACCESS"},
                                "secret-key": {"env": "NP_PROOF_SECRET"},
                            }
                            for i in range(2)
                        ],
                    }
                ],
                "credentials": {"canary": {"username": "canary-user", "password": {"env": ENV}}},
            },
        )
        env = {
            ENV: canaries["config_env"],
            "NP_PROOF_ACCESS": "sim-access-key",
            "NP_PROOF_SECRET": "sim-secret-key",
        }
        daemon = Daemon(cfg, port, env=env)
        col = Collector()
        ids: list[str] = []
        mcp_present = False
        running_files: tuple[dict[str, int], list[str], int] = ({}, [], 0)
        try:
            await daemon.start_daemon()
            base = daemon.base
            api = f"{base}/api/v1"
            async with aiohttp.ClientSession() as http:
                submits: list[dict[str, Any]] = []
                for k in range(2):
                    submits += [
                        {
                            "targets": f"10.9.{k}.1",
                            "scan_type": "authenticated",
                            "credential": "canary",
                        },
                        {
                            "targets": f"10.9.{k}.2",
                            "scan_type": "authenticated",
                            "ssh_username": "canary-user",
                            "ssh_password": canaries["inline_api"],
                        },
                        {
                            "targets": f"10.9.{k}.3",
                            "scan_type": "authenticated_privileged",
                            "ssh_username": "audit",
                            "ssh_password": "audit",
                            "elevate_privileges_with": "sudo",
                            "escalation_password": canaries["inline_escalation"],
                        },
                        {
                            "targets": f"10.9.{k}.4",
                            "idempotency_key": f"canary-{k}",
                            "scan_type": "authenticated",
                            "ssh_username": "canary-user",
                            "ssh_password": canaries["inline_api"],
                        },
                    ]
                for body in submits:
                    status, got, _ = await col.post(http, "submit", f"{api}/scans", body)
                    if status in (200, 202):
                        ids.append(got["task_id"])
                # the same idempotency key again (a 200 duplicate) and refused requests
                await col.post(http, "submit", f"{api}/scans", submits[3])
                for bad in (
                    {
                        "targets": "10.9.9.1",
                        "ssh_username": "u",
                        "ssh_password": canaries["refused_request"],
                    },
                    {
                        "targets": "10.9.9.2",
                        "scan_type": "authenticated",
                        "credential": "canary",
                        "ssh_password": canaries["refused_request"],
                    },
                    {
                        "targets": "10.9.9.3",
                        "scan_type": "authenticated",
                        "ssh_username": "u",
                        "ssh_password": canaries["refused_request"],
                        "no_such_field": canaries["refused_request"],
                    },
                    {
                        "targets": "not a target !!",
                        "scan_type": "authenticated",
                        "ssh_username": "u",
                        "ssh_password": canaries["refused_request"],
                    },
                ):
                    await col.post(http, "submit_refused", f"{api}/scans", bad)
                h = await mcp_session(http, col, base)
                mcp_present = h is not None
                rpc = 10
                if h is not None:
                    got = await mcp_call(
                        http,
                        col,
                        base,
                        h,
                        rpc,
                        "run_authenticated_scan",
                        {
                            "targets": "10.9.8.1",
                            "ssh_username": "canary-user",
                            "ssh_password": canaries["inline_mcp"],
                        },
                    )
                    rpc += 1
                    sc = (got or {}).get("result", {}).get("structuredContent") or {}
                    if sc.get("task_id"):
                        ids.append(sc["task_id"])
                    else:
                        log(f"MCP run_authenticated_scan gave no task_id: {str(got)[:300]}")
                log(f"{len(ids)} scans submitted; waiting for them to end")
                last = await wait_terminal(
                    http, api.removesuffix("/api/v1"), ids, deadline_s=30 if args.quick else 60
                )
                # read back everything an operator or an agent can read
                for t in ids:
                    await col.get(http, "scan_view", f"{api}/scans/{t}")
                    await col.get(http, "results", f"{api}/scans/{t}/results?page_size=500")
                    await col.get(http, "export", f"{api}/scans/{t}/export")
                    await col.get(http, "compare", f"{api}/scans/{t}/compare")
                    await col.get(http, "dlq", f"{api}/dlq/{t}")
                    if h is not None:
                        for tool, a in (
                            ("get_scan_status", {"task_id": t}),
                            ("get_scan_results", {"task_id": t, "schema_profile": "full"}),
                        ):
                            await mcp_call(http, col, base, h, rpc, tool, a)
                            rpc += 1
                if h is not None:
                    for tool in ("list_tasks", "list_scanners", "list_pools", "get_queue_status"):
                        await mcp_call(http, col, base, h, rpc, tool, {})
                        rpc += 1
                for group, path in (
                    ("list", "/scans?limit=500"),
                    ("pools", "/pools"),
                    ("scanners", "/scanners"),
                    ("dlq", "/dlq?limit=500"),
                    ("openapi", "/openapi.json"),
                ):
                    await col.get(http, group, f"{api}{path}")
                await col.get(http, "readyz", f"{base}/readyz")
                await col.get(http, "metrics", f"{base}/metrics")
                tasks = await all_tasks(http, base)
                running_files = storage_counts(data_dir, canaries)
            rc = await daemon.stop(signal.SIGTERM)
            stopped_files = storage_counts(data_dir, canaries)
        finally:
            await daemon.kill()
            await sim.stop()

    statuses: dict[str, int] = defaultdict(int)
    for t in ids:
        v = last.get(t)
        statuses[f"{v['status']}/{v.get('reason')}" if v else "missing"] += 1
    stderr = daemon.text().encode()
    table: dict[str, dict[str, int]] = {}
    table["daemon log (stderr)"] = {n: count_in(stderr, c) for n, c in canaries.items()}
    for group in sorted(col.bodies):
        blob = b"\n".join(col.bodies[group])
        table[f"responses: {group} ({len(col.bodies[group])})"] = {
            n: count_in(blob, c) for n, c in canaries.items()
        }
    table[f"storage files while running ({running_files[2]})"] = running_files[0]
    table[f"storage files after stop ({stopped_files[2]})"] = stopped_files[0]
    total = sum(sum(r.values()) for r in table.values())
    stuck = sum(1 for t in ids if (v := last.get(t)) is None or v["status"] not in TERMINAL)
    names = list(canaries)
    width = max(len(k) for k in table)
    print(f"\n{'where':<{width}}  " + "  ".join(f"{n:>17}" for n in names))
    for where, row in table.items():
        print(f"{where:<{width}}  " + "  ".join(f"{row.get(n, 0):>17}" for n in names))
    rows: list[tuple[str, Any]] = [
        ("scans submitted (admin API + MCP)", len(ids)),
        ("final statuses", dict(statuses)),
        ("tasks stored", len(tasks)),
        ("MCP endpoint checked", mcp_present),
        ("log lines read", len(daemon.lines)),
        ("storage files read (running / stopped)", f"{running_files[2]} / {stopped_files[2]}"),
        ("canary occurrences, total", total),
        ("final SIGTERM exit code", rc),
    ]
    rows += [("  found in", x) for x in (running_files[1] + stopped_files[1])[:10]]
    result = {
        "canary_total": total,
        "canary_counts": {k: sum(v.values()) for k, v in table.items()},
        "scans": len(ids),
        "stuck": stuck,
        "mcp_checked": mcp_present,
        "clean_exit": rc,
    }
    ok = total == 0 and stuck == 0 and len(ids) >= 9 and rc == 0
    return report("canary: secrets never leave", rows, result, ok)


if __name__ == "__main__":
    run(main)
