"""compare against the daemon and the simulator: a host the newer scan never scanned is
"not rescanned", never "fixed"; the default base is the last completed scan."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_results_flow import run_scan


async def test_compare_with_a_base_that_scanned_more_hosts(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    async with aiohttp.ClientSession() as http:
        old = await run_scan(http, d, {"targets": "10.9.1.1-10.9.1.2"})
        new = await run_scan(http, d, {"targets": "10.9.1.1"})
        assert (old["status"], new["status"]) == ("completed", "completed")
        async with http.get(
            f"{d.url}/api/v1/scans/{new['task_id']}/compare", params={"base": old["task_id"]}
        ) as r:
            assert r.status == 200, await r.text()
            diff = (await r.json())["diff"]
    # the simulator reports the same findings for a host each time: nothing was fixed
    assert diff["fixed_total"] == 0 and diff["fixed"] == []
    assert diff["not_rescanned_total"] > 0
    assert {f["host"] for f in diff["not_rescanned"]} == {"10.9.1.2"}
    assert (diff["hosts_not_rescanned"], diff["hosts_new"]) == (["10.9.1.2"], [])
    assert diff["unchanged_total"] > 0


async def test_the_default_base_is_the_last_completed_scan(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    body = {"targets": "10.9.2.1", "scan_type": "authenticated", "ssh_username": "audit"}
    async with aiohttp.ClientSession() as http:
        good = await run_scan(http, d, body | {"ssh_password": "audit"})
        bad = await run_scan(http, d, body | {"ssh_password": "wrong-pw-123"})
        latest = await run_scan(http, d, body | {"ssh_password": "audit"})
        assert [s["status"] for s in (good, bad, latest)] == ["completed", "failed", "completed"]
        async with http.get(f"{d.url}/api/v1/scans/{latest['task_id']}/compare") as r:
            assert r.status == 200, await r.text()
            doc = await r.json()
    # the failed one in between (its results are still stored) is not "completed"
    assert doc["base_task_id"] == good["task_id"]


async def test_mcp_compare_scans_keeps_unscanned_hosts_out_of_fixed(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    """MCP's compare_scans goes through the same service comparison as the admin API: a host
    the newer scan never scanned is not rescanned there too (it listed them as fixed)."""
    from mcp import Client

    from tests.integration.test_mcp_sdk import text_of

    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    async with aiohttp.ClientSession() as http:
        old = await run_scan(http, d, {"targets": "10.9.3.1-10.9.3.2"})
        new = await run_scan(http, d, {"targets": "10.9.3.1"})
    async with Client(f"{d.url}/mcp", mode="legacy") as client:
        args = {"task_id": new["task_id"], "base_task_id": old["task_id"], "limit": 100}
        result = await client.call_tool("compare_scans", args)
        assert not result.is_error, text_of(result)
        diff = result.structured_content["diff"]
    assert diff["fixed_total"] == 0 and diff["fixed"] == []
    assert diff["not_rescanned_total"] > 0
    assert {f["host"] for f in diff["not_rescanned"]} == {"10.9.3.2"}
    assert diff["hosts_not_rescanned"] == ["10.9.3.2"]
