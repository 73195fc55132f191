"""Where a submit's microseconds go (issue 18): the daemon's CPU per acknowledged submit, per
thread, and the event loop's share split into the stages of the submit path.

    python bench/submit_profile.py              # 8 s profiled load run (py-spy), C=50
    python bench/submit_profile.py --no-spy     # CPU per thread only (no py-spy)

Starts ``nessus-pool serve`` as bench/submits.py does (same config, JSON logs at info), warms
it up for 1 s, then runs the same raw load client for ``--duration`` seconds while reading
each daemon thread's CPU time from ``/proc/<pid>/task/*/stat`` and (unless ``--no-spy``)
sampling the daemon with py-spy (``pip install py-spy``; it needs ptrace rights over its
children). Each sample of the event loop thread is filed under the stage of the innermost
frame that names one (see ``STAGES``), so a log call made from the commit hand-off counts as
logging. µs per submit of a stage = its share of the loop thread's samples x the loop
thread's CPU per submit. Sampling is statistical: stages under ~2 µs are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, table
from submits import DaemonProc, run_load, submit_request

HZ = os.sysconf("SC_CLK_TCK")

#: stage -> patterns matched against "function [file]" of a frame, innermost frame first
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("idle (epoll wait)", ("EpollSelector.select",)),
    (
        "logging of each event",
        (r"^Logger\.", r"^Handler\.", r"^StreamHandler\.", r"\[logs\.py\]", r"^LogRecord"),
    ),
    ("auth (bearer token)", (r"^TokenAuth\.",)),
    ("guard (Host/Origin/type, body deadline)", (r"^FrontDoor\.", r"\[timeouts\.py\]")),
    ("msgspec validation", (r"^decode_body ", r"^validation_error")),
    ("query check", (r"^parse_query ",)),
    ("target parsing", (r"\[targets\.py\]",)),
    ("scope check + pool choice", (r"\[scoping\.py\]", r"\[scope\.py\]", r"\[pool\.py\]")),
    ("idempotency lookup", (r"^Submitter\._by_key", r"^_hash_request")),
    (
        "task creation + request checks",
        (r"^Submitter\._new_task", r"new_task_id", r"^_credentials", r"effective_policy"),
    ),
    (
        "commit hand-off (enqueue, writer task, wake-ups)",
        (
            r"\[writer\.py\]",
            r"\[sqlite\.py\]",
            r"\[base\.py\]",
            r"\[state\.py\]",
            r"^Engine\.",
            r"aiosqlite",
            r"\[core\.py\]",
        ),
    ),
    ("reply (result, encoding)", (r"^Submitter\._submit_result", r"^json_response")),
    (
        "response write (headers, send)",
        (r"^StreamResponse\.", r"^Response\.", r"^StreamWriter\.", r"finish_response"),
    ),
    ("service + handler glue", (r"^Submitter\.submit", r"^submit_scan", r"^Service\.")),
    (
        "request read + parse (aiohttp)",
        (r"data_received", r"_read_ready", r"^BaseRequest\.", r"^StreamReader\."),
    ),
    (
        "routing + route wrapper (aiohttp, guard_routes)",
        (r"\[web_app\.py\]", r"web_urldispatcher", r"middleware", r"^front\.<locals>"),
    ),
    ("aiohttp request handler", (r"\[web_protocol\.py\]", r"\[web_request\.py\]")),
]
_FRAME = re.compile(r"(.*?) \((.*?):\d+\)")


def thread_cpu_s(pid: int) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                s = fh.read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2 :].split()
        out[tid] = (s[s.index("(") + 1 : s.rindex(")")], (int(f[11]) + int(f[12])) / HZ)
    return out


def stage_of(frames: list[str]) -> str:
    keys = []
    for f in frames:
        m = _FRAME.match(f)
        keys.append(f"{m.group(1)} [{m.group(2).rsplit('/', 1)[-1]}]" if m else f)
    for key in reversed(keys):
        for stage, patterns in STAGES:
            if any(re.search(p, key) for p in patterns):
                return stage
    return "event loop (callbacks, tasks, futures)"


def split_samples(raw: Path, main_tid: str) -> tuple[collections.Counter[str], int]:
    """Samples of the loop thread per stage (py-spy's raw collapsed format)."""
    by_stage: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if f"({main_tid})" not in frames[0]:
            continue
        by_stage[stage_of(frames[1:])] += int(n)
        total += int(n)
    return by_stage, total


async def _profile(args: argparse.Namespace, work: Path) -> int:
    spy = args.spy
    d = DaemonProc(work, free_port(), args.log_level)
    await d.start()
    raw = work / "spy.raw"
    try:
        assert d.proc is not None
        pid = d.proc.pid
        await run_load(
            "127.0.0.1",
            d.port,
            concurrency=args.concurrency,
            duration_s=1.0,
            client="raw",
            make_request=submit_request,
            collect_ids=False,
        )
        before = thread_cpu_s(pid)
        sampler = None
        if spy is not None:
            sampler = subprocess.Popen(  # noqa: ASYNC220
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "-r",
                    str(args.rate),
                    "-d",
                    str(int(args.duration)),
                    "--format",
                    "raw",
                    "-o",
                    str(raw),
                    "--threads",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        c0 = time.process_time()
        r = await run_load(
            "127.0.0.1",
            d.port,
            concurrency=args.concurrency,
            duration_s=args.duration,
            client="raw",
            make_request=submit_request,
            collect_ids=False,
        )
        client_cpu = time.process_time() - c0
        after = thread_cpu_s(pid)
        if sampler is not None:
            sampler.wait(60)
    finally:
        d.stop()
    print(
        f"load: C={args.concurrency}, {r.seconds:.1f} s, {r.per_s:,.0f} acknowledged/s, "
        f"p50 {r.pct_ms(0.5):.1f} ms, p99 {r.pct_ms(0.99):.1f} ms, errors {r.errors}; "
        f"load client {100 * client_cpu / r.seconds:.0f}% of a core; "
        f"loadavg {os.getloadavg()[0]:.2f}"
    )
    n = max(1, r.acked)
    rows = []
    main_tid, main_us = str(pid), 0.0
    for tid, (name, t) in sorted(after.items(), key=lambda kv: -kv[1][1]):
        dt = t - before.get(tid, (name, 0.0))[1]
        if dt <= 0:
            continue
        if tid == str(pid):
            name, main_us = "event loop (main thread)", 1e6 * dt / n
        else:
            name = f"thread {tid} (aiosqlite: the writer's commits)"
        rows.append([name, f"{100 * dt / r.seconds:.0f}%", f"{1e6 * dt / n:.1f}"])
    print(table("Daemon CPU per thread", ["thread", "% of a core", "us per submit"], rows))
    if spy is None or not raw.exists():
        return 0
    by_stage, total = split_samples(raw, main_tid)
    order = [s for s, _ in STAGES] + ["event loop (callbacks, tasks, futures)"]
    busy = total - by_stage.get("idle (epoll wait)", 0)
    srows = [
        [
            s,
            f"{100 * by_stage[s] / max(1, busy):.1f}%",
            f"{main_us * by_stage[s] / max(1, busy):.1f}",
        ]
        for s in order
        if s != "idle (epoll wait)" and by_stage[s]
    ]
    srows.append(["total (loop thread CPU per submit)", "100%", f"{main_us:.1f}"])
    print(
        table(
            f"Loop thread by stage ({busy:,} busy samples of {total:,})",
            ["stage", "share of busy samples", "us per submit"],
            srows,
        )
    )
    if args.keep_raw:
        shutil.copy(raw, args.keep_raw)
    return 0


async def amain(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="np-bench-profile-", dir=args.tmp))
    try:
        return await _profile(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of profiled load")
    ap.add_argument("--concurrency", type=int, default=50, help="keep-alive clients")
    ap.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    ap.add_argument("--no-spy", action="store_true", help="CPU per thread only")
    ap.add_argument("--log-level", default="info", help="the daemon's (default: info)")
    ap.add_argument("--tmp", default=None, help="directory for the temp storage")
    ap.add_argument("--keep-raw", default=None, help="copy py-spy's raw samples here")
    args = ap.parse_args()
    args.spy = None
    if not args.no_spy:
        args.spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(args.spy).exists():
            print("py-spy is not installed (pip install py-spy): CPU per thread only")
            args.spy = None
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
