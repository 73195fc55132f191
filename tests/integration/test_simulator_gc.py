"""Issue 18: ``nessus-pool simulate`` runs with the daemon's collection policy (frozen start-up
heap, no automatic full collections, one every 300 s), so the simulator's own pauses do not
show up as the daemon's launch latency in bench/scale.py; it puts everything back when it
stops."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from nessus_pool.gc_policy import _NEVER, SWITCH_INTERVAL_S
from nessus_pool.simulator.cli import run_simulate


async def test_simulate_collects_on_the_policy_and_restores_it() -> None:
    before = gc.get_threshold()
    switch_before_s = sys.getswitchinterval()
    assert before[2] != _NEVER
    args = argparse.Namespace(
        host="127.0.0.1",
        port=0,  # an ephemeral port (one scanner: scanner i listens on port + i)
        scanners=1,
        scan_seconds=1.0,
        no_scan_api=False,
        seed=1,
        plain_http=True,
        tls_dir=None,
    )
    task = asyncio.create_task(run_simulate(args))
    try:
        for _ in range(500):  # bounded: up to 5 s for the scanners to start
            if gc.get_threshold()[2] == _NEVER:
                break
            await asyncio.sleep(0.01)
        assert gc.get_threshold() == (before[0], before[1], _NEVER)
        assert gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert "sim:gc" in names
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == switch_before_s
