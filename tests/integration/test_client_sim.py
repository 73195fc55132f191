"""The real Nessus client against the simulator (a real aiohttp app on port 0)."""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.errors import (
    ExportError,
    RateLimitedError,
    RemoteNotFoundError,
    ScanApiUnavailableError,
    ScannerAuthError,
    ScannerTimeoutError,
    TransientScannerError,
)
from nessus_pool.models import Escalation, ScanSpec, SshCredential
from nessus_pool.nessus import NessusClient, RemotePhase, is_exportable, is_terminal
from nessus_pool.simulator import (
    Faults,
    SimulatedScanner,
    SimulatorCluster,
    SimulatorOptions,
    start_simulators,
)

T = TypeVar("T")
Calls = list[tuple[str, str, str, float]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _cluster(clock: FakeClock, *, scan_api: bool = True) -> SimulatorCluster:
    options = SimulatorOptions(scan_seconds=2.0, seed=1, scan_api=scan_api)
    return await start_simulators(1, options=options, clock=clock)


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[SimulatedScanner]:
    cluster = await _cluster(clock)
    try:
        yield cluster.scanners[0]
    finally:
        await cluster.close()


@pytest.fixture
def calls() -> Calls:
    return []


@pytest.fixture
async def client(
    sim: SimulatedScanner, clock: FakeClock, calls: Calls
) -> AsyncIterator[NessusClient]:
    async with NessusClient(
        "sim-1",
        sim.url,
        access_key="sim-access-key",
        secret_key="sim-secret-key",
        clock=clock,
        timeout_s=5.0,
        on_request=lambda *a: calls.append(a),
    ) as c:
        yield c


async def with_clock(clock: FakeClock, aw: Awaitable[T], step_s: float = 0.25) -> T:
    """Run ``aw`` while moving the fake clock, so sleeps on it return."""
    task = asyncio.ensure_future(aw)
    for _ in range(10_000):
        if task.done():
            break
        await clock.advance(step_s)
    return await task


def spec(name: str = "nessus-pool-t1-a1", **kw: Any) -> ScanSpec:
    return ScanSpec(name=name, targets=["10.0.0.1", "10.0.0.2"], description="sim", **kw)


AUDIT = SshCredential(username="audit", password="audit")


async def test_probe_ready(client: NessusClient) -> None:
    cap = await client.probe()
    assert cap.reachable and cap.ready and cap.scan_api and not cap.export_only
    assert cap.nessus_type == "Nessus Manager" and cap.version
    assert cap.message.endswith(": ready")


async def test_export_only_scanner(clock: FakeClock) -> None:
    cluster = await _cluster(clock, scan_api=False)
    try:
        sim = cluster.scanners[0]
        async with NessusClient(
            "pro-1", sim.url, access_key="sim-access-key", secret_key="sim-secret-key", clock=clock
        ) as c:
            cap = await c.probe()
            assert cap.reachable and cap.ready and cap.export_only and not cap.scan_api
            assert "export-only" in cap.message and "Nessus Professional" in cap.message
            with pytest.raises(ScanApiUnavailableError) as info:
                await c.create_scan(spec())
            assert not info.value.transient and info.value.status == 412
            assert sim.stats().created == 0
    finally:
        await cluster.close()


async def test_full_lifecycle(
    client: NessusClient, sim: SimulatedScanner, clock: FakeClock, tmp_path: Path
) -> None:
    cred = SshCredential(
        username="audit",
        password="audit",
        elevate_privileges_with=Escalation.SUDO,
        escalation_password="audit",
    )
    remote = await client.create_scan(spec(credential=cred))
    assert remote.name == "nessus-pool-t1-a1"
    details = await client.scan_details(remote.id)
    assert details.phase is RemotePhase.EMPTY
    run_uuid = await client.launch_scan(remote.id)
    assert run_uuid

    seen: list[int] = []
    phases: list[RemotePhase] = []
    for _ in range(40):
        d = await client.scan_details(remote.id)
        phases.append(d.phase)
        if d.progress_pct is not None:
            seen.append(d.progress_pct)
        if is_terminal(d.phase):
            break
        await clock.advance(0.25)
    assert phases[-1] is RemotePhase.COMPLETED and is_exportable(phases[-1])
    assert RemotePhase.RUNNING in phases
    assert seen == sorted(seen) and seen[-1] == 100
    assert any(0 < p < 100 for p in seen)
    assert d.uuid == run_uuid  # GET /scans/{id} reports the uuid of the run we launched
    assert {h.hostname for h in d.hosts} == {"10.0.0.1", "10.0.0.2"}

    dest = tmp_path / "exports" / "t1.nessus"
    res = await with_clock(clock, client.export_scan(remote.id, dest, poll_interval_s=0.5))
    data = dest.read_bytes()
    assert res.size_bytes == len(data) > 0
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    assert not dest.with_suffix(".part").exists()
    root = ET.fromstring(data)
    assert root.tag == "NessusClientData_v2"
    stats = sim.stats()
    assert (stats.created, stats.launched, stats.duplicates) == (1, 1, 0)

    await client.delete_scan(remote.id)
    with pytest.raises(RemoteNotFoundError):
        await client.scan_details(remote.id)


async def test_pause_resume_stop(client: NessusClient, clock: FakeClock) -> None:
    remote = await client.create_scan(spec())
    await client.launch_scan(remote.id)
    await clock.advance(0.5)
    await client.pause_scan(remote.id)
    for _ in range(20):
        if (await client.scan_details(remote.id)).phase is RemotePhase.PAUSED:
            break
        await clock.advance(0.25)
    d = await client.scan_details(remote.id)
    assert d.phase is RemotePhase.PAUSED and not is_terminal(d.phase)
    await client.resume_scan(remote.id)
    await client.stop_scan(remote.id)
    for _ in range(40):
        d = await client.scan_details(remote.id)
        if is_terminal(d.phase):
            break
        await clock.advance(0.25)
    assert d.phase is RemotePhase.CANCELED


async def test_find_scans_by_name(client: NessusClient, clock: FakeClock) -> None:
    assert await client.find_scans_by_name("dup") == []
    first = await client.create_scan(spec("dup"))
    await clock.advance(2.0)
    second = await client.create_scan(spec("dup"))
    await client.create_scan(spec("other"))
    found = await client.find_scans_by_name("dup")
    assert [s.id for s in found] == [second.id, first.id]
    assert all(s.phase is RemotePhase.EMPTY for s in found)
    assert len(await client.list_scans()) == 3


async def test_session_auth_relogin_after_expiry(sim: SimulatedScanner, clock: FakeClock) -> None:
    calls: Calls = []
    async with NessusClient(
        "sim-1",
        sim.url,
        username="nessus",
        password="nessus",
        clock=clock,
        on_request=lambda *a: calls.append(a),
    ) as c:
        assert await c.list_scans() == []
        sim.set_faults(Faults(expire_sessions=True))
        remote = await c.create_scan(spec(credential=AUDIT))
        assert remote.id
    endpoints = [(e, o) for _, e, o, _ in calls]
    assert endpoints.count(("POST /session", "ok")) == 2
    # exactly one call saw the expired session (401), then went through after one re-login
    assert [o for _, o in endpoints].count("http_4xx") == 1
    assert endpoints[-1] == ("POST /scans", "ok")


async def test_bad_password_is_auth_error(sim: SimulatedScanner, clock: FakeClock) -> None:
    async with NessusClient(
        "sim-1", sim.url, username="nessus", password="wrong", clock=clock
    ) as c:
        with pytest.raises(ScannerAuthError):
            await c.probe()
    async with NessusClient(
        "sim-1", sim.url, access_key="sim-access-key", secret_key="wrong", clock=clock
    ) as c:
        with pytest.raises(ScannerAuthError):
            await c.list_scans()


async def test_server_errors_are_transient(
    client: NessusClient, sim: SimulatedScanner, calls: Calls
) -> None:
    sim.set_faults(Faults(error_rate=1.0))
    for _ in range(4):
        with pytest.raises(TransientScannerError) as info:
            await client.list_scans()
        assert info.value.status in (500, 502, 503) and info.value.endpoint == "GET /scans"
    assert {o for _, _, o, _ in calls} == {"http_5xx"}


async def test_dropped_connection_is_transient(client: NessusClient, sim: SimulatedScanner) -> None:
    sim.set_faults(Faults(drop_rate=1.0))
    with pytest.raises(TransientScannerError) as info:
        await client.list_scans()
    assert info.value.transient and info.value.status is None


async def test_rate_limited(client: NessusClient, sim: SimulatedScanner) -> None:
    sim.set_faults(Faults(rate_limit_rate=1.0))
    with pytest.raises(RateLimitedError) as info:
        await client.list_scans()
    assert info.value.retry_after_s == 1.0


async def test_hang_times_out(sim: SimulatedScanner, clock: FakeClock) -> None:
    sim.set_faults(Faults(hang_rate=1.0))
    async with NessusClient(
        "sim-1",
        sim.url,
        access_key="sim-access-key",
        secret_key="sim-secret-key",
        clock=clock,
        timeout_s=0.2,
    ) as c:
        with pytest.raises(ScannerTimeoutError):
            await c.list_scans()
    sim.set_faults(Faults())


async def test_scanner_down_then_up(client: NessusClient, sim: SimulatedScanner) -> None:
    await sim.go_down()
    cap = await client.probe()
    assert not cap.reachable and "unreachable" in cap.message
    with pytest.raises(TransientScannerError):
        await client.list_scans()
    await sim.come_up()
    assert (await client.probe()).ready


async def test_export_error_status(
    client: NessusClient, sim: SimulatedScanner, clock: FakeClock, tmp_path: Path
) -> None:
    remote = await client.create_scan(spec())
    await client.launch_scan(remote.id)
    await clock.advance(5.0)
    sim.set_faults(Faults(export_error_rate=1.0))
    with pytest.raises(ExportError, match="failed to generate"):
        await with_clock(clock, client.export_scan(remote.id, tmp_path / "x.nessus"))


async def test_export_of_running_scan(
    client: NessusClient, clock: FakeClock, tmp_path: Path
) -> None:
    remote = await client.create_scan(spec())
    await client.launch_scan(remote.id)
    with pytest.raises(ExportError, match="still running") as info:
        await client.export_scan(remote.id, tmp_path / "x.nessus")
    assert info.value.transient and info.value.status == 409


async def test_aborted_scan_is_terminal_and_exportable(
    client: NessusClient, sim: SimulatedScanner, clock: FakeClock, tmp_path: Path
) -> None:
    sim.set_faults(Faults(abort_rate=1.0))
    remote = await client.create_scan(spec())
    await client.launch_scan(remote.id)
    for _ in range(40):
        d = await client.scan_details(remote.id)
        if is_terminal(d.phase):
            break
        await clock.advance(0.25)
    assert d.phase is RemotePhase.ABORTED and is_exportable(d.phase)
    res = await with_clock(clock, client.export_scan(remote.id, tmp_path / "a.nessus"))
    assert res.size_bytes > 0
