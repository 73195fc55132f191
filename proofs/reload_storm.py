"""A storm of SIGHUPs under a steady submit load: valid configs that resize, add and remove
scanners, with broken files among them. No task is lost, every valid file is applied, every
broken one refused (old config kept), the daemon keeps serving, and at the end the scanners
it runs are exactly the ones the final file lists.

After each SIGHUP the script waits (bounded) until ``nessus_pool_config_reloads_total`` moves,
so that signals are not merged by the kernel and every reload is accounted for.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from _harness import (
    Daemon,
    Load,
    Simulator,
    all_tasks,
    daemon_config,
    duplicate_counts,
    free_port,
    get_json,
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

_RELOADS = re.compile(r'^nessus_pool_config_reloads_total\{result="(\w+)"\} ([0-9.e+]+)$', re.M)
BROKEN = (
    ("toml_syntax", "[[pools]\nname = 'lan'\n"),
    ("validation", "[[pools]]\nname = 'lan'\nmax-queued = 0\n"),
    ("unknown_key", "[[pools]]\nname = 'lan'\nmax-queud = 10\n"),
)


async def reload_counts(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    return {k: int(float(v)) for k, v in _RELOADS.findall(text)}


def valid_configs(
    tmp: Path, sim: Simulator, port: int
) -> list[tuple[str, dict[str, Any], set[str]]]:
    def cfg(ids: list[int], cap: int) -> dict[str, Any]:
        return daemon_config(tmp, sim, port, scanners=ids, cap=cap)

    return [
        ("s0,s1 cap 2", cfg([0, 1], 2), {"s0", "s1"}),
        ("s0 cap 2 (s1 removed)", cfg([0], 2), {"s0"}),
        ("s0,s1,s2 cap 3", cfg([0, 1, 2], 3), {"s0", "s1", "s2"}),
        ("s0,s2 cap 1 (s1 removed)", cfg([0, 2], 1), {"s0", "s2"}),
        ("s0,s1,s2 cap 2", cfg([0, 1, 2], 2), {"s0", "s1", "s2"}),
    ]


async def hup(http: aiohttp.ClientSession, daemon: Daemon) -> bool:
    """SIGHUP, then wait (up to 10 s) until the reload is counted."""
    before = sum((await reload_counts(http, daemon.base)).values())
    daemon.send(signal.SIGHUP)
    for _ in range(200):
        if sum((await reload_counts(http, daemon.base)).values()) > before:
            return True
        await asyncio.sleep(0.05)
    return False


async def main() -> int:
    args = parse_args(__doc__ or "", cycles=(20, 100), duration=(0, 0))
    hups = args.cycles
    with tempdir("proof-reload-", args.keep) as tmp:
        sim = Simulator(scanners=3, scan_seconds=1.0, seed=3)
        await sim.start_sim()
        port = free_port()
        configs = valid_configs(tmp, sim, port)
        cfg_path = write_toml(tmp / "np.toml", configs[0][1])
        daemon = Daemon(cfg_path, port)
        sent = Counter[str]()
        unacknowledged = 0
        serving_errors = 0
        try:
            await daemon.start_daemon()
            async with aiohttp.ClientSession() as http:
                load = Load(
                    http,
                    daemon.base,
                    clients=4,
                    rate_per_s=4.0,
                    body=lambda n: {"targets": target_of(n), "name": f"reload-{n}"},
                )
                load.start()
                valid_i = 0
                t0 = time.monotonic()
                for i in range(hups):
                    before = await reload_counts(http, daemon.base)
                    if i % 5 == 4:
                        kind, text = BROKEN[(i // 5) % len(BROKEN)]
                        cfg_path.write_text(text)
                        sent[f"broken:{kind}"] += 1
                    else:
                        valid_i = (valid_i + 1) % len(configs)
                        write_toml(cfg_path, configs[valid_i][1])
                        sent["valid"] += 1
                    daemon.send(signal.SIGHUP)
                    for _ in range(200):  # up to 10 s for the reload to be counted
                        now = await reload_counts(http, daemon.base)
                        if sum(now.values()) > sum(before.values()):
                            break
                        await asyncio.sleep(0.05)
                    else:
                        unacknowledged += 1
                    st, _ = await get_json(http, f"{daemon.base}/healthz")
                    serving_errors += st != 200
                    await asyncio.sleep(0.15)
                storm_s = time.monotonic() - t0
                # settle: remove s1 while it runs scans, list it again at once (the full
                # config), then check the daemon runs exactly the scanners the file lists
                for _ in range(100):  # up to 5 s for s1 to be busy
                    _, sc = await get_json(http, f"{daemon.base}/api/v1/scanners")
                    if any(s["id"] == "s1" and s["active_scans"] for s in sc["scanners"]):
                        break
                    write_toml(cfg_path, configs[2][1])
                    await hup(http, daemon)
                    sent["valid"] += 1
                    await asyncio.sleep(0.05)
                _, final_cfg, final_ids = configs[2]
                for step in (configs[1][1], final_cfg):
                    write_toml(cfg_path, step)
                    unacknowledged += not await hup(http, daemon)
                    sent["valid"] += 1
                running_ids: set[str] = set()
                for _ in range(100):  # removed scanners drain: up to 10 s
                    _, sc = await get_json(http, f"{daemon.base}/api/v1/scanners")
                    running_ids = {s["id"] for s in sc["scanners"] if not s["draining"]}
                    if running_ids == final_ids:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2.0)
                await load.stop()
                log(f"storm done: {len(load.acked)} acknowledged; waiting for the end")
                last = await wait_terminal(
                    http, daemon.base, load.acked, deadline_s=30 if args.quick else 90
                )
                # new work still flows to every configured scanner
                stats_before = await sim_stats(http, sim)
                probe_ids = []
                for n in range(12):
                    async with http.post(
                        f"{daemon.base}/api/v1/scans", json={"targets": f"10.250.0.{n + 1}"}
                    ) as r:
                        if r.status == 202:
                            probe_ids.append((await r.json())["task_id"])
                probe_last = await wait_terminal(http, daemon.base, probe_ids, deadline_s=20)
                stats = await sim_stats(http, sim)
                counts = await reload_counts(http, daemon.base)
                tasks = await all_tasks(http, daemon.base)
                _, sc = await get_json(http, f"{daemon.base}/api/v1/scanners")
            rc = await daemon.stop(signal.SIGTERM)
        finally:
            await daemon.kill()
            await sim.stop()

    acked = set(load.acked)
    not_completed = sorted(
        f"{t}:{v['status'] if v else 'missing'}:{v.get('reason') if v else ''}"
        for t in acked
        if (v := last.get(t)) is None or v["status"] != "completed"
    )
    probe_ok = sum(1 for v in probe_last.values() if v and v["status"] == "completed")
    launched_after = {
        f"s{i}": stats[i]["launched"] - stats_before[i]["launched"] for i in range(sim.count)
    }
    dups = duplicate_counts(stats, tasks)
    duplicated = (
        dups["sim_duplicates"] + dups["cross_scanner_same_name"] + dups["created_beyond_attempts"]
    )
    broken_sent = sum(v for k, v in sent.items() if k.startswith("broken"))
    applied, refused = counts.get("applied", 0), counts.get("refused", 0)
    scanners_final = sorted(s["id"] for s in sc["scanners"])
    match = running_ids == final_ids and set(scanners_final) == final_ids
    idle_final = sorted(k for k in final_ids if launched_after.get(k, 0) == 0)
    result = {
        "sighups": sent.total(),
        "acknowledged": len(acked),
        "lost": len(not_completed),
        "duplicated": duplicated,
        "reloads_applied": applied,
        "reloads_refused": refused,
        "valid_sent": sent["valid"],
        "broken_sent": broken_sent,
        "unacknowledged_sighups": unacknowledged,
        "healthz_failures": serving_errors,
        "still_serves": probe_ok == len(probe_ids) and len(probe_ids) == 12,
        "scanners_match_config": match,
        "scanners_final": scanners_final,
        "configured_scanners_without_new_work": idle_final,
        "clean_exit": rc,
    }
    rows: list[tuple[str, Any]] = [
        ("SIGHUPs (storm + settle)", f"{sent.total()} ({hups} in {storm_s:.1f} s)"),
        ("valid files / broken files", f"{sent['valid']} / {broken_sent} {dict(sent)}"),
        ("reloads applied (metric)", f"{applied}  (expected {sent['valid']})"),
        ("reloads refused (metric)", f"{refused}  (expected {broken_sent})"),
        ("SIGHUPs not counted within 10 s", unacknowledged),
        ("acknowledged", len(acked)),
        ("lost (acknowledged, not completed)", len(not_completed)),
        ("duplicated", f"{duplicated}  {dups}"),
        ("/healthz failures during storm", serving_errors),
        ("still serves: 12 new scans completed", f"{probe_ok}/{len(probe_ids)}"),
        ("scanners at the end (config: s0,s1,s2)", scanners_final),
        ("scanners accepting work at the end", sorted(running_ids)),
        ("new launches per scanner after storm", launched_after),
        ("final SIGTERM exit code", rc),
    ]
    rows += [("  not completed", x) for x in not_completed[:10]]
    ok = (
        not not_completed
        and duplicated == 0
        and applied == sent["valid"]
        and refused == broken_sent
        and unacknowledged == 0
        and serving_errors == 0
        and result["still_serves"]
        and match
        and rc == 0
    )
    return report("reload storm: SIGHUP under load", rows, result, ok)


if __name__ == "__main__":
    run(main)
