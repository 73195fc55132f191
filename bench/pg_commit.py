"""One awaited PostgreSQL commit on a busy event loop: what a task transition waits for.

Opens the daemon's store (``PgStore``) on a fresh database and awaits ``--commits``
transitions one after another (a task row and its event, as a dispatch or a launch
writes), while ``--spinners`` tasks keep the loop busy (1 ms of CPU a turn each, as the
scale bench's runners, polls and exports do). Prints the latency of each awaited commit
(p50/p99) and the process CPU per commit. For a before/after pair, run it once with
``PYTHONPATH=<unpacked before tree>`` and once without, interleaved.

    python bench/pg_commit.py --pg-url "$PG"
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile
from _pg import fresh_database, pg_server

from nessus_pool.models import Task, TaskEvent, TaskStatus
from nessus_pool.store import Store
from nessus_pool.store.pg import PgStore


async def spin(stop: asyncio.Event) -> None:
    while not stop.is_set():
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


async def run(url: str, commits: int, spinners: int) -> tuple[list[float], float]:
    store = PgStore(url)
    await store.open()
    stop = asyncio.Event()
    spinning = [asyncio.create_task(spin(stop)) for _ in range(spinners)]
    lat_ms: list[float] = []
    try:
        now = int(time.time() * 1000)
        cpu0 = time.process_time()
        for i in range(commits):
            t = Task(task_id=f"c{i:08d}", seq=i + 1, pool="p", name="c", targets=["10.0.0.1"],
                     created_at_ms=now, updated_at_ms=now)  # fmt: skip
            ev = TaskEvent(task_id=t.task_id, at_ms=now, status=TaskStatus.QUEUED.value)
            ops = [Store.op_save_task(t), Store.op_event(ev)]
            started = time.perf_counter()
            await store.write(ops)
            lat_ms.append((time.perf_counter() - started) * 1000)
        cpu = time.process_time() - cpu0
    finally:
        stop.set()
        await asyncio.gather(*spinning)
        await store.close()
    return lat_ms, cpu


async def amain(args: argparse.Namespace, server: str) -> None:
    async with fresh_database(server) as url:
        lat, cpu = await run(url, args.commits, args.spinners)
    cpu_note = (
        f"; process CPU {cpu / args.commits * 1e6:.0f} us per commit"
        if args.spinners == 0
        else ""  # the spinners' CPU would swamp it
    )
    print(
        f"{args.commits} awaited commits, {args.spinners} spinners: p50 "
        f"{percentile(lat, 0.5):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms{cpu_note}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", default=None)
    p.add_argument("--commits", type=int, default=1500)
    p.add_argument("--spinners", type=int, default=3)
    args = p.parse_args()
    with pg_server(args.pg_url) as server:
        asyncio.run(amain(args, server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
