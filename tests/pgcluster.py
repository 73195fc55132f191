"""A PostgreSQL server for the tests: ``NESSUS_POOL_TEST_PG_URL`` when set, else a throwaway
cluster started by ``scripts/pg-test-cluster``; a fresh schema per test."""

from __future__ import annotations

import glob
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

ENV_URL = "NESSUS_POOL_TEST_PG_URL"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pg-test-cluster"


def binaries_present() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


@contextmanager
def pg_server() -> Iterator[str]:
    """The URL of a running server; skips when there is none to start, except under CI
    (where a PostgreSQL test that skips would hide a broken backend)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    if not binaries_present():
        reason = f"no PostgreSQL: set {ENV_URL} or install the postgresql package"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set: PostgreSQL tests never skip in CI)")
        pytest.skip(reason)
    workdir = tempfile.mkdtemp(prefix="np-pg-")
    try:
        out = subprocess.run(
            [str(SCRIPT), "start", workdir], check=True, capture_output=True, text=True
        )
        yield out.stdout.strip()
    finally:
        subprocess.run([str(SCRIPT), "stop", workdir], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", workdir], check=False)


def with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


async def create_schema(server_url: str) -> str:
    """A fresh empty schema; returns its name."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    return name


async def drop_schema(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()
