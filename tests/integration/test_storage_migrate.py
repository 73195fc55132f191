"""``nessus-pool storage migrate --to postgresql://...``: a SQLite store copied into an
empty PostgreSQL database answers every read the same; a non-empty target is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from nessus_pool.cli import main
from nessus_pool.models import Task, TaskEvent, TaskStatus
from nessus_pool.store import BaseStore, Store, TaskFilter
from nessus_pool.store.pg import PgStore
from tests.pgcluster import create_schema, drop_schema, with_search_path


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    schema = asyncio.run(create_schema(pg_server_url))
    yield with_search_path(pg_server_url, schema)
    asyncio.run(drop_schema(pg_server_url, schema))


def _task(seq: int, status: TaskStatus, **kw: object) -> Task:
    return Task(
        task_id=f"t{seq:03d}",
        seq=seq,
        pool="lan",
        name=f"scan {seq}",
        targets=["10.0.0.1"],
        status=status,
        created_at_ms=seq,
        updated_at_ms=seq,
        **kw,  # type: ignore[arg-type]
    )


async def _fill(db: Path) -> None:
    store = Store(db)
    await store.open()
    try:
        for seq in range(1, 31):
            status = [TaskStatus.QUEUED, TaskStatus.COMPLETED, TaskStatus.FAILED][seq % 3]
            t = _task(seq, status, dead_letter=status is TaskStatus.FAILED)
            await store.save_task(t, TaskEvent(task_id=t.task_id, at_ms=seq, status="submitted"))
            await store.save_task(t, TaskEvent(task_id=t.task_id, at_ms=seq + 1, status="x"))
        await store.save_results("t001", b'{"hosts": 1}')
        await store.replace_findings(
            "t001", [(i, i % 5, 1000 + i, "h", b"f%d" % i) for i in range(7)]
        )
    finally:
        await store.close()


async def _answers(store: BaseStore) -> tuple[Any, ...]:
    await store.open()
    try:
        return (
            await store.list_tasks(TaskFilter(), 100),
            [await store.events(f"t{i:03d}") for i in range(1, 31)],
            await store.get_results("t001"),
            await store.get_findings_blobs("t001"),
            await store.dlq_counts(),
            [t.task_id for t in await store.load_active()],
        )
    finally:
        await store.close()


def test_migrate_copies_everything_then_refuses_a_non_empty_target(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    asyncio.run(_fill(data / "nessus-pool.db"))
    cfg = tmp_path / "np.toml"
    cfg.write_text(tomli_w.dumps({"storage": {"path": str(data)}}))

    assert main(["storage", "migrate", "--config", str(cfg), "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "30 tasks, 60 task_events, 1 task_results, 7 findings" in out

    want = asyncio.run(_answers(Store(data / "nessus-pool.db")))
    assert asyncio.run(_answers(PgStore(pg_url))) == want

    # a new event after the copy gets an id past the copied ones: order stays right
    async def add_event() -> list[str]:
        pg = PgStore(pg_url)
        await pg.open()
        try:
            await pg.write([pg.op_event(TaskEvent(task_id="t001", at_ms=99, status="later"))])
            return [e.status for e in await pg.events("t001")]
        finally:
            await pg.close()

    assert asyncio.run(add_event()) == ["submitted", "x", "later"]

    assert main(["storage", "migrate", "--config", str(cfg), "--to", pg_url]) == 1
    assert "not empty" in capsys.readouterr().err
    assert len(asyncio.run(_answers(PgStore(pg_url)))[0]) == 30


def test_migrate_refuses_a_bad_url_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "np.toml"
    cfg.write_text(tomli_w.dumps({"storage": {"path": str(tmp_path / "data")}}))
    assert main(["storage", "migrate", "--config", str(cfg), "--to", "mysql://x@h/db"]) == 2
    err = capsys.readouterr().err
    assert "--to" in err and "not a PostgreSQL URL" in err
    code = main(["storage", "migrate", "--config", str(cfg), "--to", "postgresql://u:pw9@h/db"])
    assert code == 2 and "pw9" not in capsys.readouterr().err
