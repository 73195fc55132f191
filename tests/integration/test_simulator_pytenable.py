"""The simulator driven by pyTenable (Tenable's own Nessus SDK, synchronous, over requests)
through every call it offers that the simulator serves, over HTTPS with the simulator's CA
pinned. Each call runs in a thread so the simulator keeps answering on the test's loop; the
test stops at the first call that misbehaves. Time moves through the injected FakeClock."""

from __future__ import annotations

import asyncio
import csv
import io
import warnings
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.simulator import SimulatedScanner, SimulatorOptions, start_simulators
from nessus_pool.simulator.policies import CUSTOM_POLICY_UUID
from nessus_pool.simulator.reports import CSV_COLUMNS

with warnings.catch_warnings():
    # pyTenable's dependencies warn at import time on some versions; not our concern here
    warnings.simplefilter("ignore")
    from tenable.errors import APIError, NotFoundError
    from tenable.nessus import Nessus

T = TypeVar("T")
SCAN_S = 4.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock, tmp_path: Path) -> AsyncIterator[tuple[SimulatedScanner, Path]]:
    options = SimulatorOptions(scan_seconds=SCAN_S, seed=3)
    cluster = await start_simulators(1, options=options, clock=clock, tls_dir=tmp_path / "tls")
    assert cluster.ca_file is not None
    try:
        yield cluster.scanners[0], cluster.ca_file
    finally:
        await cluster.close()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Nessus]]]:
    """Log in with pyTenable (in a thread: its constructor already calls the simulator)."""
    opened: list[Nessus] = []

    async def open_(url: str, ca_file: Path, **auth: str) -> Nessus:
        if not auth:
            auth = {"access_key": "sim-access-key", "secret_key": "sim-secret-key"}
        # ssl_verify goes to requests' ``verify``: a CA bundle path pins the simulator's CA
        nessus = await call(Nessus, url=url, ssl_verify=str(ca_file), retries=0, **auth)
        opened.append(nessus)
        return nessus

    yield open_
    for nessus in opened:
        nessus._session.close()


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def _finished_scan(nessus: Nessus, clock: FakeClock, body: dict[str, Any]) -> int:
    scan = (await call(nessus.scans.create, **body))["scan"]
    await call(nessus.scans.launch, scan["id"])
    await clock.advance(SCAN_S + 1)
    details = await call(nessus.scans.details, scan["id"])
    assert details["info"]["status"] == "completed"
    return int(scan["id"])


