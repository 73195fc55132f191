"""``nessus-pool storage migrate --to postgresql://...``: copy this config's SQLite store
into an empty PostgreSQL database (exit 0; 1 when the copy fails or the target is not
empty; 2 for a bad URL or config)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nessus_pool.config import (
    SecretSource,
    check_storage,
    config_path_from,
    load_config,
    resolve_secret,
)
from nessus_pool.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from nessus_pool.store.pg import PgStore


def add_storage_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    storage = sub.add_parser("storage", help="move the store between backends")
    ssub = storage.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    mig = ssub.add_parser(
        "migrate",
        help="copy the SQLite store (tasks, events, results, dead letters) into an EMPTY "
        "PostgreSQL database; the daemon must be stopped",
    )
    mig.add_argument("--config", help="config file whose storage.path holds the SQLite store")
    mig.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host:port/db")
    mig.add_argument("--password-env", metavar="VAR", help="read the database password from $VAR")
    mig.set_defaults(handler=cmd_storage_migrate)


def cmd_storage_migrate(args: argparse.Namespace) -> int:
    from nessus_pool.config import StorageConfig
    from nessus_pool.store.lock import StorageLock

    try:
        path = config_path_from(args.config)
        cfg = load_config(path).config if os.path.exists(path) or args.config else None
        storage_dir = Path(cfg.storage.path if cfg else StorageConfig().path).absolute()
        password_ref = SecretSource(env=args.password_env) if args.password_env else None
        check_storage(StorageConfig(url=args.to, password=password_ref))
        password = resolve_secret(password_ref, "--password-env")
    except ConfigError as exc:
        print(f"error: {str(exc).replace('$.storage.url', '--to')}", file=sys.stderr)
        return 2
    try:
        from nessus_pool.store.pg import PgStore  # asyncpg: the optional extra 'postgresql'

        # the daemon holds this lock while it runs: copying a store being written is not a copy
        lock = StorageLock(storage_dir)
        lock.acquire()
    except (StorageError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        counts = asyncio.run(
            _copy(
                storage_dir / "nessus-pool.db", PgStore(args.to, password=password, exclusive=True)
            )
        )
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    summary = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"copied {storage_dir / 'nessus-pool.db'} into {_redacted(args.to)}: {summary}")
    return 0


def _redacted(url: str) -> str:
    from nessus_pool.store import redact_url

    return redact_url(url)


async def _copy(source: Path, target: PgStore) -> dict[str, int]:
    from nessus_pool.store.migrate import copy_sqlite_to_pg

    await target.open()
    try:
        return await copy_sqlite_to_pg(source, target)
    finally:
        await target.close()
