"""Scale (issue 8 part 4): many simulated scanners, a deep queue, a long poll interval.

500 simulated scanners with 4 slots each (2,000 running scans) and 100,000 queued tasks at
a 10 s poll interval. Measures, over a window (default 300 s):
- freed slot -> next launch latency, p50/p99 (from the tasks' own timestamps: a slot is
  freed when a task ends; the next task dispatched to that scanner is launched when its
  `running` transition is stored),
- the daemon's CPU share (of one core) and RSS (median and max),
then stops the daemon (SIGTERM) and restarts it with everything still queued: time from
process start to `/readyz` 200.

There is no anchor to run beside it: the issue gives absolute targets (p99 < 50 ms, CPU <
50% of one core, RSS < 300 MB, ready in < 2 s). The queue is written straight into the
store before the first start (submitting 100,000 scans through the API is bench/submits.py's
job), so the first start is itself a restart with 100,000 queued.

    python bench/scale.py                 # 500 scanners, 100,000 queued, 300 s window
    python bench/scale.py --quick         # 50 scanners, 10,000 queued, 30 s window
    python bench/scale.py --store postgresql              # the same on PostgreSQL
    python bench/scale.py --store postgresql --daemons 2  # split over two daemons ([cluster])

With ``--daemons N`` (PostgreSQL and ``[cluster]`` only) the scanners are split into N zones
(scanner k belongs to daemon k mod N) and CPU and RSS are reported per daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tomli_w
from _common import describe, percentile, table
from _pg import STORES, fresh_database, pg_server

from nessus_pool.config import Config
from nessus_pool.models import Task
from nessus_pool.simulator.ports import free_port_range
from nessus_pool.store import BaseStore, Store, decode_task, make_store

EXE = str(Path(sys.executable).parent / "nessus-pool")


async def wait_line(stream: asyncio.StreamReader, needle: str, timeout_s: float) -> None:
    async def scan() -> None:
        while line := await stream.readline():
            if needle in line.decode(errors="replace"):
                return
        raise RuntimeError(f"stream ended before {needle!r}")

    await asyncio.wait_for(scan(), timeout_s)


async def drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1000
    return float("nan")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def open_store(work: Path, url: str | None) -> BaseStore:
    """The daemons' store: daemon 0's SQLite file, or the PostgreSQL database."""
    return make_store(url=url, sqlite_path=work / "data0" / "nessus-pool.db")


async def prefill(store: BaseStore, pool: str, n: int) -> None:
    await store.open()
    now = int(time.time() * 1000)
    for start in range(0, n, 5000):
        ops = [
            Store.op_save_task(
                Task(
                    task_id=f"q{i:08d}",
                    seq=i + 1,
                    pool=pool,
                    name=f"scale {i}",
                    targets=[f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"],
                    created_at_ms=now,
                    updated_at_ms=now,
                )
            )
            for i in range(start, min(n, start + 5000))
        ]
        await store.write(ops)
    await store.close()


def slot_latencies_ms(tasks: list[Task], window_start_ms: int) -> list[float]:
    """Pair each freed slot with the next launch on the same scanner."""
    by_scanner: dict[str, list[Task]] = {}
    for t in tasks:
        if t.scanner_id:
            by_scanner.setdefault(t.scanner_id, []).append(t)
    out: list[float] = []
    for ts in by_scanner.values():
        freed = sorted(
            t.finished_at_ms for t in ts if t.finished_at_ms and t.finished_at_ms >= window_start_ms
        )
        launches = sorted(
            (t.dispatched_at_ms, t.started_at_ms)
            for t in ts
            if t.dispatched_at_ms and t.started_at_ms
        )
        j = 0
        for f in freed:
            while j < len(launches) and launches[j][0] < f:
                j += 1
            if j == len(launches):
                break
            out.append(float(launches[j][1] - f))
            j += 1
    return out


#: ``taskset -c N`` prefixes (``--pin``): the daemon on one core, the simulator on the other
PIN: dict[str, list[str]] = {"daemon": [], "simulator": []}


def launch_split_ms(
    tasks: list[Task], created_ms: dict[str, int], window_start_ms: int
) -> dict[str, list[float]]:
    """Each freed slot -> next launch of :func:`slot_latencies_ms`, split into its steps: the
    freed slot to the dispatch (the dispatcher), the dispatch to the remote scan created (the
    durable "dispatching" commit and ``POST /scans``), created to running (``POST
    /scans/{id}/launch`` and the loop)."""
    by_scanner: dict[str, list[Task]] = {}
    for t in tasks:
        if t.scanner_id:
            by_scanner.setdefault(t.scanner_id, []).append(t)
    out: dict[str, list[float]] = {"freed -> dispatched": [], "dispatched -> created": [],
                                   "created -> running": []}  # fmt: skip
    for ts in by_scanner.values():
        freed = sorted(
            t.finished_at_ms for t in ts if t.finished_at_ms and t.finished_at_ms >= window_start_ms
        )
        launches = sorted(
            (t.dispatched_at_ms, t.started_at_ms, t.task_id)
            for t in ts
            if t.dispatched_at_ms and t.started_at_ms
        )
        j = 0
        for f in freed:
            while j < len(launches) and launches[j][0] < f:
                j += 1
            if j == len(launches):
                break
            dispatched, started, task_id = launches[j]
            out["freed -> dispatched"].append(float(dispatched - f))
            created = created_ms.get(task_id)
            if created is not None:
                out["dispatched -> created"].append(float(created - dispatched))
                out["created -> running"].append(float(started - created))
            j += 1
    return out


async def pg_backends(url: str | None) -> list[int]:
    """The server processes of the daemons' sessions on the run's database, when the server
    runs on this machine (their CPU is read from /proc like the daemons'): the commits,
    claims and findings the daemons send cost CPU there too, on the same two cores."""
    if url is None:
        return []
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [int(r[0]) for r in rows if Path(f"/proc/{r[0]}/stat").exists()]  # noqa: ASYNC240


async def start_daemon(cfg: Path, port: int) -> tuple[asyncio.subprocess.Process, float]:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *PIN["daemon"],
        EXE,
        "serve",
        "--config",
        str(cfg),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    while not ready(port):
        if proc.returncode is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        await asyncio.sleep(0.02)
    return proc, time.monotonic() - t0


async def amain(args: argparse.Namespace) -> int:
    n_sc, queued, window_s = args.scanners, args.queued, args.window_s
    work = Path(tempfile.mkdtemp(prefix="np-bench-scale-"))
    base = free_port_range(n_sc + args.daemons)
    port = base + n_sc
    print(
        describe(
            ["nessus-pool", "aiohttp", "aiosqlite", "msgspec"],
            {
                "scenario": f"{n_sc} simulated scanners x {args.slots} slots, {queued:,} queued, "
                f"poll {args.poll_s:g} s, scans {args.scan_s:g} s, window {window_s:g} s",
                "storage": f"{work}, store {args.store}, {args.daemons} daemon(s)",
                "simulator": f"{args.sim_procs} process(es)",
                "placement": "daemon on core 0, simulator on core 1 (taskset, --pin)"
                if args.pin
                else "daemon and simulator unpinned, on the same cores",
            },
        )
    )
    # --sim-procs N: the scanners split over N simulator processes (a real pool's scanners
    # are separate machines; one process answering all 500 queues a launch behind other
    # scanners' export builds, which measures the simulator)
    sims: list[asyncio.subprocess.Process] = []
    drains: list[asyncio.Future[None]] = []
    per = -(-n_sc // args.sim_procs)
    for first in range(0, n_sc, per):
        count = min(per, n_sc - first)
        sim = await asyncio.create_subprocess_exec(
            *PIN["simulator"],
            EXE,
            "simulate",
            "--port",
            str(base + first),
            "--scanners",
            str(count),
            "--scan-seconds",
            str(args.scan_s),
            "--seed",
            str(1 + first),
            "--plain-http",  # the daemon's scanner urls below are http://, as in earlier runs
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert sim.stdout is not None and sim.stderr is not None
        await wait_line(sim.stdout, f":{base + first + count - 1}", 120)
        drains += [
            asyncio.ensure_future(drain(sim.stdout)),
            asyncio.ensure_future(drain(sim.stderr)),
        ]
        sims.append(sim)
    ports = [port + 1 + i for i in range(args.daemons - 1)]
    ports.insert(0, port)
    cfgs = [work / f"np{i}.toml" for i in range(args.daemons)]
    for i, cfg in enumerate(cfgs):
        storage: dict[str, Any] = {"path": str(work / f"data{i}")}
        if args.storage_url:
            storage["url"] = args.storage_url
        data: dict[str, Any] = {
            "server": {"listen": f"127.0.0.1:{ports[i]}"},
            "storage": storage,
            "logging": {"level": "warning"},
            "pools": [
                {
                    "name": "scale",
                    "poll-interval-s": args.poll_s,
                    "max-queued": queued * 2,
                    "probe-interval-s": 60,
                    "scanners": [
                        {
                            "id": f"s{k}",
                            "url": f"http://127.0.0.1:{base + k}",
                            "access-key": "sim-access-key",
                            "secret-key": "sim-secret-key",
                            "max-concurrent-scans": args.slots,
                        }
                        for k in range(n_sc)
                    ],
                }
            ],
        }
        if args.daemons > 1:
            zone = [f"s{k}" for k in range(i, n_sc, args.daemons)]
            data["cluster"] = {"daemon-id": f"d{i}", "zone": zone}
        cfg.write_text(tomli_w.dumps(data))
    await prefill(open_store(work, args.storage_url), "scale", queued)
    try:
        started = [await start_daemon(cfg, p) for cfg, p in zip(cfgs, ports, strict=True)]
        procs = [proc for proc, _ in started]
        first_ready_s = max(s for _, s in started)
        print(f"first start with {queued:,} queued: ready in {first_ready_s:.2f} s")
        # let the scanners fill up, then measure a steady window
        warm_s = min(args.scan_s + 2 * args.poll_s, 60)
        await asyncio.sleep(warm_s)
        window_start_ms = int(time.time() * 1000)
        backends = await pg_backends(args.storage_url)
        pg_cpu0 = sum(cpu_s(pid) for pid in backends)
        cpu0, t0 = [cpu_s(p.pid) for p in procs], time.monotonic()
        sim_cpu0 = sum(cpu_s(sim.pid) for sim in sims)
        rss: list[list[float]] = [[] for _ in procs]
        while time.monotonic() - t0 < window_s:
            for i, p in enumerate(procs):
                rss[i].append(rss_mb(p.pid))
            await asyncio.sleep(1)
        cpu_share = [
            (cpu_s(p.pid) - c) / (time.monotonic() - t0) for p, c in zip(procs, cpu0, strict=True)
        ]
        sim_share = (sum(cpu_s(sim.pid) for sim in sims) - sim_cpu0) / (time.monotonic() - t0)
        pg_share = (sum(cpu_s(pid) for pid in backends) - pg_cpu0) / (time.monotonic() - t0)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            await asyncio.wait_for(p.wait(), 60)
        store = open_store(work, args.storage_url)
        await store.open()
        rows = await store._fetch("SELECT data FROM tasks")
        created_rows = await store._fetch(
            "SELECT task_id, MIN(at_ms) FROM task_events WHERE status = 'created' GROUP BY task_id"
        )
        await store.close()
        tasks = [decode_task(r[0]) for r in rows]
        still_queued = sum(1 for t in tasks if t.status.value == "queued")
        done = sum(1 for t in tasks if t.status.is_terminal)
        lat = slot_latencies_ms(tasks, window_start_ms)
        split = launch_split_ms(tasks, {r[0]: r[1] for r in created_rows}, window_start_ms)
        per_second: dict[int, int] = {}
        for t in tasks:
            if t.finished_at_ms and t.finished_at_ms >= window_start_ms:
                per_second[t.finished_at_ms // 1000] = (
                    per_second.get(t.finished_at_ms // 1000, 0) + 1
                )
        readies: list[float] = []
        for _ in range(3):
            proc, ready_s = await start_daemon(cfgs[0], ports[0])
            readies.append(ready_s)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
    finally:
        for sim in sims:
            sim.send_signal(signal.SIGTERM)
        for sim in sims:
            await asyncio.wait_for(sim.wait(), 30)
        for d in drains:
            d.cancel()
    names = [f"d{i} " if args.daemons > 1 else "" for i in range(args.daemons)]
    rows_out = [
        ["freed slot -> next launch p50 (ms)", f"{percentile(lat, 0.5):.1f}", "-", f"n={len(lat)}"],
        [
            "freed slot -> next launch p99 (ms)",
            f"{percentile(lat, 0.99):.1f}",
            "< 50",
            "met" if percentile(lat, 0.99) < 50 else "NOT met",
        ],
        *(
            [
                f"daemon {name}CPU (share of one core)",
                f"{share * 100:.0f}%",
                "< 50%",
                "met" if share < 0.5 else "NOT met",
            ]
            for name, share in zip(names, cpu_share, strict=True)
        ),
        ["simulator CPU (share of one core)", f"{sim_share * 100:.0f}%", "-", ""],
        *(
            [
                [
                    f"PostgreSQL backends CPU ({len(backends)} sessions)",
                    f"{pg_share * 100:.0f}%",
                    "-",
                    "a local server only",
                ]
            ]
            if backends
            else []
        ),
        *(
            [
                f"daemon {name}RSS median / max (MB)",
                f"{statistics.median(r):.0f} / {max(r):.0f}",
                "< 300",
                "met" if max(r) < 300 else "NOT met",
            ]
            for name, r in zip(names, rss, strict=True)
        ),
        [
            f"ready after restart with {still_queued:,} queued (s), median (min-max) of 3",
            f"{statistics.median(readies):.2f} ({min(readies):.2f}-{max(readies):.2f})",
            "< 2",
            "met" if statistics.median(readies) < 2 else "NOT met",
        ],
    ]
    print(
        table(
            f"Scale ({args.store}, {args.daemons} daemon(s)): {n_sc} scanners x {args.slots} "
            f"slots, {queued:,} queued ({done:,} finished during the run)",
            ["measure", "value", "target", "verdict"],
            rows_out,
        )
    )
    print(
        table(
            "Where a launch's latency goes (freed slot -> running, its steps; ms)",
            ["step", "p50", "p90", "p99", "max", "n"],
            [
                [
                    step,
                    f"{percentile(v, 0.5):.0f}",
                    f"{percentile(v, 0.9):.0f}",
                    f"{percentile(v, 0.99):.0f}",
                    f"{max(v) if v else float('nan'):.0f}",
                    str(len(v)),
                ]
                for step, v in split.items()
            ],
        )
    )
    if per_second:
        busiest = sorted(per_second.values(), reverse=True)
        print(
            f"\ncompletions in the window: {sum(busiest):,} in {len(busiest)} of "
            f"{int(window_s)} s; the busiest seconds: {', '.join(map(str, busiest[:5]))} "
            "(scans started together end together: the launches of a wave queue behind its "
            "exports and polls)"
        )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="50 scanners, 10,000 queued, 30 s")
    p.add_argument("--scanners", type=int, default=500)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--queued", type=int, default=100_000)
    p.add_argument("--window-s", type=float, default=300)
    p.add_argument("--poll-s", type=float, default=10)
    p.add_argument("--scan-s", type=float, default=60)
    p.add_argument(
        "--sim-procs",
        type=int,
        default=1,
        help="split the simulated scanners over this many simulator processes (default 1)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="run the daemon on core 0 and the simulated scanners on core 1 (taskset), so that "
        "the simulator's CPU does not share the daemon's core",
    )
    p.add_argument("--store", choices=STORES, default="sqlite")
    p.add_argument(
        "--pg-url",
        default=None,
        help="--store postgresql: a server to use (default $NESSUS_POOL_TEST_PG_URL, else a "
        "throwaway cluster); the run gets a fresh database on it",
    )
    p.add_argument(
        "--daemons", type=int, default=1, help="split the scanners over N daemons ([cluster])"
    )
    args = p.parse_args()
    if args.pin:
        PIN["daemon"], PIN["simulator"] = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    if args.quick:
        args.scanners, args.queued, args.window_s, args.scan_s = 50, 10_000, 30, 20
    if args.daemons > 1 and (
        args.store != "postgresql" or "cluster" not in Config.__struct_fields__
    ):
        p.error("--daemons > 1 needs --store postgresql and [cluster] (issue 14's coordination)")
    args.storage_url = None
    if args.store == "postgresql":
        with pg_server(args.pg_url) as server:
            return asyncio.run(_on_database(args, server))
    return asyncio.run(amain(args))


async def _on_database(args: argparse.Namespace, server: str) -> int:
    async with fresh_database(server) as url:
        args.storage_url = url
        return await amain(args)


if __name__ == "__main__":
    sys.exit(main())
