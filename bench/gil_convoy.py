"""How long one turn of an event loop waits while threads run Python (a parse, a build).

A thread holding the GIL keeps it until the loop's thread has waited the interpreter's
switch interval for it, at every turn of the loop, and with several such threads the OS
may hand the GIL to another of them first. This measures the loop's lag (an awaited
1 ms sleep, minus 1 ms) for 0-6 busy threads (6: the default executor's size on 2 cores)
and switch intervals of 5 ms (CPython's default) and 0.5 ms
(nessus_pool.gc_policy.SWITCH_INTERVAL_S), 3 s each. No anchor beyond the 0-thread row:
the numbers are the loop's own waits.

    python bench/gil_convoy.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, table


def burn(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i


async def lags_ms(threads: int, switch_s: float, seconds: float) -> list[float]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(switch_s)
    stop = threading.Event()
    workers = [threading.Thread(target=burn, args=(stop,)) for _ in range(threads)]
    for w in workers:
        w.start()
    out: list[float] = []
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            out.append((time.perf_counter() - started - 0.001) * 1000)
    finally:
        stop.set()
        for w in workers:
            w.join()
        sys.setswitchinterval(before)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    rows = []
    for threads in (0, 1, 2, 3, 6):
        for switch_s in (0.005, 0.0005):
            lag = asyncio.run(lags_ms(threads, switch_s, args.seconds))
            rows.append(
                [str(threads), f"{switch_s * 1000:g}", str(len(lag)),
                 f"{percentile(lag, 0.5):.2f}", f"{percentile(lag, 0.99):.2f}"]
            )  # fmt: skip
    print(
        table(
            "Event-loop turn lag with threads running Python",
            ["busy threads", "switch interval (ms)", "turns", "lag p50 (ms)", "lag p99 (ms)"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
