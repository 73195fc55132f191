"""A hostile scanner cannot strand scans, leak secrets or blow up memory: each pool of a live
daemon (the installed ``nessus-pool serve``) talks to a hostile fake scanner (a real aiohttp
app on 127.0.0.1, ``tests/hostile_scanner.py``) that gives one bad answer for ever:

- deep_status: ``GET /scans/{id}`` nested 200,000 levels deep
- huge_status: ``GET /scans/{id}`` a valid JSON body of 64 MiB (quick) / 500 MiB (full)
- disconnect: ``GET /scans/{id}`` drops the connection
- stuck_loading: the export status says ``loading`` for ever
- drip_export: the download sends one byte per 0.5 s (quick) / 3 s (full)
- error_secret: ``POST /scans`` fails with an error text echoing the escalation password
  (at the 200-character cut) and, in a second task, a password with runs of whitespace

Per attack it prints held / FAILED with: tasks stranded (not ended by the bound), how each
ended and after how long, secrets found in API answers, the log or the storage files. For
the daemon: HTTP 5xx seen (``/healthz`` and the API are polled throughout), RSS at start and
its peak (``VmHWM``).

An export attack ends within one ``export-deadline-s`` (plus one drip and the scan itself):
the client enforces one deadline over the whole export and the engine's retries share it;
the ratio to the deadline is printed.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from _harness import Daemon, free_port, get_json, log, parse_args, report, run, tempdir, write_toml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hostile_scanner import ATTACKS, HostileScanner

KEYS = {"access-key": "hostile-access-key", "secret-key": "hostile-secret-key"}
MAX_ATTEMPTS = 2


def _pool(attack: str, url: str, quick: bool) -> dict[str, Any]:
    return {
        "name": attack.replace("_", "-"),
        "poll-interval-s": 0.1,
        "probe-interval-s": 0.5,
        "scanner-lost-after-s": 3.0 if quick else 10.0,
        "export-deadline-s": 4.0 if quick else 40.0,
        "retry-base-delay-s": 0.05,
        "retry-max-delay-s": 0.2,
        "max-attempts": MAX_ATTEMPTS,
        "scanners": [{"id": f"h-{attack}", "url": url, "timeout-s": 5.0, **KEYS}],
    }


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Watch:
    """Polls /healthz and counts 5xx answers while the attacks run."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.requests = 0
        self.errors_5xx = 0
        self.max_health_s = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            status, _ = await get_json(self.http, f"{self.base}/healthz")
            self.max_health_s = max(self.max_health_s, time.monotonic() - t0)
            self.count(status)
            await asyncio.sleep(0.1)

    def count(self, status: int) -> None:
        self.requests += 1
        self.errors_5xx += status >= 500


