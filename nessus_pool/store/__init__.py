"""Persistence: schema migrations, named queries, group-committed writes; two backends.

All SQL of nessus-pool lives in this package: the schema (``schema``), the statements
(``queries``), the group-commit writer (``writer``) that owns every write, the shared store
logic and the interface the engine uses (``base``), and the backends: SQLite (``sqlite``,
the embedded default) and PostgreSQL (``pg``, several daemons sharing pools).
"""

from __future__ import annotations

from pathlib import Path

from nessus_pool.errors import StorageError
from nessus_pool.store.base import (
    BaseStore,
    FindingRow,
    HostFilter,
    HostRow,
    SplitFindingRow,
    TaskFilter,
    TaskStore,
    decode_task,
    op_event,
    op_save_task,
    redact_url,
)
from nessus_pool.store.queries import Q_INSERT_EVENT, Q_UPSERT_TASK
from nessus_pool.store.schema import MIGRATIONS, SCHEMA_VERSION
from nessus_pool.store.sqlite import Store
from nessus_pool.store.writer import GroupCommitWriter, Op

__all__ = [
    "MIGRATIONS",
    "Q_INSERT_EVENT",
    "Q_UPSERT_TASK",
    "SCHEMA_VERSION",
    "BaseStore",
    "FindingRow",
    "GroupCommitWriter",
    "HostFilter",
    "HostRow",
    "Op",
    "SplitFindingRow",
    "Store",
    "TaskFilter",
    "TaskStore",
    "decode_task",
    "is_postgresql_url",
    "make_store",
    "op_event",
    "op_save_task",
    "redact_url",
]


def is_postgresql_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def make_store(
    *, url: str | None, sqlite_path: Path, password: str | None = None, exclusive: bool = False
) -> BaseStore:
    """The store for a config: PostgreSQL when ``url`` is given, else the SQLite file.
    ``exclusive``: this process must be the only daemon on that database (see PgStore)."""
    if url is None:
        return Store(sqlite_path)
    try:
        from nessus_pool.store.pg import PgStore  # asyncpg is an optional dependency
    except ImportError as exc:
        raise StorageError(
            "storage.url names PostgreSQL but its driver is not installed: "
            "pip install 'nessus-pool[postgresql]'"
        ) from exc
    return PgStore(url, password=password, exclusive=exclusive)
