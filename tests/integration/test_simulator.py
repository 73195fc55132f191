"""The Nessus simulator driven by the real aiohttp client on port 0, time moved by FakeClock."""

from __future__ import annotations

import asyncio
import errno
import io
import xml.etree.ElementTree as etree
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.simulator import (
    Faults,
    SimulatedScanner,
    SimulatorCluster,
    SimulatorOptions,
    generate_export,
    start_simulators,
)
from nessus_pool.simulator.ports import free_port_range as free_port
from nessus_pool.simulator.state import TEMPLATES
from nessus_pool.simulator.targets import expand_targets

KEYS = {"X-ApiKeys": "accessKey=sim-access-key; secretKey=sim-secret-key;"}
BASIC = TEMPLATES[0][2]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cluster(clock: FakeClock) -> AsyncIterator[SimulatorCluster]:
    async with await start_simulators(
        1, options=SimulatorOptions(seed=7, scan_seconds=20), clock=clock
    ) as c:
        yield c


@pytest.fixture
def sim(cluster: SimulatorCluster) -> SimulatedScanner:
    return cluster.scanners[0]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=KEYS) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    sim: SimulatedScanner,
    method: str,
    path: str,
    body: Any = None,
    **kw: Any,
) -> tuple[int, Any]:
    async with http.request(method, sim.url + path, json=body, **kw) as resp:
        text = await resp.text()
        data: Any = None
        if resp.content_type == "application/json":
            data = await resp.json()
        return resp.status, data if data is not None else text


def scan_body(
    name: str = "scan-a",
    targets: str = "10.0.0.1, 10.0.0.2",
    user: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": BASIC,
        "settings": {"name": name, "text_targets": targets, "folder_id": 3},
    }
    if user is not None:
        body["credentials"] = {
            "add": {
                "Host": {
                    "SSH": [
                        {
                            "auth_method": "password",
                            "username": user,
                            "password": password,
                            "elevate_privileges_with": "Nothing",
                        }
                    ]
                }
            }
        }
    return body


async def create(http: aiohttp.ClientSession, sim: SimulatedScanner, **kw: Any) -> int:
    status, data = await call(http, sim, "POST", "/scans", scan_body(**kw))
    assert status == 200, data
    scan_id: int = data["scan"]["id"]
    return scan_id


async def scan_status(http: aiohttp.ClientSession, sim: SimulatedScanner, scan_id: int) -> str:
    status, data = await call(http, sim, "GET", f"/scans/{scan_id}")
    assert status == 200
    value: str = data["info"]["status"]
    return value


async def export(http: aiohttp.ClientSession, sim: SimulatedScanner, scan_id: int) -> bytes:
    status, data = await call(http, sim, "POST", f"/scans/{scan_id}/export", {"format": "nessus"})
    assert status == 200, data
    file_id = data["file"]
    assert isinstance(file_id, int) and isinstance(data["token"], str)
    seen = []
    for _ in range(5):
        _, st = await call(http, sim, "GET", f"/scans/{scan_id}/export/{file_id}/status")
        seen.append(st["status"])
        if st["status"] == "ready":
            break
    assert seen[0] == "loading" and seen[-1] == "ready"
    async with http.get(f"{sim.url}/scans/{scan_id}/export/{file_id}/download") as resp:
        assert resp.status == 200
        assert 'filename="' in resp.headers["Content-Disposition"]
        payload = await resp.read()
        assert int(resp.headers["Content-Length"]) == len(payload)
        return payload


def credentialed_lines(xml: bytes) -> list[str]:
    root = etree.fromstring(xml)
    out = []
    for item in root.iter("ReportItem"):
        if item.get("pluginID") == "19506":
            text = item.findtext("plugin_output") or ""
            out += [ln for ln in text.splitlines() if ln.startswith("Credentialed checks")]
    return out


def plugin_ids(xml: bytes) -> set[str]:
    return {item.get("pluginID", "") for item in etree.fromstring(xml).iter("ReportItem")}


# --- auth -----------------------------------------------------------------------------------


