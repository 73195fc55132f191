"""The request-size limit fits the per-task address limit: a list of addresses just past
``security.max-addresses-per-task`` is refused by the address limit (400 naming ``targets``),
not by the body cap (413) that a JSON array of that many addresses would otherwise exceed."""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path

import aiohttp

from nessus_pool.config import parse_config
from tests.conftest import DaemonFactory, sim_config

LIMIT = 65_536


def addresses(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("10.128.0.0"))
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


def test_body_limit_is_raised_to_what_the_address_limit_needs() -> None:
    cfg = parse_config("[security]\nmax-addresses-per-task = 65536\n").config
    assert cfg.server.max_body_bytes == 1024 * 1024
    longest = len(json.dumps({"targets": ["255.255.255.255"] * LIMIT}))
    assert cfg.body_limit_bytes >= longest > cfg.server.max_body_bytes
    small = parse_config("[security]\nmax-addresses-per-task = 16\n").config
    assert small.body_limit_bytes == small.server.max_body_bytes  # never lowered


async def test_one_address_past_the_limit_is_a_400_not_a_413(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await start_daemon(sim_config(tmp_path, security={"max-addresses-per-task": LIMIT}))
    body = json.dumps({"targets": addresses(LIMIT + 1)}).encode()
    assert len(body) > 1024 * 1024  # past the configured max-body-bytes
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{d.url}/api/v1/scans",
            data=io.BytesIO(body),
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        answer = await r.json()
    assert r.status == 400, answer
    assert answer["error"]["field"] == "targets"
    assert str(LIMIT) in answer["error"]["message"]
