"""The cost of one JSON log line (issue 18): every submit and task step logs one.

    python bench/logs.py            # 20,000 lines per run, 5 runs, a few seconds

Two measurements, each repeated and interleaved, CPU time per line (``time.process_time``):

1. formatting with secrets registered (0, 4, 200 and 300: the redaction's regular expression
   covers up to 256 distinct prefixes, more fall back to a walk of every position);
2. writing from inside an event loop, 50 lines a loop turn, into a pipe (stderr under
   systemd): ``logging.StreamHandler`` (the anchor: a write and flush per line) against
   nessus-pool's ``TurnBufferedHandler`` (one write per turn).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Series, describe, ratio, table

from nessus_pool import logs
from nessus_pool.logs import JsonFormatter, TurnBufferedHandler

FIELDS = {"event": "task_submitted", "task_id": "a3f9c2d41b0e7f11", "pool": "lan"}


def _record() -> logging.LogRecord:
    rec = logging.LogRecord(
        "nessus_pool.engine.core", logging.INFO, __file__, 1, "task %s", ("submitted",), None
    )
    for k, v in {**FIELDS, "scanner": None, "reason": None}.items():
        setattr(rec, k, v)
    return rec


def format_us(lines: int) -> float:
    fmt, rec = JsonFormatter(), _record()
    t = time.process_time()
    for _ in range(lines):
        fmt.format(rec)
    return 1e6 * (time.process_time() - t) / lines


def handler_us(cls: type[logging.StreamHandler[Any]], stream: Any, lines: int) -> float:
    h = cls(stream)
    h.setFormatter(JsonFormatter())
    log = logging.getLogger(f"bench.logs.{cls.__name__}")
    log.handlers[:] = [h]
    log.propagate = False
    log.setLevel(logging.INFO)

    async def run() -> float:
        t = time.process_time()
        for _ in range(lines // 50):
            for _ in range(50):
                log.info("task %s", "submitted", extra=FIELDS)
            await asyncio.sleep(0)  # the end of a loop turn
        h.flush()
        return 1e6 * (time.process_time() - t) / lines

    return asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(describe(["nessus-pool"]))
    rows = []
    registered = 0
    for count in (0, 4, 200, 300):
        for _ in range(count - registered):
            logs.register_secret(secrets.token_hex(32))
        registered = count
        s = Series()
        for _ in range(max(3, args.repeat)):
            s.add(format_us(args.lines))
        rows.append([str(count), s.fmt(2)])
    print(
        table(
            "One JSON line formatted, by secrets registered (us of CPU, median (min-max))",
            ["secrets", "us per line"],
            rows,
        )
    )
    sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert sink.stdin is not None
    plain, turn = Series(), Series()
    try:
        for _ in range(max(3, args.repeat)):
            plain.add(handler_us(logging.StreamHandler, sink.stdin, args.lines))
            turn.add(handler_us(TurnBufferedHandler, sink.stdin, args.lines))
    finally:
        sink.stdin.close()
        sink.wait(10)
    print(
        table(
            f"Logged into a pipe, 50 lines a loop turn, {registered} secrets (us of CPU per line)",
            ["handler", "us per line", "vs anchor"],
            [
                ["logging.StreamHandler (anchor)", plain.fmt(2), "1.00x"],
                ["TurnBufferedHandler", turn.fmt(2), ratio(turn.median, plain.median)],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