async def test_auth_api_keys_session_and_bad_keys(sim: SimulatedScanner) -> None:
    async with aiohttp.ClientSession() as anon:
        assert (await call(anon, sim, "GET", "/server/status"))[1]["status"] == "ready"
        status, data = await call(anon, sim, "GET", "/scans")
        assert (status, data) == (401, {"error": "Invalid Credentials"})
        bad = {"X-ApiKeys": "accessKey=nope; secretKey=sim-secret-key"}
        assert (await call(anon, sim, "GET", "/scans", headers=bad))[0] == 401
        assert (await call(anon, sim, "GET", "/scans", headers={"X-API-Token": "anything"}))[
            0
        ] == 401
        status, _ = await call(
            anon, sim, "POST", "/session", {"username": "nessus", "password": "wrong"}
        )
        assert status == 401
        status, data = await call(
            anon, sim, "POST", "/session", {"username": "nessus", "password": "nessus"}
        )
        assert status == 200
        cookie = {"X-Cookie": f"token={data['token']}"}
        status, data = await call(anon, sim, "GET", "/scans", headers=cookie)
        assert status == 200 and data["scans"] is None
        assert {f["name"] for f in data["folders"]} == {"Trash", "My Scans"}
        assert (await call(anon, sim, "DELETE", "/session", headers=cookie))[0] == 200
        assert (await call(anon, sim, "GET", "/scans", headers=cookie))[0] == 401
        spaced = {"X-ApiKeys": " accessKey = sim-access-key ;secretKey=sim-secret-key ; "}
        assert (await call(anon, sim, "GET", "/folders", headers=spaced))[0] == 200


async def test_server_properties_and_templates(
    sim: SimulatedScanner, http: aiohttp.ClientSession
) -> None:
    _, props = await call(http, sim, "GET", "/server/properties")
    assert props["nessus_type"] == "Nessus Manager"
    assert props["license"]["features"]["scan_api"] is True
    _, data = await call(http, sim, "GET", "/editor/scan/templates")
    basic = next(t for t in data["templates"] if t["name"] == "basic")
    assert basic["title"] == "Basic Network Scan" and len(basic["uuid"]) == 52


# --- lifecycle ------------------------------------------------------------------------------


