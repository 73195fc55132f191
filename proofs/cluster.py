"""Several daemons on one PostgreSQL under kill -9 and a database restart: no acknowledged
task lost, no scan created twice, per-scanner caps held, every task ended, and a killed
daemon's scanners taken over within lease-s + 2 s.

Three daemon processes (the installed ``nessus-pool serve``) share one pool of simulated
scanners (``nessus-pool simulate``, max-concurrent-scans = 2) through one throwaway
PostgreSQL (``scripts/pg-test-cluster``). Tasks are submitted round-robin through all the
daemons, each with an idempotency key, and sent again (to the next daemon) while the one
asked is down or answers 503: a task is acknowledged by its first 202 (or 200 duplicate).
Meanwhile, every ``--kill-every-s`` a random daemon is SIGKILLed; the proof watches the
database's ``scanner_leases`` until every scanner the dead daemon held has a new epoch
(the takeover), then starts it again. PostgreSQL is restarted once in the middle.

Until the config loader knows ``[cluster]`` (the coordination of issue 14), one daemon only
runs (``--daemons 1``, the default then): kill -9 + restart and the PostgreSQL restart, with
the same counts (lost 0, duplicated 0, caps held, every task ended); takeover is then the
restart itself and has no bound to meet.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from _harness import (
    KEYS,
    TERMINAL,
    Daemon,
    Simulator,
    all_tasks,
    duplicate_counts,
    free_port,
    log,
    report,
    run,
    sim_stats,
    target_of,
    tempdir,
    wait_terminal,
    write_toml,
)

from nessus_pool.config import Config

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / "scripts" / "pg-test-cluster"
CAP = 2
#: True once the config loader knows [cluster] (several daemons may share a database)
CLUSTER_KNOWN = "cluster" in Config.__struct_fields__


def parse() -> Any:
    import argparse

    p = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the CI size (< 60 s)")
    p.add_argument("--daemons", type=int, default=None, help="default 3 (1 without [cluster])")
    p.add_argument("--scanners", type=int, default=None)
    p.add_argument("--tasks", type=int, default=None)
    p.add_argument("--kill-every-s", type=float, default=None)
    p.add_argument("--chaos-s", type=float, default=None, help="how long kills go on")
    p.add_argument("--lease-s", type=float, default=None)
    p.add_argument("--scan-seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args()
    quick = {"scanners": 4, "tasks": 40, "kill_every_s": 6.0, "chaos_s": 7.0, "lease_s": 3.0,
             "scan_seconds": 1.5}  # fmt: skip
    full = {"scanners": 20, "tasks": 600, "kill_every_s": 15.0, "chaos_s": 120.0,
            "lease_s": 15.0, "scan_seconds": 5.0}  # fmt: skip
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.daemons is None:
        a.daemons = 3 if CLUSTER_KNOWN else 1
    if a.daemons > 1 and not CLUSTER_KNOWN:
        p.error("--daemons > 1 needs [cluster] in the config loader (issue 14's coordination)")
    return a


# --- PostgreSQL ------------------------------------------------------------------------------


class Postgres:
    """A throwaway cluster of the proof's own, through ``scripts/pg-test-cluster``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.url = ""

    def start(self) -> None:
        out = subprocess.run(
            [str(PG_SCRIPT), "start", str(self.dir)], check=True, capture_output=True, text=True
        )
        self.url = out.stdout.strip()

    def stop(self) -> None:
        subprocess.run([str(PG_SCRIPT), "stop", str(self.dir)], check=False, capture_output=True)

    async def leases(self) -> dict[str, tuple[str, int, int]] | None:
        """scanner -> (owner, epoch, expires_at_ms); None while unreachable or before the
        cluster tables exist."""
        try:
            conn = await asyncpg.connect(self.url, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            rows = await conn.fetch(
                "SELECT scanner_id, owner, epoch, expires_at_ms FROM scanner_leases"
            )
        except asyncpg.PostgresError:
            return None
        finally:
            await conn.close()
        return {r[0]: (str(r[1]), int(r[2]), int(r[3])) for r in rows}


# --- configuration ---------------------------------------------------------------------------


def daemon_toml(tmp: Path, a: Any, sim: Simulator, pg_url: str, i: int, port: int) -> Path:
    data: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "shutdown-grace-s": 2},
        "storage": {"path": str(tmp / f"d{i}"), "url": pg_url},
        "logging": {"format": "json"},
        "pools": [
            {
                "name": "lan",
                "poll-interval-s": 0.2,
                "max-queued": 20000,
                "scanners": [
                    {
                        "id": f"s{k}",
                        "url": sim.url(k),
                        "max-concurrent-scans": CAP,
                        "timeout-s": 3,
                        **KEYS,
                    }
                    for k in range(sim.count)
                ],
            }
        ],
    }
    if a.daemons > 1:
        data["cluster"] = {"daemon-id": f"d{i}", "lease-s": a.lease_s}
    return write_toml(tmp / f"d{i}.toml", data)