async def main() -> int:
    args = parse_args(__doc__ or "")
    quick = bool(args.quick)
    canary_esc = f"CANARY-ESC-{secrets.token_hex(8)}"
    canary_ws = f"CANARY  ws\t run {secrets.token_hex(6)}"
    scanners = {a: HostileScanner(a) for a in ATTACKS}
    drip_s = 0.5 if quick else 3.0
    for h in scanners.values():
        h.huge_bytes = (64 if quick else 500) * 1024 * 1024
        h.drip_bytes = 100_000

    async def drip() -> None:
        await asyncio.sleep(drip_s)

    scanners["drip_export"].on_drip = drip
    for h in scanners.values():
        await h.start()
    rows: list[tuple[str, Any]] = []
    result: dict[str, Any] = {"attacks": {}}
    ok = True
    with tempdir("proof-attack-scanner-", args.keep) as tmp:
        port = free_port()
        pools = [_pool(a, scanners[a].url, quick) for a in ATTACKS]
        cfg = write_toml(
            tmp / "np.toml",
            {
                "server": {"listen": f"127.0.0.1:{port}"},
                "storage": {"path": str(tmp / "data")},
                "logging": {"format": "json", "level": "debug"},
                "pools": pools,
            },
        )
        daemon = Daemon(cfg, port)
        try:
            await daemon.start_daemon()
            assert daemon.proc is not None
            rss_start_kib, _ = _rss_kib(daemon.proc.pid)
            api = f"{daemon.base}/api/v1"
            async with aiohttp.ClientSession() as http:
                watch = Watch(http, daemon.base)
                stop = asyncio.Event()
                watcher = asyncio.create_task(watch.run(stop))
                submitted: dict[str, list[tuple[str, float]]] = {}
                for attack in ATTACKS:
                    bodies: list[dict[str, Any]] = [{"targets": "10.0.0.1"}]
                    if attack == "error_secret":
                        bodies = [
                            {
                                "targets": "10.0.0.1",
                                "scan_type": "authenticated_privileged",
                                "ssh_username": "audit",
                                "ssh_password": f"ssh-{canary_esc}",
                                "escalation_password": canary_esc,
                            },
                            {
                                "targets": "10.0.0.2",
                                "scan_type": "authenticated",
                                "ssh_username": "audit",
                                "ssh_password": canary_ws,
                            },
                        ]
                    for body in bodies:
                        body["pool"] = attack.replace("_", "-")
                        async with http.post(f"{api}/scans", json=body) as r:
                            watch.count(r.status)
                            answer = await r.json()
                        if r.status != 202:
                            raise RuntimeError(f"submit for {attack}: {r.status} {answer}")
                        submitted.setdefault(attack, []).append(
                            (answer["task_id"], time.monotonic())
                        )
                bound_s = 30.0 if quick else 200.0
                end = time.monotonic() + bound_s
                ended: dict[str, tuple[dict[str, Any], float]] = {}
                while time.monotonic() < end:
                    for tasks in submitted.values():
                        for task_id, t0 in tasks:
                            if task_id in ended:
                                continue
                            status, view = await get_json(http, f"{api}/scans/{task_id}")
                            watch.count(status)
                            if status == 200 and view["status"] in (
                                "completed",
                                "failed",
                                "canceled",
                                "timed_out",
                            ):
                                ended[task_id] = (view, time.monotonic() - t0)
                    if len(ended) == sum(len(t) for t in submitted.values()):
                        break
                    await asyncio.sleep(0.2)
                _, rss_peak_kib = _rss_kib(daemon.proc.pid)
                stop.set()
                await watcher
                for attack, tasks in submitted.items():
                    stranded = [t for t, _ in tasks if t not in ended]
                    outcomes = [
                        f"{ended[t][0]['status']}/{ended[t][0]['reason']} in {ended[t][1]:.1f}s"
                        for t, _ in tasks
                        if t in ended
                    ]
                    leaks = sum(
                        ("CANARY" in (ended[t][0].get("error") or ""))
                        for t, _ in tasks
                        if t in ended
                    )
                    deadline = pools[ATTACKS.index(attack)]["export-deadline-s"]
                    slowest = max((ended[t][1] for t, _ in tasks if t in ended), default=0.0)
                    held = not stranded and leaks == 0
                    if attack == "error_secret":  # the echo happened and was caught
                        held = held and all(
                            "<redacted>" in (ended[t][0].get("error") or "")
                            for t, _ in tasks
                            if t in ended
                        )
                    if attack in ("stuck_loading", "drip_export"):
                        held = held and slowest <= deadline + drip_s + 5.0
                    ok = ok and held
                    note = (
                        f", {slowest / deadline:.1f}x export-deadline-s"
                        if attack in ("stuck_loading", "drip_export")
                        else ""
                    )
                    rows.append(
                        (
                            attack,
                            f"{'held' if held else 'FAILED'}: stranded {len(stranded)}, "
                            f"{'; '.join(outcomes)}{note}, secret in API {leaks}",
                        )
                    )
                    result["attacks"][attack] = {
                        "held": held,
                        "stranded": len(stranded),
                        "outcomes": outcomes,
                        "secret_in_api": leaks,
                        "slowest_s": round(slowest, 2),
                    }
        finally:
            await daemon.stop()
            for h in scanners.values():
                await h.close()
        log_hits = sum("CANARY" in line for line in daemon.lines)
        file_hits = [
            str(f.relative_to(tmp))
            for f in (tmp / "data").rglob("*")
            if f.is_file() and b"CANARY" in f.read_bytes()
        ]
        ok = ok and log_hits == 0 and not file_hits and watch.errors_5xx == 0
        rows += [
            ("secrets in the log / files", f"{log_hits} / {len(file_hits)} {file_hits}"),
            ("HTTP requests, 5xx", f"{watch.requests}, {watch.errors_5xx}"),
            ("slowest /healthz", f"{watch.max_health_s * 1000:.0f} ms"),
            ("daemon RSS start, peak", f"{rss_start_kib // 1024} MiB, {rss_peak_kib // 1024} MiB"),
        ]
        result.update(
            secret_in_log=log_hits,
            secret_in_files=len(file_hits),
            requests=watch.requests,
            errors_5xx=watch.errors_5xx,
            max_healthz_ms=round(watch.max_health_s * 1000),
            rss_start_mib=rss_start_kib // 1024,
            rss_peak_mib=rss_peak_kib // 1024,
        )
    log("done")
    return report("hostile scanner attacks", rows, result, ok)


if __name__ == "__main__":
    run(main)
