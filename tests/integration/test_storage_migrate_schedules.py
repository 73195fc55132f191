"""``storage migrate`` copies the schedules' tables: API schedules and their run history
arrive unchanged, and a run recorded after the copy gets an id past the copied ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import tomli_w

from nessus_pool.cli import main
from nessus_pool.store import BaseStore, Store
from nessus_pool.store.pg import PgStore
from nessus_pool.store.schedules import ScheduleRun, ScheduleStore, StoredSchedule
from tests.integration.test_storage_migrate import pg_url  # noqa: F401 (a fixture)


def _run(slot: int, kind: str = "slot") -> ScheduleRun:
    return ScheduleRun(slot_ms=slot, kind=kind, outcome="fired", task_id=f"t{slot}", at_ms=slot)


async def _fill(db: Path) -> None:
    store = Store(db)
    await store.open()
    try:
        ss = ScheduleStore(store)
        await ss.save("weekly", b'{"name":"weekly"}', 5)
        for slot in (10, 20, 30):
            await ss.record("weekly", _run(slot))
        await ss.record("from-config", _run(40, "manual"))
    finally:
        await store.close()


async def _answers(
    store: BaseStore, add: bool = False
) -> tuple[list[StoredSchedule], list[ScheduleRun], list[ScheduleRun], dict[str, int]]:
    await store.open()
    try:
        ss = ScheduleStore(store)
        if add:
            await ss.record("weekly", _run(50))
        return (
            await ss.all(),
            await ss.runs("weekly"),
            await ss.runs("from-config"),
            await ss.last_slots(),
        )
    finally:
        await store.close()


def test_migrate_copies_schedules_and_runs(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    asyncio.run(_fill(data / "nessus-pool.db"))
    cfg = tmp_path / "np.toml"
    cfg.write_text(tomli_w.dumps({"storage": {"path": str(data)}}))
    assert main(["storage", "migrate", "--config", str(cfg), "--to", pg_url]) == 0
    assert "1 schedules, 4 schedule_runs" in capsys.readouterr().out
    want = asyncio.run(_answers(Store(data / "nessus-pool.db")))
    assert asyncio.run(_answers(PgStore(pg_url))) == want
    _, runs, _, last = asyncio.run(_answers(PgStore(pg_url), add=True))
    assert [r.slot_ms for r in runs] == [50, 30, 20, 10] and last == {"weekly": 50}
