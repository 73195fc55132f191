"""Shared fixtures: real daemons on port 0 with real SQLite files, the simulator, samples."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from nessus_pool.config import parse_config
from nessus_pool.daemon import Daemon

SAMPLES_DIR = Path(
    os.environ.get("NESSUS_SAMPLES_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "nessus-samples"
)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def sim_config(
    tmp_path: Path,
    *,
    scanners: int = 2,
    scan_seconds: float = 0.3,
    cap: int = 2,
    poll_s: float = 0.05,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "data")},
        "simulator": {
            "scanners": scanners,
            "scan-seconds": scan_seconds,
            "pool": "lan",
            "max-concurrent-scans": cap,
            "seed": 7,
        },
        "pools": [{"name": "lan", "poll-interval-s": poll_s, "max-queued": 1000}],
    }
    data.update(extra)
    return data


DaemonFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server for the whole session (see tests/pgcluster.py)."""
    from tests.pgcluster import pg_server

    with pg_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """Every store and engine test runs on both backends: ``None`` is SQLite (a file under
    the test's tmp_path), else a PostgreSQL URL whose fresh schema is dropped afterwards.
    Name it before ``start_daemon`` in a test's arguments, so that the daemons stop before
    their schema is dropped (fixtures are torn down in reverse order)."""
    if request.param == "sqlite":
        yield None
        return
    from tests.pgcluster import create_schema, drop_schema, with_search_path

    server: str = request.getfixturevalue("pg_server_url")
    schema = await create_schema(server)
    try:
        yield with_search_path(server, schema)
    finally:
        await drop_schema(server, schema)


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """Start real daemons from config dicts (written to a real file so reload works)."""
    started: list[Daemon] = []

    async def start(data: dict[str, Any], *, name: str = "nessus-pool.toml") -> Daemon:
        path = write_config(tmp_path / name, data)
        loaded = parse_config(path.read_text(), str(path))
        d = Daemon(loaded, config_path=str(path))
        await d.start()
        started.append(d)
        return d

    yield start
    for d in reversed(started):
        if d.store is not None and d.lock is not None and d.lock._fd is not None:
            await d.stop()


class _DeadTasks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "background_task_died":
            self.names.append(str(getattr(record, "task", "?")))


@pytest.fixture
def allow_dead_background_tasks() -> bool:
    """Request this in a test that kills a background task on purpose."""
    return True


@pytest.fixture(autouse=True)
def no_dead_background_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test during which a background task died (it would otherwise pass with a
    dead dispatcher or prober and only an error line in the log)."""
    handler = _DeadTasks()
    logger = logging.getLogger("nessus_pool")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.names and "allow_dead_background_tasks" not in request.fixturenames:
        pytest.fail(f"background tasks died: {', '.join(handler.names)}")
