"""TLS end to end: the real Nessus client (aiohttp) against the HTTPS simulator, as teams run
Nessus with its own CA: pinned CA works, a wrong CA fails saying so and how to fix it, the
explicit insecure opt-in works and warns. Plus the simulator's CA folder itself."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.daemon import Daemon
from nessus_pool.errors import PermanentScannerError
from nessus_pool.models import ScanSpec
from nessus_pool.nessus import NessusClient
from nessus_pool.simulator import SimulatorCluster, SimulatorOptions, start_simulators
from nessus_pool.simulator.tls import SimulatorTLSError, load_or_create
from tests.conftest import DaemonFactory, sim_config


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatorCluster]:
    options = SimulatorOptions(scan_seconds=2.0, seed=1)
    async with await start_simulators(
        1, options=options, clock=FakeClock(), tls_dir=tmp_path / "tls"
    ) as running:
        yield running


def _client(url: str, **tls: object) -> NessusClient:
    return NessusClient(
        "lan-1",
        url,
        access_key="sim-access-key",
        secret_key="sim-secret-key",
        timeout_s=5.0,
        **tls,  # type: ignore[arg-type]
    )


async def test_pinned_ca_file_runs_a_scan_over_https(cluster: SimulatorCluster) -> None:
    scanner = cluster.scanners[0]
    assert scanner.url.startswith("https://127.0.0.1:")
    async with _client(scanner.url, ca_file=str(cluster.ca_file)) as client:
        assert (await client.server_status()).status == "ready"
        remote = await client.create_scan(ScanSpec(name="tls", targets=["192.0.2.1"]))
        await client.launch_scan(remote.id)
    assert scanner.stats().launched == 1


async def test_no_ca_file_fails_naming_the_fix(cluster: SimulatorCluster) -> None:
    # the system trust store does not know the scanner's own CA, as with a fresh Nessus
    async with _client(cluster.scanners[0].url) as client:
        with pytest.raises(PermanentScannerError) as caught:
            await client.server_status()
    text = str(caught.value)
    assert "TLS certificate verification failed" in text
    assert "system trust store" in text and "ca-file" in text and "cacert.pem" in text


async def test_wrong_ca_file_fails_naming_the_file_and_the_fix(
    cluster: SimulatorCluster, tmp_path: Path
) -> None:
    other = load_or_create(tmp_path / "other-ca", ["127.0.0.1"])  # a CA that signed nothing here
    async with _client(cluster.scanners[0].url, ca_file=str(other.ca_file)) as client:
        with pytest.raises(PermanentScannerError) as caught:
            await client.server_status()
    text = str(caught.value)
    assert f"the CA file {other.ca_file} did not sign" in text
    assert "ca-file" in text and "cacert.pem" in text
    assert caught.value.scanner_id == "lan-1"


async def test_certificate_names_localhost_too(cluster: SimulatorCluster) -> None:
    url = cluster.scanners[0].url.replace("https://127.0.0.1", "https://localhost")
    async with _client(url, ca_file=str(cluster.ca_file)) as client:
        assert (await client.server_status()).status == "ready"


async def test_insecure_opt_in_works_and_warns(
    cluster: SimulatorCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        client = _client(cluster.scanners[0].url, verify_tls=False)
    async with client:
        assert (await client.server_status()).status == "ready"
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("tls_verification_disabled") == 1
    assert getattr(caplog.records[0], "scanner", None) == "lan-1"


async def test_https_client_against_plain_http_scanner_says_so(tmp_path: Path) -> None:
    async with (
        await start_simulators(1, options=SimulatorOptions(seed=1)) as plain,
        _client(plain.scanners[0].url.replace("http://", "https://")) as client,
    ):
        with pytest.raises(PermanentScannerError) as caught:
            await client.server_status()
    assert "does not speak TLS" in str(caught.value)


async def test_ca_folder_is_reused_private_and_owned(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "tls", ["127.0.0.1"])
    again = load_or_create(tmp_path / "tls", ["127.0.0.1"])
    # a pinned ca.pem stays valid across restarts: same CA, new server certificate
    assert first.ca_file.read_bytes() == again.ca_file.read_bytes()
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    for name in ("ca-key.pem", "server-key.pem"):
        assert (tmp_path / "tls" / name).stat().st_mode & 0o777 == 0o600
    ctx = ssl.create_default_context(cafile=str(again.ca_file))
    assert ctx.cert_store_stats()["x509_ca"] == 1
    if os.getuid() != 0:
        return  # only root can give the folder to someone else
    os.chown(tmp_path / "tls", 4242, 4242)
    with pytest.raises(SimulatorTLSError, match="belongs to another user"):
        load_or_create(tmp_path / "tls", ["127.0.0.1"])


async def test_serve_talks_to_its_embedded_simulator_over_pinned_https(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=0.3))
    assert d.sim_cluster is not None and d.service is not None
    sim = d.sim_cluster.scanners[0]
    assert sim.url.startswith("https://")
    # the CA lives with the daemon's data, private to its user, and is what the client pins
    ca_dir = tmp_path / "data" / "simulator-tls"
    assert d.sim_cluster.ca_file == ca_dir / "ca.pem"
    assert (ca_dir / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{d.url}/api/v1/scans", json={"targets": "192.0.2.5"}) as r,
    ):
        assert r.status in (200, 201, 202), await r.text()
        task_id = (await r.json())["task_id"]
    done = await d.service.wait_for(task_id, 30)
    assert done.status == "completed", done
    assert sim.stats().launched == 1
