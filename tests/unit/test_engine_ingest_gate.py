"""Exports are parsed one at a time (engine.core.INGEST_CONCURRENCY): each parse is a thread
holding the GIL, and every one running at once lengthened each turn of the event loop, where
the launches of a wave of freed slots wait."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nessus_pool.engine import core
from nessus_pool.models import Task, TaskStatus
from nessus_pool.testing import engine_rig


async def test_exports_are_parsed_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def parse() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async def fake_ingest(store: Any, t: Task) -> Any:
        await asyncio.to_thread(parse)
        status = SimpleNamespace(value="success")
        return SimpleNamespace(validation=SimpleNamespace(authentication_status=status))

    monkeypatch.setattr(core, "ingest_export", fake_ingest)
    async with engine_rig(tmp_path) as rig:
        tasks = [rig.task(status=TaskStatus.EXPORTING) for _ in range(4)]
        failed = await asyncio.gather(*(rig.engine.ingest_results(t) for t in tasks))
    assert failed == [False] * 4
    assert all(t.authentication_status == "success" for t in tasks)
    assert most == core.INGEST_CONCURRENCY == 1
