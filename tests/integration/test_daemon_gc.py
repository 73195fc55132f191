"""A running daemon collects generation 2 on its own timer (nessus_pool.gc_policy): CPython's
automatic full collections, each a 200-300 ms pause of the loop at 2,000 running scans,
are off while it runs and come back when it stops."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from nessus_pool.gc_policy import SWITCH_INTERVAL_S
from tests.conftest import DaemonFactory, sim_config


async def test_the_daemon_turns_automatic_full_collections_off_while_it_runs(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    before = gc.get_threshold()
    switch_before_s = sys.getswitchinterval()
    d = await start_daemon(sim_config(tmp_path))
    try:
        # a parsing thread gives the loop the GIL back within 0.5 ms, not CPython's 5
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S < switch_before_s
        assert gc.get_threshold()[:2] == before[:2]
        assert gc.get_threshold()[2] >= 1 << 30
        assert d.engine is not None
        names = {t.get_name() for t in d.engine.supervisor.tasks}
        assert "gc:full" in names  # supervised: it stops with the engine
    finally:
        await d.stop()
    assert gc.get_threshold() == before
    assert sys.getswitchinterval() == switch_before_s