# --- submitting --------------------------------------------------------------------------


class Submitter:
    """Tasks 0..n-1, round-robin over the daemons, each with an idempotency key and sent
    again to the next daemon while refused (down, 503): bounded per task."""

    def __init__(self, http: aiohttp.ClientSession, daemons: list[Daemon], n: int) -> None:
        self.http = http
        self.daemons = daemons
        self.n = n
        self.acked: dict[int, str] = {}
        self.refused: dict[str, int] = {}
        self.given_up: list[int] = []
        self.retry_after_seen: list[int] = []

    def _count(self, what: str) -> None:
        self.refused[what] = self.refused.get(what, 0) + 1

    async def one(self, k: int, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        body = {"targets": target_of(k), "name": f"cluster-{k}", "idempotency_key": f"cp-{k}"}
        tries = 0
        while time.monotonic() < end:
            d = self.daemons[(k + tries) % len(self.daemons)]
            tries += 1
            wait_s = 0.2
            try:
                async with self.http.post(
                    f"{d.base}/api/v1/scans", json=body, timeout=aiohttp.ClientTimeout(total=15)
                ) as r:
                    data = await r.json(content_type=None)
                    if r.status in (200, 202):
                        self.acked[k] = data["task_id"]
                        return
                    self._count(f"http_{r.status}:{data.get('error', {}).get('code')}")
                    if "Retry-After" in r.headers:
                        after = int(r.headers["Retry-After"])
                        self.retry_after_seen.append(after)
                        wait_s = min(float(after), 2.0)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self._count(type(exc).__name__)
            await asyncio.sleep(wait_s)
        self.given_up.append(k)

    async def run(self, rate_per_s: float, per_task_s: float) -> None:
        sem = asyncio.Semaphore(16)

        async def go(k: int) -> None:
            async with sem:
                await self.one(k, per_task_s)

        jobs = []
        t0 = time.monotonic()
        for k in range(self.n):
            delay = t0 + k / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            jobs.append(asyncio.create_task(go(k)))
        await asyncio.gather(*jobs)


# --- chaos -------------------------------------------------------------------------------


async def takeover_s(pg: Postgres, victim: str, before: dict[str, tuple[str, int, int]],
                     t_kill: float, bound_s: float) -> float | None:  # fmt: skip
    """Seconds from the kill until every scanner ``victim`` held has a new epoch (None if
    it held none; ``bound_s`` + the kill time if it never happened)."""
    held = {sid: epoch for sid, (owner, epoch, _) in before.items() if owner == victim}
    if not held:
        return None
    while time.monotonic() - t_kill < bound_s:
        now = await pg.leases()
        if now is not None and all(
            sid in now and now[sid][1] > epoch and now[sid][0] != victim
            for sid, epoch in held.items()
        ):
            return time.monotonic() - t_kill
        await asyncio.sleep(0.1)
    return bound_s


async def kill_and_restart(a: Any, pg: Postgres, daemons: list[Daemon], i: int, n: str,
                           out: dict[str, Any]) -> None:  # fmt: skip
    """SIGKILL daemon ``i``; with several daemons wait (bounded) until the others have
    taken its scanners over, then start it again (as systemd's Restart= would)."""
    d = daemons[i]
    before = (await pg.leases() or {}) if a.daemons > 1 else {}
    t_kill = time.monotonic()
    await d.kill()
    log(f"{n}: SIGKILL d{i}")
    if a.daemons > 1:
        took = await takeover_s(pg, f"d{i}", before, t_kill, a.lease_s + 10)
        if took is not None:
            out["takeover_s"].append(took)
            log(f"  d{i}'s scanners taken over after {took:.2f} s")
    t0 = time.monotonic()
    await d.start_daemon()
    out["restart_s"].append(time.monotonic() - t0)


async def chaos(a: Any, pg: Postgres, daemons: list[Daemon], rng: random.Random,
                out: dict[str, Any]) -> None:  # fmt: skip
    """On one timeline from now: a kill every ``kill_every_s`` within ``chaos_s`` (each
    measured and restarted in the background; a kill waits until the previous victim is
    back), and one PostgreSQL restart in the middle, once no takeover is being measured (a
    takeover that spans the restart would measure the restart)."""
    kills = max(1, int(a.chaos_s // a.kill_every_s))
    pg_at_s = min(a.chaos_s / 2, a.kill_every_s / 2) if kills == 1 else a.chaos_s / 2
    events = sorted([(k * a.kill_every_s, "kill") for k in range(1, kills + 1)] + [(pg_at_s, "pg")])
    t0 = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    killed = 0
    for at_s, what in events:
        await asyncio.sleep(max(0.0, t0 + at_s - time.monotonic()))
        if what == "pg":
            if pending:
                await asyncio.gather(*pending)
            log("PostgreSQL: restart")
            t_pg = time.monotonic()
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(pg.start)
            out["pg_restart_s"] = round(time.monotonic() - t_pg, 2)
            continue
        if pending:
            # one daemon down at a time: the bound is about a single failure (with two of
            # three down, the last one carries every scanner); the cadence slips instead
            late_s = time.monotonic()
            await asyncio.gather(*pending)
            out["kill_delayed_s"].append(time.monotonic() - late_s)
        before = (await pg.leases() or {}) if a.daemons > 1 else {}
        holders = {owner for owner, _, _ in before.values()}
        up = [k for k in range(len(daemons)) if daemons[k].running]
        # a random live daemon among those that hold a lease (one holding none has
        # nothing to take over: its kill would measure nothing)
        pick = [k for k in up if f"d{k}" in holders] or up
        killed += 1
        job = asyncio.create_task(
            kill_and_restart(a, pg, daemons, rng.choice(pick), f"kill {killed}/{kills}", out)
        )
        pending.add(job)
        job.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


# --- main --------------------------------------------------------------------------------


async def main() -> int:
    a = parse()
    rng = random.Random(a.seed)
    out: dict[str, Any] = {"takeover_s": [], "restart_s": [], "kill_delayed_s": []}
    # its own folder: as root the script hands it to the postgres user, who cannot enter
    # the proof's private temporary directory
    with tempdir("proof-cluster-", a.keep) as tmp, tempdir("proof-cluster-pg-") as pg_dir:
        pg = Postgres(pg_dir)
        await asyncio.to_thread(pg.start)
        sim = Simulator(scanners=a.scanners, scan_seconds=a.scan_seconds)
        daemons: list[Daemon] = []
        try:
            await sim.start_sim()
            for i in range(a.daemons):
                port = free_port()
                daemons.append(Daemon(daemon_toml(tmp, a, sim, pg.url, i, port), port))
            await asyncio.gather(*(d.start_daemon() for d in daemons))
            log(f"{a.daemons} daemon(s), {a.scanners} scanners x {CAP}, {a.tasks} tasks")
            async with aiohttp.ClientSession() as http:
                sub = Submitter(http, daemons, a.tasks)
                # submits spread over the whole chaos window: some meet the kills and the
                # PostgreSQL restart
                rate = a.tasks / max(1.0, a.chaos_s * 0.9)
                submitting = asyncio.create_task(sub.run(rate, per_task_s=a.chaos_s + 60))
                await chaos(a, pg, daemons, rng, out)
                await submitting
                acked = list(sub.acked.values())
                log(f"{len(acked)} acknowledged; waiting for every task to end")
                deadline = 45 if a.quick else 300
                base = daemons[0].base
                last = await wait_terminal(http, base, acked, deadline_s=deadline)
                tasks = await all_tasks(http, base)
                stats = await sim_stats(http, sim)
                disagree = await disagreements(http, daemons, acked)
            codes = [await d.stop(signal.SIGTERM) for d in daemons]
        finally:
            for d in daemons:
                await d.kill()
            await sim.stop()
            await asyncio.to_thread(pg.stop)
    return verdict(a, out, sub, acked, last, tasks, stats, disagree, codes)


async def disagreements(http: aiohttp.ClientSession, daemons: list[Daemon], ids: list[str]) -> int:
    """Tasks whose status differs between two daemons (a read from any daemon must give
    the same answer)."""
    if len(daemons) < 2:
        return 0
    from _harness import views

    seen = [await views(http, d.base, ids) for d in daemons]
    return sum(
        1 for t in ids if len({(v or {}).get("status") for v in (s.get(t) for s in seen)}) > 1
    )


def verdict(a: Any, out: dict[str, Any], sub: Submitter, acked: list[str],
            last: dict[str, Any], tasks: list[dict[str, Any]], stats: list[dict[str, Any]],
            disagree: int, codes: list[int | None]) -> int:  # fmt: skip
    lost = sum(1 for t in acked if last.get(t) is None)
    not_ended = sorted(t for t in acked if (v := last.get(t)) and v["status"] not in TERMINAL)
    not_completed = sorted(
        f"{t}:{v['status']}:{v.get('reason')}"
        for t in acked
        if (v := last.get(t)) is not None and v["status"] in TERMINAL and v["status"] != "completed"
    )
    dups = duplicate_counts(stats, tasks)
    duplicated = (
        dups["sim_duplicates"] + dups["cross_scanner_same_name"] + dups["created_beyond_attempts"]
    )
    peaks = [int(s["peak_running"]) for s in stats]
    over_cap = sum(1 for p in peaks if p > CAP)
    took = sorted(out["takeover_s"])
    bound = a.lease_s + 2.0
    takeover_ok = a.daemons == 1 or (bool(took) and max(took) <= bound)
    result = {
        "daemons": a.daemons,
        "scanners": a.scanners,
        "tasks": a.tasks,
        "acknowledged": len(acked),
        "given_up": len(sub.given_up),
        "lost": lost,
        "not_ended": len(not_ended),
        "not_completed": len(not_completed),
        "duplicated": duplicated,
        **dups,
        "peak_concurrency_max": max(peaks, default=0),
        "scanners_over_cap": over_cap,
        "kills": len(out["restart_s"]),
        "takeover_p50_s": round(statistics.median(took), 2) if took else None,
        "takeover_max_s": round(max(took), 2) if took else None,
        "takeover_bound_s": bound,
        "restart_max_s": round(max(out["restart_s"], default=0), 2),
        "kill_delayed_max_s": round(max(out["kill_delayed_s"], default=0), 2),
        "pg_restart_s": out.get("pg_restart_s"),
        "status_disagreements": disagree,
        "retry_after_max_s": max(sub.retry_after_seen, default=None),
        "clean_exits": codes,
    }
    rows = [
        ("daemons / scanners x cap", f"{a.daemons} / {a.scanners} x {CAP}"),
        ("tasks acknowledged", f"{len(acked)} of {a.tasks} (given up {len(sub.given_up)})"),
        ("lost", lost),
        ("not ended", len(not_ended)),
        ("ended, not completed", len(not_completed)),
        ("duplicated", f"{duplicated}  (scans created {dups['created']})"),
        ("peak concurrency per scanner", f"max {max(peaks, default=0)} (cap {CAP})"),
        ("kills (SIGKILL)", len(out["restart_s"])),
        (
            "takeover after kill -9 (s)",
            f"p50 {result['takeover_p50_s']}, max {result['takeover_max_s']} (bound {bound:g})"
            if a.daemons > 1
            else "one daemon: the restart is the takeover",
        ),
        ("restart to daemon_ready (s)", f"max {result['restart_max_s']}"),
        ("kills delayed for the last victim (s)", f"max {result['kill_delayed_max_s']}"),
        ("PostgreSQL restart (s)", out.get("pg_restart_s")),
        ("submits refused meanwhile", f"{sum(sub.refused.values())} {sub.refused}"),
        ("status disagreements", disagree),
        ("final SIGTERM exit codes", codes),
    ]
    for line in (not_completed + not_ended)[:10]:
        rows.append(("  not completed", line))
    ok = (
        len(acked) == a.tasks
        and lost == 0
        and not not_ended
        and not not_completed
        and duplicated == 0
        and over_cap == 0
        and takeover_ok
        and out.get("pg_restart_s") is not None
        and disagree == 0
        and all(c == 0 for c in codes)
    )
    return report("cluster: kill -9 and a PostgreSQL restart", rows, result, ok)


if __name__ == "__main__":
    run(main)
