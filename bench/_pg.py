"""PostgreSQL for the benchmarks' ``--store postgresql``: a server (``--pg-url``, else
``NESSUS_POOL_TEST_PG_URL``, else a throwaway cluster of ``scripts/pg-test-cluster``, stopped
at the end) and a fresh empty database per run on it, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pg-test-cluster"
STORES = ("sqlite", "postgresql")


@contextlib.contextmanager
def pg_server(url: str | None = None) -> Iterator[str]:
    """The URL of a running server (the maintenance database, ``.../postgres``)."""
    url = url or os.environ.get("NESSUS_POOL_TEST_PG_URL")
    if url:
        yield url
        return
    # a folder of its own: as root the script hands it to the postgres user
    workdir = tempfile.mkdtemp(prefix="np-bench-pg-")
    try:
        out = subprocess.run(
            [str(SCRIPT), "start", workdir], check=True, capture_output=True, text=True
        )
        yield out.stdout.strip()
    finally:
        subprocess.run([str(SCRIPT), "stop", workdir], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """An empty database on ``server_url`` for one run; its URL."""
    import asyncpg

    name = f"np_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()
