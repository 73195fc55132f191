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

from nessus_pool.clock import FakeClock
from nessus_pool.engine import Engine, core
from nessus_pool.models import Task, TaskStatus
from nessus_pool.store import make_store


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
    store = make_store(url=None, sqlite_path=tmp_path / "np.db")
    await store.open()
    try:
        engine = Engine(
            store=store,
            clock=FakeClock(),
            exports_dir=tmp_path / "exports",
            client_factory=lambda spec: None,  # type: ignore[arg-type,return-value]
            credentials=lambda name: None,
        )
        tasks = [
            Task(
                task_id=f"t{i}",
                seq=i,
                pool="p",
                name="n",
                targets=["10.0.0.1"],
                status=TaskStatus.EXPORTING,
                created_at_ms=0,
                updated_at_ms=0,
            )
            for i in range(4)
        ]
        failed = await asyncio.gather(*(engine.ingest_results(t) for t in tasks))
    finally:
        await store.close()
    assert failed == [False] * 4
    assert all(t.authentication_status == "success" for t in tasks)
    assert most == core.INGEST_CONCURRENCY == 1
