"""``storage migrate`` copies the notification outbox: a delivery pending in SQLite is
pending in PostgreSQL, with its payload, attempts and error."""

from __future__ import annotations

from pathlib import Path

from nessus_pool.store import Store
from nessus_pool.store import outbox as ob
from nessus_pool.store.migrate import copy_sqlite_to_pg
from nessus_pool.store.pg import PgStore
from tests.pgcluster import create_schema, drop_schema, with_search_path
from tests.unit.test_notify_outbox import _row


async def test_migrate_copies_the_outbox(tmp_path: Path, pg_server_url: str) -> None:
    db = tmp_path / "np.db"
    src = Store(db)
    await src.open()
    failed = _row(2, 50)
    failed.state, failed.attempts, failed.last_error = ob.FAILED, 8, "HTTP 500: boom"
    try:
        await src.write([ob.op_insert(_row(1, 10)), ob.op_insert(failed)])
        want = sorted([await ob.get(src, r.delivery_id) for r in (_row(1, 10), failed)],
                      key=repr)  # fmt: skip
    finally:
        await src.close()
    schema = await create_schema(pg_server_url)
    pg = PgStore(with_search_path(pg_server_url, schema))
    try:
        await pg.open()
        counts = await copy_sqlite_to_pg(db, pg)
        assert counts["notification_outbox"] == 2
        got = sorted([await ob.get(pg, r.delivery_id) for r in (_row(1, 10), failed)], key=repr)
        assert got == want and got[0] is not None
        assert (await ob.counts(pg))[ob.FAILED] == 1
        assert [r.delivery_id for r in await ob.claim_due(pg, 100, 1000, 10)] == [
            _row(1, 10).delivery_id
        ]
    finally:
        await pg.close()
        await drop_schema(pg_server_url, schema)
