"""Webhook notifications end to end in process: the real daemon with the simulator, a real
aiohttp receiver on 127.0.0.1 that verifies signatures, the outbox in the real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from nessus_pool.cli import main
from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config
from tests.webhook_receiver import Receiver

T = TypeVar("T")
SECRET = "whsec-" + "0123456789abcdef" * 2


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver(SECRET) as r:
        yield r


async def until(
    d: Daemon, read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout_s: float = 20
) -> T:
    """Read until ``ok``, re-reading only after the worker stores an outcome (bounded)."""
    assert d.notifications is not None and d.notifications.worker is not None
    async with asyncio.timeout(timeout_s):
        while True:
            nxt = d.notifications.worker.next_outcome()
            value = await read()
            if ok(value):
                nxt.cancel()
                return value
            await nxt


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


ADMIN = "admin-tok-0123456789"
READ = "read-tok-0123456789"


async def test_final_failure_is_listed_and_retried_through_api_and_cli(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver.script = [500, 503, 500, 500, 502]  # 'completed' and 'findings' both fail
    cfg = sim_config(
        tmp_path,
        scanners=1,
        notifications=[hook(receiver.url, **{"max-attempts": 2})],
        server={"listen": "127.0.0.1:0", "admin-tokens": [ADMIN], "read-tokens": [READ]},
    )
    d: Daemon = await start_daemon(cfg)
    assert d.service is not None and d.notifications is not None
    r = await d.service.submit(SubmitRequest(targets="10.9.0.2"))
    assert (await d.service.wait_for(r.task_id, 30)).status == "completed"
    await receiver.wait_for(lambda ds: len(ds) >= 4)

    page = await until(d, lambda: d.notifications.failed(), lambda p: len(p["deliveries"]) == 2)  # type: ignore[union-attr]
    ids = [x["delivery_id"] for x in page["deliveries"]]
    read = {"Authorization": f"Bearer {READ}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        # a dead receiver is not our health
        async with http.get(f"{d.url}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{d.url}/api/v1/notifications/failed", headers=read) as resp:
            assert resp.status == 200
            text = await resp.text()
            listed = await resp.json()
        assert SECRET not in text and receiver.url not in text and "127.0.0.1" not in text
        assert {x["delivery_id"] for x in listed["deliveries"]} == set(ids)
        assert all(x["attempts"] == 2 and x["last_error"].startswith("HTTP 5")
                   for x in listed["deliveries"])  # fmt: skip
        assert all(len(x["last_error"]) <= 200 for x in listed["deliveries"])
        assert listed["counts"]["failed"] == 2
        url = f"{d.url}/api/v1/notifications/{ids[0]}/retry"
        async with http.post(url, headers=read) as resp:
            assert resp.status == 403
        async with http.post(url) as resp:
            assert resp.status == 401
        for bad, status, field in (("nope", 400, "delivery_id"), ("dlv-" + "0" * 24, 404, "")):
            async with http.post(
                f"{d.url}/api/v1/notifications/{bad}/retry", headers=admin
            ) as resp:
                assert resp.status == status
                if field:
                    assert (await resp.json())["error"]["field"] == field
        async with http.get(f"{d.url}/api/v1/notifications/failed?limit=0", headers=read) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["field"] == "limit"
        async with http.get(f"{d.url}/api/v1/notifications/failed?color=red", headers=read) as resp:
            assert resp.status == 400
        async with http.post(url, headers=admin) as resp:
            assert resp.status == 200
            assert (await resp.json())["state"] in ("pending", "delivered")
    await receiver.wait_for(lambda ds: any(x.delivery_id == ids[0] and x.status == 200
                                           for x in ds))  # fmt: skip
    async with aiohttp.ClientSession() as http, http.post(url, headers=admin) as resp:
        assert resp.status == 409  # delivered now: nothing to retry

    # the CLI: list, then retry the other one
    monkeypatch.setenv("NESSUS_POOL_TOKEN", ADMIN)
    rc = await asyncio.to_thread(main, ["notifications", "failed", "--url", d.url])
    out = capsys.readouterr().out
    assert rc == 0 and ids[1] in out and ids[0] not in out and "1 failed delivery" in out
    rc = await asyncio.to_thread(main, ["notifications", "retry", ids[1], "--url", d.url])
    assert rc == 0 and ids[1] in capsys.readouterr().out
    await receiver.wait_for(lambda ds: any(x.delivery_id == ids[1] and x.status == 200
                                           for x in ds))  # fmt: skip
    rc = await asyncio.to_thread(main, ["notifications", "retry", "bad id", "--url", d.url])
    assert rc == 2
    assert all(x.signature_ok for x in receiver.deliveries)
    done = await until(d, d.notifications.failed, lambda p: p["counts"]["delivered"] == 2)
    assert done["deliveries"] == [] and done["counts"]["failed"] == 0
    metrics = d.metrics.render().decode()
    assert 'nessus_pool_notification_deliveries_total{outcome="failed",target="ops"} 2.0' in metrics
    assert 'nessus_pool_notification_deliveries_total{outcome="delivered",target="ops"} 2.0' in (
        metrics
    )


async def test_findings_below_min_severity_are_skipped_and_new_findings_compare(
    tmp_path: Path, start_daemon: DaemonFactory, receiver: Receiver
) -> None:
    targets = [
        hook(receiver.url, name="crit", events=["findings"], **{"min-severity": "critical"}),
        hook(receiver.url, name="new", events=["new_findings"], **{"min-severity": "info"}),
    ]
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, notifications=targets))
    assert d.service is not None and d.engine is not None
    first = await d.service.submit(SubmitRequest(targets="10.9.0.3"))
    assert (await d.service.wait_for(first.task_id, 30)).status == "completed"
    got = await receiver.wait_for(lambda ds: any(x.event == "new_findings" for x in ds))
    news = [x.json() for x in got if x.event == "new_findings"]
    assert news[0]["new_findings"]["base_task_id"] is None  # no earlier run: all are new
    total = await d.engine.store.count_findings(first.task_id)
    assert news[0]["new_findings"]["count"] == news[0]["matching"] == total
    # the same targets again: the simulator (seeded) finds the same, so nothing is new
    second = await d.service.submit(SubmitRequest(targets="10.9.0.3"))
    assert (await d.service.wait_for(second.task_id, 30)).status == "completed"
    from nessus_pool.store import outbox as ob

    await until(
        d,
        lambda: ob.by_state(d.engine.store, ob.SKIPPED, 100),  # type: ignore[arg-type,union-attr]
        lambda rows: any(r.task_id == second.task_id and r.event == "new_findings" for r in rows),
    )
    crit = [x.json() for x in receiver.deliveries if x.event == "findings"]
    for doc in crit:  # only sent when a critical one was found, and says how many
        assert doc["matching"] == doc["counts"]["critical"] > 0
        assert all(f["severity"] == "critical" for f in doc["top_findings"])


async def test_the_worker_dying_makes_readyz_fail(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    receiver: Receiver,
    allow_dead_background_tasks: bool,
) -> None:
    d: Daemon = await start_daemon(
        sim_config(tmp_path, scanners=1, notifications=[hook(receiver.url)])
    )
    assert d.service is not None and d.notifications is not None
    assert (await d.readiness())["ready"]

    async def broken(*_: object) -> bytes | None:
        raise RuntimeError("bug in prepare")

    d.notifications.worker.prepare = broken  # type: ignore[union-attr]
    r = await d.service.submit(SubmitRequest(targets="10.9.0.4"))
    assert (await d.service.wait_for(r.task_id, 30)).status == "completed"
    worker_task = next(t for t in d.engine.supervisor.tasks if t.get_name() == "notify:outbox")  # type: ignore[union-attr]
    await asyncio.wait([worker_task], timeout=20)
    assert not (await d.readiness())["ready"]
    assert "notify:outbox" in (await d.readiness())["engine_failure"]


async def test_addresses_are_checked_on_resolution_and_redirects_not_followed(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.unit.test_notify_unit import _FakeDns

    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    once = {"max-attempts": 1, "events": ["completed"]}
    targets = [
        # a public-looking name that resolves to a private address: refused
        hook("https://evil.example/hook", name="evil", **once),
        # an internal name the config allows: delivered (resolved to the receiver)
        hook(f"http://internal.example:{port}/hook", name="internal",
             **{**once, "allow-hosts": ["internal.example"]}),
        # a receiver that answers with a redirect to the metadata service: not followed
        hook(receiver.url.replace("127.0.0.1", "localhost"), name="redirect", **once),
    ]  # fmt: skip
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, notifications=targets))
    assert d.service is not None and d.notifications is not None
    assert d.notifications.worker is not None
    d.notifications.worker.dns = _FakeDns(
        {
            "evil.example": ["10.0.0.5"],
            "internal.example": ["127.0.0.1"],
            "localhost": ["127.0.0.1"],
        }
    )
    receiver.script = [302]  # the first delivery to arrive is answered with a redirect
    r = await d.service.submit(SubmitRequest(targets="10.9.0.5"))
    assert (await d.service.wait_for(r.task_id, 30)).status == "completed"
    # (wait until the page's list and its counts agree: two reads)
    page = await until(d, d.notifications.failed, lambda p: p["counts"]["failed"] >= 1 and
                       p["counts"]["failed"] + p["counts"]["delivered"] == 3 and
                       len(p["deliveries"]) == p["counts"]["failed"])  # fmt: skip
    errors = {x["target"]: x["last_error"] for x in page["deliveries"]}
    assert "evil" in errors and "resolves to 10.0.0.5" in errors["evil"]
    assert len(receiver.deliveries) == 2  # internal and redirect reached it; evil never did
    redirected = [x for x in receiver.deliveries if x.status == 302]
    assert len(redirected) == 1
    failed_target = next(t for t, e in errors.items() if "redirects are not followed" in e)
    assert failed_target in ("internal", "redirect")
    assert page["counts"]["delivered"] == 1
    assert SECRET not in caplog.text


async def test_a_slow_receiver_holds_only_its_own_deliveries(
    tmp_path: Path, start_daemon: DaemonFactory, receiver: Receiver
) -> None:
    slow = await Receiver(SECRET).start()
    slow.hold = True  # takes every request and never answers
    try:
        targets = [
            hook(slow.url, name="slow", events=["completed"], **{"timeout-s": 60}),
            hook(receiver.url, name="fast", events=["completed"]),
        ]
        d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, notifications=targets))
        assert d.service is not None
        first = await d.service.submit(SubmitRequest(targets="10.9.0.6"))
        assert (await d.service.wait_for(first.task_id, 30)).status == "completed"
        await slow.wait_for(lambda ds: len(ds) == 1)
        second = await d.service.submit(SubmitRequest(targets="10.9.0.7"))
        assert (await d.service.wait_for(second.task_id, 30)).status == "completed"
        # the fast target gets the second scan's delivery while the first is still held
        got = await receiver.wait_for(lambda ds: len(ds) == 2, timeout_s=15)
        assert {x.json()["task"]["task_id"] for x in got} == {first.task_id, second.task_id}
        held = await slow.wait_for(lambda ds: len(ds) == 2, timeout_s=15)
        assert all(x.signature_ok for x in held)
    finally:
        await slow.close()
