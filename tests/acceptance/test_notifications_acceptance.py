"""Acceptance: webhooks from the installed ``nessus-pool serve`` (embedded simulator) to a
receiver on 127.0.0.1 that verifies every signature: a delivery answered 500 once arrives
again, and a ``kill -9`` while a delivery is in flight loses nothing (it arrives after the
restart, with the same delivery id)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.simulator.ports import free_port_range as free_port
from tests.acceptance.test_acceptance import spawn, stop, wait_terminal
from tests.conftest import write_config
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.acceptance

SECRET = "acceptance-" + "9f" * 20


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver(SECRET) as r:
        yield r


def _config(tmp_path: Path, port: int, hook_url: str) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}"},
        "storage": {"path": str(tmp_path / "data")},
        "logging": {"format": "json"},
        "simulator": {"scanners": 1, "scan-seconds": 0.5, "pool": "lan", "seed": 3},
        "pools": [{"name": "lan", "poll-interval-s": 0.1}],
        "notifications": [
            {
                "name": "acceptance",
                "url": hook_url,
                "secret": {"env": "NP_ACCEPTANCE_HOOK_SECRET"},
                "events": ["completed"],
                "retry-base-delay-s": 0.2,
                "retry-max-delay-s": 1.0,
            }
        ],
    }


async def _submit(http: aiohttp.ClientSession, base: str, target: str) -> str:
    async with http.post(f"{base}/api/v1/scans", json={"targets": target}) as r:
        assert r.status == 202, await r.text()
        task_id: str = (await r.json())["task_id"]
    assert (await wait_terminal(http, base, [task_id]))[task_id] == "completed"
    return task_id


async def test_signed_deliveries_retry_after_500_and_survive_kill_9(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NP_ACCEPTANCE_HOOK_SECRET", SECRET)
    port = free_port()
    cfg = write_config(tmp_path / "np.toml", _config(tmp_path, port, receiver.url))
    base = f"http://127.0.0.1:{port}"
    receiver.script = [500]
    daemon = await spawn("serve", "--config", str(cfg), ready="daemon_ready")
    try:
        async with aiohttp.ClientSession() as http:
            first = await _submit(http, base, "10.0.0.1")
            got = await receiver.wait_for(lambda ds: any(x.status == 200 for x in ds), 30)
            assert [x.status for x in got] == [500, 200]
            assert got[0].delivery_id == got[1].delivery_id and got[0].body == got[1].body
            assert got[1].json()["task"]["task_id"] == first

            # the next delivery is held in flight, and the daemon killed meanwhile
            receiver.hold = True
            second = await _submit(http, base, "10.0.0.2")
            held = await receiver.wait_for(lambda ds: len(ds) == 3, 30)
            assert held[2].json()["task"]["task_id"] == second
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
        receiver.hold = False
        daemon = await spawn("serve", "--config", str(cfg), ready="daemon_ready")
        after = await receiver.wait_for(
            lambda ds: any(
                x.delivery_id == held[2].delivery_id and x.status == 200 for x in ds[3:]
            ),
            30,
        )
    finally:
        assert await stop(daemon) in (0, -signal.SIGKILL)
    assert all(x.signature_ok for x in after), [x.headers for x in after]
    assert {x.json()["task"]["task_id"] for x in after if x.status == 200} == {first, second}
