"""Scanner faults under a steady load: every task ends in a defined state (nothing stuck), dead
letters carry a reason, and the pool routes around a scanner that goes down.

Three simulated scanners s0..s2. s0 answers 20 % of calls with 5xx and hangs 5 % of them (the
client's timeout-s ends those); later s1 goes down (connections refused) for a while and comes
back. Clients submit the whole time. Printed: completed, failed / dead-lettered grouped by
reason, stuck (not terminal after the deadline: must be 0), duplicates (must be 0), and how
the pool reacted to the outage, read from the daemon's JSON log (``task_dispatching``,
``scanner_circuit_opened``) and the task views (``dispatched_at_ms``, ``finished_at_ms``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections import Counter
from typing import Any

import aiohttp
from _harness import (
    TERMINAL,
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
    sim_faults,
    sim_stats,
    target_of,
    tempdir,
    wait_terminal,
    write_toml,
)

POOL = {
    "poll-interval-s": 0.2,
    "retry-base-delay-s": 0.05,
    "retry-max-delay-s": 0.5,
    "breaker-failures": 3,
    "breaker-reset-s": 1.0,
    "probe-interval-s": 0.5,
    "max-attempts": 3,
    "scanner-lost-after-s": 120,
    "export-deadline-s": 30,
}


def _ts_ms(event: dict[str, Any]) -> int:
    stamp = dt.datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(stamp.replace(tzinfo=dt.UTC).timestamp() * 1000)


async def main() -> int:
    args = parse_args(__doc__ or "", duration=(12, 90))
    load_s = args.duration_s
    down_at_s, down_for_s = load_s * 0.25, load_s * 0.4
    with tempdir("proof-faults-", args.keep) as tmp:
        sim = Simulator(scanners=3, scan_seconds=1.0, seed=11)
        await sim.start_sim()
        port = free_port()
        cfg = write_toml(
            tmp / "np.toml", daemon_config(tmp, sim, port, cap=2, timeout_s=2, pool=POOL)
        )
        daemon = Daemon(cfg, port)
        try:
            await daemon.start_daemon()
            async with aiohttp.ClientSession() as http:
                await sim_faults(http, sim, 0, error_rate=0.2, hang_rate=0.05)
                load = Load(
                    http,
                    daemon.base,
                    clients=4,
                    rate_per_s=4.0,
                    body=lambda n: {"targets": target_of(n), "name": f"faults-{n}"},
                )
                t_start = time.time()
                load.start()
                await asyncio.sleep(down_at_s)
                await sim_faults(http, sim, 1, down_for_s=down_for_s)
                t_down_ms = int(time.time() * 1000)
                t_up_ms = t_down_ms + int(down_for_s * 1000)
                log(f"s1 down for {down_for_s:.1f} s")
                await asyncio.sleep(max(0.0, load_s - (time.time() - t_start)))
                await load.stop()
                log(f"load stopped: {len(load.acked)} acknowledged; waiting for the end")
                deadline_s = 30 if args.quick else 150
                last = await wait_terminal(http, daemon.base, load.acked, deadline_s=deadline_s)
                tasks = await all_tasks(http, daemon.base)
                stats = await sim_stats(http, sim)
                dlq_status, dlq = 0, {}
                async with http.get(f"{daemon.base}/api/v1/dlq?limit=500") as r:
                    dlq_status, dlq = r.status, await r.json()
            rc = await daemon.stop(signal.SIGTERM)
        finally:
            await daemon.kill()
            await sim.stop()

    acked = set(load.acked)
    final = {t: last.get(t) for t in acked}
    statuses = Counter(v["status"] if v else "missing" for v in final.values())
    stuck = sorted(
        f"{t}:{v['status']}:{v.get('scanner')}"
        for t, v in final.items()
        if v is not None and v["status"] not in TERMINAL
    )
    missing = statuses.get("missing", 0)
    failed_reasons = Counter(
        f"{v['reason']}{' (dead letter)' if v['dead_letter'] else ''} on {v['scanner']}"
        for v in final.values()
        if v is not None and v["status"] in ("failed", "timed_out", "canceled")
    )
    dups = duplicate_counts(stats, tasks)
    duplicated = (
        dups["sim_duplicates"] + dups["cross_scanner_same_name"] + dups["created_beyond_attempts"]
    )

    # the outage, from the daemon's log and the task views
    events = daemon.events()
    dispatches = [
        (e.get("scanner"), _ts_ms(e)) for e in events if e.get("event") == "task_dispatching"
    ]
    to_down = [ms for sc, ms in dispatches if sc == "s1" and t_down_ms <= ms < t_up_ms]
    first_elsewhere = min(
        (ms for sc, ms in dispatches if sc not in (None, "s1") and ms >= t_down_ms), default=None
    )
    breaker = min(
        (
            _ts_ms(e)
            for e in events
            if e.get("event") == "scanner_circuit_opened"
            and e.get("scanner") == "s1"
            and _ts_ms(e) >= t_down_ms
        ),
        default=None,
    )
    back = min((ms for sc, ms in dispatches if sc == "s1" and ms >= t_up_ms), default=None)
    done_elsewhere = min(
        (
            v["finished_at_ms"]
            for v in final.values()
            if v is not None
            and v["status"] == "completed"
            and v["scanner"] != "s1"
            and (v.get("dispatched_at_ms") or 0) >= t_down_ms
        ),
        default=None,
    )

    def since_down(ms: int | None, origin: int = t_down_ms) -> float | None:
        return None if ms is None else round((ms - origin) / 1000, 2)

    retries = Counter(e.get("scanner") for e in events if e.get("event") == "scanner_call_retry")
    dlq_reasons = (
        Counter(t.get("reason") for t in dlq.get("tasks", [])) if dlq_status == 200 else {}
    )
    result = {
        "acknowledged": len(acked),
        "completed": statuses.get("completed", 0),
        "failed": sum(failed_reasons.values()),
        "dead_lettered": sum(1 for v in final.values() if v and v["dead_letter"]),
        "failed_by_reason": dict(failed_reasons),
        "stuck": len(stuck),
        "lost": missing,
        "duplicated": duplicated,
        "dispatched_to_down_scanner": len(to_down),
        "first_dispatch_elsewhere_s": since_down(first_elsewhere),
        "last_dispatch_to_down_scanner_s": since_down(max(to_down, default=None)),
        "breaker_open_s": since_down(breaker),
        "first_completion_elsewhere_s": since_down(done_elsewhere),
        "back_in_rotation_after_up_s": since_down(back, t_up_ms),
        "clean_exit": rc,
    }
    rows: list[tuple[str, Any]] = [
        ("faults", f"s0 error 20 % + hang 5 %; s1 down {down_for_s:.1f} s at +{down_at_s:.1f} s"),
        ("acknowledged", len(acked)),
        ("completed", statuses.get("completed", 0)),
        ("failed (all)", sum(failed_reasons.values())),
    ]
    rows += [(f"  {reason}", n) for reason, n in failed_reasons.most_common()]
    rows += [
        ("dead-lettered", result["dead_lettered"]),
        ("DLQ (GET /api/v1/dlq) by reason", dict(dlq_reasons)),
        ("stuck (not terminal after deadline)", len(stuck)),
        ("missing (acknowledged, not found)", missing),
        ("duplicated", f"{duplicated}  {dups}"),
        ("scanner call retries by scanner", dict(retries)),
        ("outage: first dispatch elsewhere (s)", result["first_dispatch_elsewhere_s"]),
        ("outage: s1 circuit opened after (s)", result["breaker_open_s"]),
        ("outage: dispatches to s1 while down", len(to_down)),
        ("outage: last dispatch to s1 after (s)", result["last_dispatch_to_down_scanner_s"]),
        ("outage: first new task completed elsewhere (s)", result["first_completion_elsewhere_s"]),
        ("recovery: s1 dispatched again after up (s)", result["back_in_rotation_after_up_s"]),
        ("final SIGTERM exit code", rc),
    ]
    rows += [("  stuck", s) for s in stuck[:10]]
    errors = Counter(
        (v["scanner"], (v.get("error") or "")[:90])
        for v in final.values()
        if v is not None and v["dead_letter"]
    )
    rows += [(f"  dead letter on {sc}", f"{n} x {err}") for (sc, err), n in errors.most_common(5)]
    ok = not stuck and missing == 0 and duplicated == 0 and len(acked) > 0 and rc == 0
    return report("faults: flaky + hung + down scanner", rows, result, ok)


if __name__ == "__main__":
    run(main)
