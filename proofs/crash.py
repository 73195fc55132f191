"""SIGKILL under a steady submit load, restart, repeat: no acknowledged scan is lost, none is
created twice.

Clients keep POSTing /api/v1/scans the whole time (also while the daemon is down: those
requests fail and are not acknowledged). Each cycle SIGKILLs the daemon at a random moment
and starts it again on the same storage. At the end every acknowledged task must be
``completed``; the simulator must have no scan name created twice, and no more scans than the
stored tasks' attempts.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import aiohttp
from _harness import (
    Daemon,
    Load,
    Simulator,
    all_tasks,
    daemon_config,
    duplicate_counts,
    free_port,
    log,
    parse_args,
    report,
    run,
    sim_stats,
    target_of,
    tempdir,
    wait_terminal,
    write_toml,
)


async def main() -> int:
    args = parse_args(__doc__ or "", cycles=(2, 10), duration=(8, 60))
    rng = random.Random(7)
    cycle_s = max(1.5, args.duration_s / (args.cycles + 1))
    with tempdir("proof-crash-", args.keep) as tmp:
        sim = Simulator(scanners=3, scan_seconds=1.0)
        await sim.start_sim()
        port = free_port()
        cfg = write_toml(tmp / "np.toml", daemon_config(tmp, sim, port, cap=3))
        daemon = Daemon(cfg, port)
        restart_s: list[float] = []
        try:
            await daemon.start_daemon()
            async with aiohttp.ClientSession() as http:
                load = Load(
                    http,
                    daemon.base,
                    clients=4,
                    rate_per_s=5.0,
                    body=lambda n: {"targets": target_of(n), "name": f"crash-{n}"},
                )
                load.start()
                for c in range(args.cycles):
                    await asyncio.sleep(cycle_s * rng.uniform(0.5, 1.5))
                    before = len(load.acked)
                    await daemon.kill()
                    log(f"cycle {c + 1}: SIGKILL after {before} acknowledged")
                    t0 = time.monotonic()
                    await daemon.start_daemon()
                    restart_s.append(time.monotonic() - t0)
                await asyncio.sleep(cycle_s)
                await load.stop()
                log(f"load stopped: {len(load.acked)} acknowledged; waiting for the end")
                last = await wait_terminal(
                    http, daemon.base, load.acked, deadline_s=25 if args.quick else 120
                )
                tasks = await all_tasks(http, daemon.base)
                stats = await sim_stats(http, sim)
            rc = await daemon.stop(signal.SIGTERM)
        finally:
            await daemon.kill()
            await sim.stop()
    acked = set(load.acked)
    completed = sum(1 for t in acked if (v := last.get(t)) and v["status"] == "completed")
    missing = sum(1 for t in acked if last.get(t) is None)
    not_completed = sorted(
        f"{t}:{v['status']}:{v.get('reason')}"
        for t in acked
        if (v := last.get(t)) is not None and v["status"] != "completed"
    )
    lost = missing + len(not_completed)
    dups = duplicate_counts(stats, tasks)
    duplicated = (
        dups["sim_duplicates"] + dups["cross_scanner_same_name"] + dups["created_beyond_attempts"]
    )
    stored_not_acked = len({t["task_id"] for t in tasks} - acked)
    result = {
        "cycles": args.cycles,
        "acknowledged": len(acked),
        "completed": completed,
        "lost": lost,
        "duplicated": duplicated,
        "stored_not_acknowledged": stored_not_acked,
        "tasks_stored": len(tasks),
        **dups,
        "restart_s_max": round(max(restart_s, default=0), 2),
        "clean_exit": rc,
    }
    rows = [
        ("SIGKILL cycles", args.cycles),
        ("acknowledged (202)", len(acked)),
        ("completed", completed),
        ("lost", f"{lost}  (missing {missing}, not completed {len(not_completed)})"),
        ("duplicated", duplicated),
        ("  simulator duplicate names", dups["sim_duplicates"]),
        ("  same name on two scanners", dups["cross_scanner_same_name"]),
        (
            "  created beyond attempts",
            f"{dups['created_beyond_attempts']}  "
            f"(created {dups['created']}, tasks stored {len(tasks)})",
        ),
        ("stored, answer lost in the kill", stored_not_acked),
        ("submits sent / failed", f"{load.sent} / {sum(load.errors.values())} {load.errors}"),
        (
            "restart to daemon_ready (s)",
            f"max {max(restart_s, default=0):.2f}, "
            f"mean {sum(restart_s) / max(1, len(restart_s)):.2f}",
        ),
        ("final SIGTERM exit code", rc),
    ]
    for line in not_completed[:10]:
        rows.append(("  not completed", line))
    ok = lost == 0 and duplicated == 0 and len(acked) > 0 and rc == 0
    return report("crash: SIGKILL under load", rows, result, ok)


if __name__ == "__main__":
    run(main)
