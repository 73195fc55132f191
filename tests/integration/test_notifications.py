"""Webhook notifications end to end in process: the real daemon with the simulator, a real
aiohttp receiver on 127.0.0.1 that verifies signatures, the outbox in the real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config
from tests.webhook_receiver import Receiver

SECRET = "whsec-" + "0123456789abcdef" * 2


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(SECRET).start()
    try:
        yield r
    finally:
        await r.close()


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "ops",
        "url": url,
        "secret": SECRET,
        "events": ["completed", "findings"],
        "min-severity": "info",
        "retry-base-delay-s": 0.05,
        "retry-max-delay-s": 0.2,
        "max-attempts": 3,
        **extra,
    }


async def test_signed_delivery_retried_after_a_500(
    tmp_path: Path, start_daemon: DaemonFactory, receiver: Receiver
) -> None:
    receiver.script = [500]
    d: Daemon = await start_daemon(
        sim_config(tmp_path, scanners=1, notifications=[hook(receiver.url)])
    )
    assert d.service is not None
    r = await d.service.submit(SubmitRequest(targets="10.9.0.1"))
    assert (await d.service.wait_for(r.task_id, 30)).status == "completed"
    got = await receiver.wait_for(
        lambda ds: {x.event for x in ds if x.status == 200} == {"completed", "findings"}
    )
    assert all(x.signature_ok for x in got)
    first, *rest = got
    assert first.status == 500
    # the retry is the same delivery (same id, same body) after the 500
    again = [x for x in rest if x.delivery_id == first.delivery_id]
    assert len(again) == 1 and again[0].body == first.body and again[0].status == 200
    completed = next(x.json() for x in got if x.event == "completed")
    assert completed["version"] == 1 and completed["task"]["task_id"] == r.task_id
    assert completed["delivery_id"] == next(x.delivery_id for x in got if x.event == "completed")
    assert sum(completed["counts"].values()) == await d.engine.store.count_findings(r.task_id)  # type: ignore[union-attr]
    assert SECRET not in "".join(x.body.decode() for x in got)
