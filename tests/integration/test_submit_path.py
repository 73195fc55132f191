"""Issue 18: the submit path's per-request work cut down, every check kept. A body that
came whole with its head is read without arming a deadline (a partial one still gets it);
the automatic pool choice with no scope to rank stops at the first pool that can launch."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.api import guard
from nessus_pool.daemon import Daemon
from nessus_pool.service.scoping import Scoping
from tests.conftest import DaemonFactory, sim_config


class _CountingAsyncio:
    """``asyncio`` for the guard module, counting the deadlines it arms."""

    def __init__(self) -> None:
        self.deadlines = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def timeout(self, delay: float | None) -> contextlib.AbstractAsyncContextManager[Any]:
        self.deadlines += 1
        return asyncio.timeout(delay)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> _CountingAsyncio:
    proxy = _CountingAsyncio()
    monkeypatch.setattr(guard, "asyncio", proxy)
    return proxy


async def test_a_whole_body_arms_no_deadline_and_a_partial_one_does(
    tmp_path: Path, start_daemon: DaemonFactory, counting: _CountingAsyncio
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    body = b'{"targets": "10.9.0.1", "name": "whole"}'
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{d.url}/api/v1/scans", data=body, headers=_JSON) as r,
    ):
        assert r.status == 202, await r.text()
    assert counting.deadlines == 0
    # half a body, then (once the server waits for the rest under its deadline) the rest
    reader, writer = await asyncio.open_connection(d.host, d.port)
    body = b'{"targets": "10.9.0.2", "name": "dripped"}'
    writer.write(
        b"POST /api/v1/scans HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body[:10]
    )
    try:
        async with asyncio.timeout(10):
            while counting.deadlines == 0:  # noqa: ASYNC110 (a counter, no event to wait on)
                await asyncio.sleep(0.005)
            writer.write(body[10:])
            head = await reader.readline()
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 202"), head
    assert counting.deadlines == 1


_JSON = {"Content-Type": "application/json"}


async def test_the_automatic_choice_checks_only_the_pools_it_needs(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = sim_config(tmp_path)
    # no pool restricts targets; the first has no scanner, so the second is the choice
    data["pools"] = [{"name": "empty"}, *data["pools"], *({"name": f"spare-{i}"} for i in range(5))]
    d: Daemon = await start_daemon(data)
    checked: list[str] = []
    real = Scoping.cannot_launch

    def counted(self: Scoping, name: str) -> str | None:
        checked.append(name)
        return real(self, name)

    monkeypatch.setattr(Scoping, "cannot_launch", counted)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{d.url}/api/v1/scans", json={"targets": "10.9.0.3"}) as r,
    ):
        doc = await r.json()
    assert (r.status, doc["pool"]) == (202, "lan"), doc
    # before: every pool was checked on every submit, the five spares too
    assert checked == ["empty", "lan"]