async def test_every_pytenable_call_the_simulator_serves(
    sim: tuple[SimulatedScanner, Path],
    clock: FakeClock,
    connect: Callable[..., Awaitable[Nessus]],
) -> None:
    scanner, ca_file = sim
    assert scanner.url.startswith("https://")
    nessus = await connect(scanner.url, ca_file)

    # server and session
    props = await call(nessus.server.properties)
    assert props["nessus_type"] == "Nessus Manager"
    assert (await call(nessus.server.status))["status"] == "ready"
    assert (await call(nessus.session.get))["username"] == "nessus"

    # editor: list, then the details of every template the list names
    templates = await call(nessus.editor.template_list, "scan")
    assert {t["name"] for t in templates} >= {"basic", "advanced", "compliance"}
    for template in templates:
        details = await call(nessus.editor.template_details, "scan", template["uuid"])
        assert (details["uuid"], details["title"]) == (template["uuid"], template["title"])
        assert details["settings"]["basic"]["inputs"]
    basic = next(t["uuid"] for t in templates if t["name"] == "basic")

    # policies: list, details, create, copy, delete
    policies = await call(nessus.policies.list)
    assert [p["name"] for p in policies] == ["Tuned TCP ports", "Linux CIS audit"]
    assert all(p["template_uuid"] == CUSTOM_POLICY_UUID for p in policies)
    cis = next(p for p in policies if p["name"] == "Linux CIS audit")
    assert (await call(nessus.policies.details, cis["id"]))["settings"]["name"] == cis["name"]
    created = await call(nessus.policies.create, basic, settings={"name": "Team basic"})
    assert created["policy_name"] == "Team basic"
    copied = await call(nessus.policies.copy, created["policy_id"])
    assert copied["name"] == "Copy of Team basic"
    await call(nessus.policies.delete, copied["id"])
    names = [p["name"] for p in await call(nessus.policies.list)]
    assert names == ["Tuned TCP ports", "Linux CIS audit", "Team basic"]

    # agents (Nessus Manager): the iterator pages with limit/offset; JSON; details
    agents = [a async for a in _aiter(await call(nessus.agents.list, limit=2))]
    assert [a["id"] for a in agents] == [1, 2, 3]
    as_json = await call(nessus.agents.list, return_json=True)
    assert [a["name"] for a in as_json] == [a["name"] for a in agents]
    assert (await call(nessus.agents.details, 2))["id"] == 2

    # scanners
    (local,) = await call(nessus.scanners.list)
    assert local["name"] == "Local Scanner" and "key" not in local

    # folders: create, list, delete
    folder_id = await call(nessus.folders.create, "Team A")
    assert "Team A" in {f["name"] for f in await call(nessus.folders.list)}

    # a scan from a saved policy, in the new folder
    scan_id = await _finished_scan(
        nessus,
        clock,
        {
            "uuid": cis["template_uuid"],
            "settings": {
                "name": "pytenable-policy",
                "text_targets": "192.0.2.7, db.example.com",
                "policy_id": cis["id"],
                "folder_id": folder_id,
            },
        },
    )
    details = await call(nessus.scans.details, scan_id)
    assert details["info"]["policy"] == "Linux CIS audit"
    # a compliance audit lists its checks beside the vulnerabilities, counted per host
    assert [c["count"] for c in details["compliance"]] == [2] * 8
    assert {c["plugin_family"] for c in details["compliance"]} == {"Policy Compliance"}
    assert details["info"]["folder_id"] == folder_id
    listed = await call(nessus.scans.list, folder_id=folder_id)
    assert [s["id"] for s in listed["scans"]] == [scan_id]

    # hosts and plugin output
    host = details["hosts"][0]
    host_view = await call(nessus.get, f"scans/{scan_id}/hosts/{host['host_id']}")
    plugin_ids = {v["plugin_id"] for v in host_view["vulnerabilities"]}
    assert len(plugin_ids) == len(host_view["vulnerabilities"]) > 0
    assert sum(v["count"] for v in host_view["vulnerabilities"]) == sum(
        c["count"] for c in host["severitycount"]["item"]
    )
    output = await call(nessus.scans.plugin_output, scan_id, host["host_id"], 19506)
    assert output["info"]["plugindescription"]["pluginid"] == "19506"
    assert "Nessus version" in output["outputs"][0]["plugin_output"]

    # exports: formats, then nessus, csv and html with the same findings
    formats = await call(nessus.scans.export_formats, scan_id)
    assert {"nessus", "csv", "html"} <= set(formats)
    nessus_doc = (await call(nessus.scans.export_scan, scan_id)).getvalue()
    items = [
        (h.get("name"), i.get("pluginID"), i.get("port"))
        for h in ET.fromstring(nessus_doc).iter("ReportHost")
        for i in h.iter("ReportItem")
    ]
    csv_doc = (await call(nessus.scans.export_scan, scan_id, format="csv")).getvalue()
    rows = list(csv.DictReader(io.StringIO(csv_doc.decode())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {(r["Host"], r["Plugin ID"], r["Port"]) for r in rows} == set(items)
    html_doc = (await call(nessus.scans.export_scan, scan_id, format="html")).getvalue()
    assert html_doc.count(b'<h2 class="host">') == 2
    assert html_doc.count(b"<tr><td>") == len(items)

    # tokens directly, as pyTenable's export helpers use them
    token = (await call(nessus.post, f"scans/{scan_id}/export", json={"format": "csv"}))["token"]
    assert (await call(nessus.tokens.status, token))["status"] in ("loading", "ready")

    # scan control and history: kill, then pause/resume/stop
    await call(nessus.scans.launch, scan_id)
    await call(nessus.scans.kill, scan_id)
    await clock.advance(1)
    await call(nessus.scans.launch, scan_id)
    await call(nessus.scans.pause, scan_id)
    await clock.advance(1)
    await call(nessus.scans.resume, scan_id)
    await clock.advance(1)
    await call(nessus.scans.stop, scan_id)
    await clock.advance(1)
    history = (await call(nessus.scans.details, scan_id))["history"]
    assert [h["status"] for h in history] == ["completed", "aborted", "canceled"]

    # deleting a folder moves its scans to the trash; then delete the scan
    await call(nessus.folders.delete, folder_id)
    assert (await call(nessus.scans.details, scan_id))["info"]["folder_id"] == 2
    await call(nessus.scans.delete, scan_id)
    with pytest.raises(NotFoundError):
        await call(nessus.scans.details, scan_id)


async def test_session_login_and_refusals_look_like_nessus(
    sim: tuple[SimulatedScanner, Path],
    clock: FakeClock,
    connect: Callable[..., Awaitable[Nessus]],
) -> None:
    scanner, ca_file = sim
    nessus = await connect(scanner.url, ca_file, username="nessus", password="nessus")
    assert (await call(nessus.session.get))["username"] == "nessus"
    scan_id = await _finished_scan(
        nessus,
        clock,
        {
            "uuid": CUSTOM_POLICY_UUID,
            "settings": {"name": "s", "text_targets": "192.0.2.1", "policy_id": 100},
        },
    )
    with pytest.raises(APIError) as bad_format:
        await call(nessus.post, f"scans/{scan_id}/export", json={"format": "docx"})
    assert bad_format.value.code == 400
    with pytest.raises(APIError) as no_policy:
        await call(
            nessus.scans.create,
            uuid=CUSTOM_POLICY_UUID,
            settings={"name": "x", "text_targets": "192.0.2.1", "policy_id": 999},
        )
    assert no_policy.value.code == 400
    assert "policy_id" in no_policy.value.response.json()["error"]
    with pytest.raises(NotFoundError):
        await call(nessus.scans.plugin_output, scan_id, 99, 19506)
    with pytest.raises(APIError) as builtin:
        await call(nessus.folders.delete, 3)
    assert builtin.value.code == 403


async def _aiter(iterator: Any) -> AsyncIterator[Any]:
    """Pages of a pyTenable iterator are fetched in a thread, item by item."""
    sentinel = object()
    while (item := await asyncio.to_thread(next, iterator, sentinel)) is not sentinel:
        yield item