async def test_full_lifecycle_with_valid_credentials(
    sim: SimulatedScanner, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    scan_id = await create(
        http, sim, targets="10.0.0.0/30, 10.0.1.1-3, db.example.com", user="audit", password="audit"
    )
    assert await scan_status(http, sim, scan_id) == "empty"
    status, data = await call(http, sim, "POST", f"/scans/{scan_id}/launch")
    assert status == 200 and len(data["scan_uuid"]) == 36
    assert (await call(http, sim, "POST", f"/scans/{scan_id}/launch"))[0] == 409
    assert await scan_status(http, sim, scan_id) == "pending"
    await clock.advance(2)
    _, first = await call(http, sim, "GET", f"/scans/{scan_id}")
    assert first["info"]["status"] == "running" and first["info"]["hostcount"] == 6
    status, data = await call(http, sim, "POST", f"/scans/{scan_id}/export", {"format": "nessus"})
    assert (status, data) == (409, {"error": "Can not export running scans"})
    await clock.advance(6)
    _, later = await call(http, sim, "GET", f"/scans/{scan_id}")
    before = [h["scanprogresscurrent"] for h in first["hosts"]]
    after = [h["scanprogresscurrent"] for h in later["hosts"]]
    assert all(a > b for a, b in zip(after, before, strict=True))
    await clock.advance(11.7)
    assert await scan_status(http, sim, scan_id) == "processing"
    await clock.advance(1)
    _, done = await call(http, sim, "GET", f"/scans/{scan_id}")
    assert done["info"]["status"] == "completed" and done["info"]["scan_end"]
    assert all(h["progress"] == "100-100/100-100" for h in done["hosts"])
    assert done["vulnerabilities"] and done["history"][0]["status"] == "completed"
    xml = await export(http, sim, scan_id)
    root = etree.fromstring(xml)
    assert root.tag == "NessusClientData_v2"
    assert len(root.findall("Report/ReportHost")) == 6
    assert set(credentialed_lines(xml)) == {"Credentialed checks : yes, as 'audit' via ssh"}
    assert {"141118", "110095"} <= plugin_ids(xml)
    assert not {"104410", "21745"} & plugin_ids(xml)
    tags = {t.get("name"): t.text for t in root.iter("tag")}
    assert tags["Credentialed_Scan"] == "true" and tags["host-fqdn"] == "db.example.com"


async def test_wrong_credentials_and_no_credentials(
    sim: SimulatedScanner, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    wrong = await create(http, sim, name="wrong", user="bob", password="nope")
    none = await create(http, sim, name="none")
    for scan_id in (wrong, none):
        assert (await call(http, sim, "POST", f"/scans/{scan_id}/launch"))[0] == 200
    await clock.advance(21)
    xml = await export(http, sim, wrong)
    assert set(credentialed_lines(xml)) == {"Credentialed checks : no"}
    assert {"104410", "21745"} <= plugin_ids(xml)
    failure = next(
        i for i in etree.fromstring(xml).iter("ReportItem") if i.get("pluginID") == "104410"
    )
    assert "User            : 'bob'" in (failure.findtext("plugin_output") or "")
    xml = await export(http, sim, none)
    assert set(credentialed_lines(xml)) == {"Credentialed checks : no"}
    assert not {"104410", "141118"} & plugin_ids(xml)


async def test_pause_resume_stop_kill(
    sim: SimulatedScanner, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    scan_id = await create(http, sim)
    await call(http, sim, "POST", f"/scans/{scan_id}/launch")
    await clock.advance(5)
    assert (await call(http, sim, "POST", f"/scans/{scan_id}/resume"))[0] == 409
    assert (await call(http, sim, "POST", f"/scans/{scan_id}/pause"))[0] == 200
    assert await scan_status(http, sim, scan_id) == "pausing"
    await clock.advance(1)
    assert await scan_status(http, sim, scan_id) == "paused"
    await clock.advance(100)  # paused time does not count
    assert (await call(http, sim, "DELETE", f"/scans/{scan_id}"))[0] == 409
    assert (await call(http, sim, "POST", f"/scans/{scan_id}/resume"))[0] == 200
    assert await scan_status(http, sim, scan_id) == "resuming"
    await clock.advance(1)
    assert await scan_status(http, sim, scan_id) == "running"
    assert (await call(http, sim, "POST", f"/scans/{scan_id}/stop"))[0] == 200
    assert await scan_status(http, sim, scan_id) == "stopping"
    await clock.advance(1)
    assert await scan_status(http, sim, scan_id) == "canceled"
    assert (await call(http, sim, "POST", f"/scans/{scan_id}/launch"))[0] == 200
    await clock.advance(1)
    assert (await call(http, sim, "POST", f"/scans/{scan_id}/kill"))[0] == 200
    assert await scan_status(http, sim, scan_id) == "aborted"
    _, data = await call(http, sim, "GET", f"/scans/{scan_id}")
    assert [h["status"] for h in data["history"]] == ["canceled", "aborted"]
    assert (await call(http, sim, "DELETE", f"/scans/{scan_id}"))[0] == 200
    assert (await call(http, sim, "GET", f"/scans/{scan_id}"))[0] == 404


async def test_create_validation(sim: SimulatedScanner, http: aiohttp.ClientSession) -> None:
    body = scan_body()
    body["uuid"] = "nope"
    assert (await call(http, sim, "POST", "/scans", body))[0] == 400
    status, data = await call(http, sim, "POST", "/scans", scan_body(name=""))
    assert status == 400 and "error" in data
    assert (await call(http, sim, "POST", "/scans", scan_body(targets=" ")))[0] == 400
    status, data = await call(http, sim, "POST", "/scans/999/launch")
    assert (status, data) == (404, {"error": "The requested file was not found."})


async def test_scan_api_off_answers_412(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    opts = SimulatorOptions(scan_api=False)
    async with await start_simulators(1, options=opts, clock=clock) as cluster:
        sim = cluster.scanners[0]
        _, props = await call(http, sim, "GET", "/server/properties")
        assert props["nessus_type"] == "Nessus Professional"
        assert props["license"]["features"]["scan_api"] is False
        status, data = await call(http, sim, "POST", "/scans", scan_body())
        assert (status, data) == (412, {"error": "API is not available"})
        foreign = sim.add_foreign_scan("made in the UI")
        assert (await call(http, sim, "POST", f"/scans/{foreign}/launch"))[0] == 412
        assert len(await export(http, sim, foreign)) > 0  # exports still work


async def test_stats_peak_running_and_duplicates(
    sim: SimulatedScanner, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    ids = [await create(http, sim, name=n) for n in ("a", "a", "b")]
    for scan_id in ids[:2]:
        await call(http, sim, "POST", f"/scans/{scan_id}/launch")
    await clock.advance(25)
    await call(http, sim, "POST", f"/scans/{ids[2]}/launch")
    foreign = sim.add_foreign_scan("someone else's", status="running")
    stats = sim.stats()
    assert (stats.created, stats.launched, stats.peak_running, stats.running) == (3, 3, 2, 1)
    assert stats.duplicates == 1
    assert {(s.id, s.status) for s in stats.scans} >= {(ids[0], "completed"), (foreign, "running")}
    _, data = await call(http, sim, "GET", "/_sim/stats", headers={})
    assert data["peak_running"] == 2 and data["duplicates"] == 1


# --- faults ---------------------------------------------------------------------------------


async def post_faults(sim: SimulatedScanner, http: aiohttp.ClientSession, **faults: Any) -> None:
    status, data = await call(http, sim, "POST", "/_sim/faults", faults)
    assert status == 200, data


async def test_fault_errors_rate_limit_and_bad_fault_input(
    sim: SimulatedScanner, http: aiohttp.ClientSession
) -> None:
    status, data = await call(http, sim, "POST", "/_sim/faults", {"error_rate": "x"})
    assert status == 400 and "$.error_rate" in data["error"]
    await post_faults(sim, http, error_rate=1.0)
    for _ in range(5):
        assert (await call(http, sim, "GET", "/scans"))[0] in (500, 502, 503)
    await post_faults(sim, http, rate_limit_rate=1.0)
    async with http.get(sim.url + "/scans") as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    await post_faults(sim, http)
    assert (await call(http, sim, "GET", "/scans"))[0] == 200


async def test_fault_drop_and_hang(sim: SimulatedScanner, http: aiohttp.ClientSession) -> None:
    sim.set_faults(Faults(drop_rate=1.0))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, sim, "GET", "/scans")
    sim.set_faults(Faults(hang_rate=1.0))
    with pytest.raises(TimeoutError):
        await call(http, sim, "GET", "/scans", timeout=aiohttp.ClientTimeout(total=0.3))
    sim.set_faults(Faults())
    assert (await call(http, sim, "GET", "/scans"))[0] == 200


async def test_fault_expire_sessions(sim: SimulatedScanner) -> None:
    async with aiohttp.ClientSession() as anon:
        _, data = await call(
            anon, sim, "POST", "/session", {"username": "nessus", "password": "nessus"}
        )
        cookie = {"X-Cookie": f"token={data['token']}"}
        assert (await call(anon, sim, "GET", "/scans", headers=cookie))[0] == 200
        sim.set_faults(Faults(expire_sessions=True))
        assert (await call(anon, sim, "GET", "/scans", headers=cookie))[0] == 401


async def test_fault_export_error_and_abort(
    sim: SimulatedScanner, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(Faults(abort_rate=1.0, export_error_rate=1.0))
    scan_id = await create(http, sim)
    await call(http, sim, "POST", f"/scans/{scan_id}/launch")
    await clock.advance(5)
    assert await scan_status(http, sim, scan_id) == "running"
    await clock.advance(6)
    assert await scan_status(http, sim, scan_id) == "aborted"
    _, data = await call(http, sim, "POST", f"/scans/{scan_id}/export", {"format": "nessus"})
    path = f"/scans/{scan_id}/export/{data['file']}"
    statuses = [(await call(http, sim, "GET", path + "/status"))[1]["status"] for _ in range(3)]
    assert statuses == ["loading", "loading", "error"]
    assert (await call(http, sim, "GET", path + "/download"))[0] == 404


async def test_export_ttl_and_tokens(
    sim: SimulatedScanner, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    foreign = sim.add_foreign_scan("old")
    _, data = await call(http, sim, "POST", f"/scans/{foreign}/export", {"format": "nessus"})
    await clock.advance(1)
    _, st = await call(http, sim, "GET", f"/tokens/{data['token']}/status")
    assert st["status"] == "ready"
    status, body = await call(http, sim, "GET", f"/tokens/{data['token']}/download")
    assert status == 200 and "NessusClientData_v2" in body
    await clock.advance(600)
    path = f"/scans/{foreign}/export/{data['file']}/status"
    assert (await call(http, sim, "GET", path))[0] == 404


async def test_go_down_and_come_up_on_same_port(
    sim: SimulatedScanner, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    scan_id = await create(http, sim)
    url = sim.url
    await sim.go_down()
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, sim, "GET", "/scans")
    await sim.come_up()
    assert sim.url == url
    assert await scan_status(http, sim, scan_id) == "empty"
    await post_faults(sim, http, down_for_s=30)
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, sim, "GET", "/scans")
    await clock.advance(30)
    for _ in range(20):  # the outage task needs a few loop turns to bind again
        if sim.is_up:
            break
        await clock.advance(0)
    assert (await call(http, sim, "GET", "/scans"))[0] == 200


class SignallingClock(FakeClock):
    """A FakeClock that tells when someone starts sleeping on it."""

    def __init__(self) -> None:
        super().__init__()
        self.slept = asyncio.Event()

    async def sleep(self, delay_s: float) -> None:
        self.slept.set()
        await super().sleep(delay_s)


async def test_latency_waits_on_the_clock(http: aiohttp.ClientSession) -> None:
    clock = SignallingClock()
    async with await start_simulators(1, clock=clock) as cluster:
        sim = cluster.scanners[0]
        sim.set_faults(Faults(latency_s=5))
        pending = asyncio.ensure_future(call(http, sim, "GET", "/scans"))
        await clock.slept.wait()
        assert not pending.done()
        await clock.advance(5)
        assert (await pending)[0] == 200


# --- exports and targets --------------------------------------------------------------------


async def test_same_seed_gives_byte_identical_exports(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    payloads = []
    for _ in range(2):
        async with await start_simulators(
            1, options=SimulatorOptions(seed=42), clock=FakeClock()
        ) as cluster:
            sim = cluster.scanners[0]
            scan_id = await create(http, sim, targets="10.1.0.0/29", user="audit", password="audit")
            await call(http, sim, "POST", f"/scans/{scan_id}/launch")
            await sim.clock.advance(21)  # type: ignore[attr-defined]
            payloads.append(await export(http, sim, scan_id))
    assert payloads[0] == payloads[1]


def test_generate_export_is_deterministic_and_sized() -> None:
    kw: dict[str, Any] = dict(
        hosts=["10.0.0.1", "h.example.com"],
        scan_name="a<&>'\"",
        credentialed=None,
        ssh_username=None,
        seed=3,
    )
    a = generate_export(**kw)
    assert a == generate_export(**kw) and a != generate_export(**{**kw, "seed": 4})
    root = etree.fromstring(generate_export(**{**kw, "items_per_host": 500}))
    assert [len(h.findall("ReportItem")) for h in root.iter("ReportHost")] == [500, 500]
    report = root.find("Report")
    assert report is not None and report.get("name") == "a<&>'\""


def test_expand_targets() -> None:
    assert expand_targets("10.0.0.0/30", limit=10) == ["10.0.0.1", "10.0.0.2"]
    assert expand_targets("10.0.0.1-10.0.0.3,10.0.0.2-4", limit=10) == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
    ]
    assert len(expand_targets("10.0.0.0/8", limit=256)) == 256
    assert expand_targets("Web.Example.com", limit=5) == ["web.example.com"]


async def test_port_range_start(clock: FakeClock) -> None:
    """Scanner i listens on port+i. Another process may take a port between our check and
    the bind (CI found one), so a range found busy is tried again elsewhere."""
    for _ in range(20):
        base = free_port(2)
        try:
            cluster = await start_simulators(2, port=base, clock=clock)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        async with cluster:
            assert [s.port for s in cluster.scanners] == [base, base + 1]
        return
    pytest.fail("no two consecutive free ports in 20 tries")


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/no/such/route", 404, "The requested file was not found."),
        ("GET", "/scans/1/launch", 405, "Method Not Allowed"),
        ("PATCH", "/scans", 405, "Method Not Allowed"),
    ],
)
async def test_unknown_routes_answer_json_like_nessus(
    sim: SimulatedScanner,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    status: int,
    message: str,
) -> None:
    async with http.request(method, sim.url + path) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        assert await resp.json() == {"error": message}
        if status == 405:
            assert resp.headers["Allow"]


async def test_too_large_body_answers_json_413(
    sim: SimulatedScanner, http: aiohttp.ClientSession
) -> None:
    async with http.post(sim.url + "/scans", data=io.BytesIO(b"x" * (8 * 1024 * 1024 + 1))) as resp:
        assert resp.status == 413
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()
