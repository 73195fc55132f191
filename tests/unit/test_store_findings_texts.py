"""Findings storage (issue 18): each distinct text set of a task (description, solution,
synopsis, see_also, ... everything a plugin repeats) is stored once in finding_texts, a
finding row keeps its own fields, reads join them back. Findings rows written whole by the
previous schema are split in place when the store opens, on both backends."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import msgspec
import pytest

from nessus_pool.engine.ingest import ingest_export
from nessus_pool.models import ScanType, Task, TaskStatus
from nessus_pool.results.parser import iter_findings
from nessus_pool.results.types import Finding
from nessus_pool.store import make_store
from nessus_pool.store.base import join_maps, split_finding
from nessus_pool.store.schema import MIGRATIONS, PG_MIGRATIONS
from tests.unit.test_results_auth import samples_dir

SAMPLE = "defectdojo__nessus_v_unknown.xml"  # 296 findings of 32 plugins
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Finding)


def _sample() -> Path:
    path = samples_dir() / SAMPLE
    if not path.exists():
        pytest.skip("samples absent")
    return path


async def _count(store_url: str | None, db: Path, sql: str) -> int:
    if store_url is None:
        conn = sqlite3.connect(db)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(store_url)
    try:
        return int(await pg.fetchval(sql))
    finally:
        await pg.close()


async def _write_previous_schema(store_url: str | None, db: Path, findings: list[Finding]) -> None:
    """Schema version 1 (the previous migrations' SQL) with findings rows in the previous
    encoding: the whole Finding as msgpack, one row per finding; and one row that is not
    msgpack at all."""
    rows = [
        ("old1", seq, f.severity, f.plugin_id, f.host, _enc.encode(f))
        for seq, f in enumerate(findings)
    ]
    rows.append(("bad1", 0, 0, 0, "h", b"\xc1 not msgpack"))
    insert = "INSERT INTO findings (task_id, seq, severity, plugin_id, host, data) VALUES "
    if store_url is None:
        conn = sqlite3.connect(db)
        conn.executescript(MIGRATIONS[1])
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.executemany(insert + "(?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
        conn.close()
        return
    pg = await asyncpg.connect(store_url)
    try:
        await pg.execute(PG_MIGRATIONS[1])
        await pg.execute("CREATE TABLE schema_version (version INTEGER)")
        await pg.execute("INSERT INTO schema_version VALUES (1)")
        await pg.executemany(insert + "($1, $2, $3, $4, $5, $6)", rows)
    finally:
        await pg.close()


def test_a_split_finding_joins_back_to_the_same_finding() -> None:
    for f in list(iter_findings(_sample())):
        own, texts = split_finding(_enc.encode(f))
        assert _dec.decode(join_maps(own, texts)) == f


async def test_findings_of_the_previous_schema_are_split_in_place(
    tmp_path: Path, store_url: str | None
) -> None:
    findings = list(iter_findings(_sample()))
    db = tmp_path / "np.db"
    await _write_previous_schema(store_url, db, findings)
    store = make_store(url=store_url, sqlite_path=db)
    await store.open()
    try:
        blobs = await store.get_findings_blobs("old1")
        assert [_dec.decode(b) for b in blobs] == findings
        assert await store.get_findings_blobs("bad1") == [b"\xc1 not msgpack"]  # kept whole
    finally:
        await store.close()
    distinct = {split_finding(_enc.encode(f))[1] for f in findings}
    assert 1 < len(distinct) < len(findings)
    assert await _count(store_url, db, "SELECT COUNT(*) FROM finding_texts") == len(distinct)
    unsplit = "SELECT COUNT(*) FROM findings WHERE text_id IS NULL"
    assert await _count(store_url, db, unsplit) == 0
    # opened again: nothing left to split, nothing changes
    store = make_store(url=store_url, sqlite_path=db)
    await store.open()
    try:
        assert await store.split_old_findings() == 0
        assert [_dec.decode(b) for b in await store.get_findings_blobs("old1")] == findings
    finally:
        await store.close()


async def test_ingest_stores_each_text_set_once(tmp_path: Path, store_url: str | None) -> None:
    path = _sample()
    task = Task(
        task_id="t00001",
        seq=1,
        pool="lan",
        name="scan",
        targets=["10.0.0.1"],
        scan_type=ScanType.UNTRUSTED,
        status=TaskStatus.EXPORTING,
        export_path=str(path),
        created_at_ms=1,
        updated_at_ms=1,
    )
    db = tmp_path / "np.db"
    store = make_store(url=store_url, sqlite_path=db)
    await store.open()
    try:
        await store.save_task(task)
        await ingest_export(store, task)
        await ingest_export(store, task)  # again: replaces, never duplicates
        stored = [_dec.decode(b) for b in await store.get_findings_blobs(task.task_id)]
    finally:
        await store.close()
    findings = list(iter_findings(path))
    assert stored == findings
    texts = await _count(store_url, db, "SELECT COUNT(*) FROM finding_texts")
    distinct = {split_finding(_enc.encode(f))[1] for f in findings}
    assert texts == len(distinct) <= len({f.plugin_id for f in findings}) + 5 < len(findings)
