"""Per-host results as rows, on both backends: written in batches, read in pages by filter
and cursor, compared by name; and the migration that moves the hosts out of results rows
written by the previous schema (one JSON blob with every host)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import msgspec

from nessus_pool.engine.ingest import host_rows
from nessus_pool.results.types import AuthStatus, HostResult, SeverityBreakdown
from nessus_pool.store import HostFilter, make_store
from nessus_pool.store.schema import MIGRATIONS, PG_MIGRATIONS


def _host(i: int, status: AuthStatus, high: int = 0) -> HostResult:
    return HostResult(
        name=f"10.0.0.{i}",
        ip=f"10.0.0.{i}",
        findings_total=high + 1,
        severity_breakdown=SeverityBreakdown(high=high, info=1),
        authentication_status=status,
        evidence=[19506, 141118][: i % 3],
        notes=[f"note {i}"],
    )


#: a results row as the previous schema's code wrote it: every host inside
OLD_HOSTS = [_host(i, AuthStatus.FAILED if i % 2 else AuthStatus.SUCCESS, i % 3) for i in range(5)]
OLD_BLOB = msgspec.json.encode(
    {
        "summary": {"hosts_scanned": 5, "findings_total": 9},
        "validation": {"authentication_status": "failed", "hosts_by_status": {"failed": 2}},
        "hosts": OLD_HOSTS,
    }
)


async def _write_previous_schema(store_url: str | None, path: Path) -> None:
    """A database at schema version 1 (the previous migrations' SQL), with a results row in
    the previous encoding and one that holds no hosts array."""
    rows = [("old1", OLD_BLOB), ("odd1", b'{"hosts": 1}')]
    if store_url is None:
        conn = sqlite3.connect(path)
        conn.executescript(MIGRATIONS[1])
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.executemany("INSERT INTO task_results (task_id, data) VALUES (?, ?)", rows)
        conn.commit()
        conn.close()
        return
    pg = await asyncpg.connect(store_url)
    try:
        await pg.execute(PG_MIGRATIONS[1])
        await pg.execute("CREATE TABLE schema_version (version INTEGER)")
        await pg.execute("INSERT INTO schema_version VALUES (1)")
        await pg.executemany("INSERT INTO task_results (task_id, data) VALUES ($1, $2)", rows)
    finally:
        await pg.close()


async def test_results_of_the_previous_schema_are_moved_to_host_rows(
    tmp_path: Path, store_url: str | None
) -> None:
    await _write_previous_schema(store_url, tmp_path / "np.db")
    store = make_store(url=store_url, sqlite_path=tmp_path / "np.db")
    await store.open()
    try:
        blob = await store.get_results("old1")
        assert blob is not None
        doc = msgspec.json.decode(blob)
        assert "hosts" not in doc
        assert doc["hosts_total"] == 5
        assert doc["auth_plugins_found"] == sum(len(h.evidence) for h in OLD_HOSTS)
        assert doc["summary"] == {"hosts_scanned": 5, "findings_total": 9}
        assert doc["validation"]["hosts_by_status"] == {"failed": 2}
        page = await store.host_page("old1", HostFilter(), limit=10)
        assert [seq for seq, _ in page] == [0, 1, 2, 3, 4]
        assert [msgspec.json.decode(d, type=HostResult) for _, d in page] == OLD_HOSTS
        failed = await store.host_page("old1", HostFilter(auth_status="failed"), limit=10)
        assert [seq for seq, _ in failed] == [1, 3]
        high = await store.count_hosts("old1", HostFilter(min_severity=3))
        assert high == sum(1 for h in OLD_HOSTS if h.severity_breakdown.high)
        # a row whose "hosts" is no list is left as it was
        assert await store.get_results("odd1") == b'{"hosts": 1}'
        assert await store.count_hosts("odd1", HostFilter()) == 0
    finally:
        await store.close()


async def test_host_rows_page_by_offset_cursor_and_filter(
    tmp_path: Path, store_url: str | None
) -> None:
    hosts = [_host(i, list(AuthStatus)[i % 5], high=i % 4) for i in range(1, 251)]
    store = make_store(url=store_url, sqlite_path=tmp_path / "np.db")
    await store.open()
    try:
        for i in range(0, len(hosts), 100):  # batches, as ingest writes them
            await store.add_host_results("t1", host_rows(hosts[i : i + 100], i))
        await store.add_host_results("t2", host_rows(hosts[10:260], 0))
        assert await store.count_hosts("t1", HostFilter()) == 250
        # a cursor walk visits every host once, in export order
        seen: list[str] = []
        after = -1
        while page := await store.host_page("t1", HostFilter(), after_seq=after, limit=64):
            seen += [msgspec.json.decode(d)["name"] for _, d in page]
            after = page[-1][0]
        assert seen == [h.name for h in hosts]
        third = await store.host_page("t1", HostFilter(), offset=20, limit=10)
        assert [s for s, _ in third] == list(range(20, 30))
        partial = HostFilter(auth_status="partial", min_severity=3)
        want = [
            i
            for i, h in enumerate(hosts)
            if h.authentication_status == "partial" and h.severity_breakdown.high
        ]
        assert [s for s, _ in await store.host_page("t1", partial, limit=500)] == want
        assert await store.count_hosts("t1", partial) == len(want)
        # by name across two scans: t2 has hosts 11..250, t1 has 1..250
        gone = await store.hosts_only_in("t1", "t2", 5)
        assert gone == sorted(h.name for h in hosts[:10])[:5]
        assert await store.hosts_only_in("t2", "t1", 5) == []
        names = {"10.0.0.1", "10.0.0.11", "no-such-host"} | {f"x{i}" for i in range(1200)}
        assert await store.hosts_among("t2", names) == {"10.0.0.11"}
        await store.clear_results("t1")
        assert await store.count_hosts("t1", HostFilter()) == 0
        assert await store.count_hosts("t2", HostFilter()) == 240
        await store.delete_tasks(["t2"])
        assert await store.count_hosts("t2", HostFilter()) == 0
    finally:
        await store.close()
