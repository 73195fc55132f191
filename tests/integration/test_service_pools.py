"""A pool that can never launch a scan (no scanners, none enabled) is no destination: the
automatic choice skips it and an explicit submit to it is refused (409, field pool)
instead of a scan queued forever."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.cli import main
from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_ops_cli import cli


def _config(tmp_path: Path, *, lan_allows: list[str] | None) -> dict[str, Any]:
    data = sim_config(tmp_path)
    if lan_allows is not None:
        data["pools"][0]["allowed-targets"] = lan_allows
    data["pools"].append({"name": "dmz", "allowed-targets": ["192.0.2.0/24"]})
    return data


async def _post(http: aiohttp.ClientSession, d: Daemon, body: dict[str, Any]) -> Any:
    async with http.post(f"{d.url}/api/v1/scans", json=body) as r:
        return r.status, await r.json()


async def test_a_pool_without_scanners_is_skipped_or_refused(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(_config(tmp_path, lan_allows=["10.0.0.0/8"]))
    async with aiohttp.ClientSession() as http:
        # only dmz may scan it, and dmz can never launch: say so, queue nothing
        status, doc = await _post(http, d, {"targets": "192.0.2.5"})
        assert status == 409, doc
        assert doc["error"]["field"] == "pool"
        assert "pool 'dmz' has no scanners" in doc["error"]["message"]
        status, doc = await _post(http, d, {"targets": "192.0.2.5", "pool": "dmz"})
        assert status == 409, doc
        assert doc["error"]["field"] == "pool"
        assert "pool 'dmz' has no scanners" in doc["error"]["message"]
        status, doc = await _post(http, d, {"targets": "10.1.2.3"})
        assert (status, doc["pool"]) == (202, "lan")
        async with http.get(f"{d.url}/api/v1/scans", params={"pool": "dmz"}) as r:
            assert (await r.json())["tasks"] == []


async def test_the_automatic_choice_skips_the_narrower_pool_without_scanners(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    # lan (the simulator's, open) and dmz (narrower, no scanners): before, dmz won and the
    # scan waited there forever
    d: Daemon = await start_daemon(_config(tmp_path, lan_allows=None))
    async with aiohttp.ClientSession() as http:
        status, doc = await _post(http, d, {"targets": "192.0.2.5"})
    assert (status, doc["pool"]) == (202, "lan"), doc


async def test_scan_status_says_why_a_queued_scan_waits(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    for sid in ("sim-1", "sim-2"):
        rc, _, err = await cli(capsys, d, "scanners", "drain", sid)
        assert rc == 0, err
    rc, out, err = await cli(capsys, d, "scan", "submit", "10.0.0.1", "--json")
    assert rc == 0, err
    task_id = json.loads(out)["task_id"]
    rc, out, err = await cli(capsys, d, "scan", "status", task_id)
    assert rc == 0, err
    lines = out.splitlines()
    assert [ln.split() for ln in lines if ln.startswith("waiting for")] == [
        ["waiting", "for", "scanners_draining"]
    ]
    assert [ln.split()[1] for ln in lines if ln.startswith("status ")] == ["queued"]


def test_submit_help_says_how_the_pool_is_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["scan", "submit", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "first configured" not in help_text
    assert "most narrowly, among pools with an enabled scanner" in help_text


async def test_a_drain_says_it_lasts_until_a_restart(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.url}/api/v1/scanners/sim-1/drain") as r:
            assert r.status == 200
            view = await r.json()
        async with http.get(f"{d.url}/api/v1/scanners/sim-1") as r:
            shown = await r.json()
    assert view["draining"] is True and "until the daemon restarts" in view["note"]
    assert shown["draining"] is True and shown["note"] is None  # only the drain reply says it
    rc, _, err = await cli(capsys, d, "scanners", "drain", "sim-2")
    assert rc == 0 and "until the daemon restarts" in err
