"""Results end to end: export downloaded, parsed, validated per host, findings queryable,
diffed; authentication failures end `failed` with their results still there; metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config


async def run_scan(http: aiohttp.ClientSession, d: Daemon, body: dict[str, Any]) -> dict[str, Any]:
    assert d.service is not None
    async with http.post(f"{d.url}/api/v1/scans", json=body) as r:
        assert r.status == 202, await r.text()
        task_id = (await r.json())["task_id"]
    await d.service.wait_for(task_id, 60)
    async with http.get(f"{d.url}/api/v1/scans/{task_id}") as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


async def test_authenticated_success_failure_and_untrusted(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    async with aiohttp.ClientSession() as http:
        good, bad, untrusted = await asyncio.gather(
            run_scan(
                http,
                d,
                {
                    "targets": "10.9.0.1-10.9.0.3",
                    "scan_type": "authenticated",
                    "ssh_username": "audit",
                    "ssh_password": "audit",
                },
            ),
            run_scan(
                http,
                d,
                {
                    "targets": "10.9.0.1-10.9.0.3",
                    "scan_type": "authenticated",
                    "ssh_username": "audit",
                    "ssh_password": "wrong-pw-123",
                },
            ),
            run_scan(http, d, {"targets": "10.9.0.1-10.9.0.3"}),
        )
        assert good["status"] == "completed", good
        assert good["authentication_status"] == "success"
        assert good["results"]["summary"]["hosts_scanned"] == 3
        assert bad["status"] == "failed" and bad["reason"] == "authentication_failed"
        assert bad["dead_letter"] is False
        assert bad["results"]["validation"]["authentication_status"] == "failed"
        troubleshooting = " ".join(bad["results"]["validation"]["troubleshooting"])
        assert "audit" in troubleshooting
        assert "wrong-pw-123" not in str(bad)
        assert untrusted["status"] == "completed"
        assert untrusted["authentication_status"] == "not_applicable"

        # findings of the failed scan are still queryable, filtered and paged
        tid = bad["task_id"]
        async with http.get(
            f"{d.url}/api/v1/scans/{tid}/results", params={"min_severity": "1", "page_size": "5"}
        ) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        total = page["total"]
        assert total == sum(
            v for k, v in bad["results"]["summary"]["severity_breakdown"].items() if k != "info"
        )
        assert len(page["items"]) == min(5, total)
        assert all(item["severity"] >= 1 for item in page["items"])
        async with http.get(
            f"{d.url}/api/v1/scans/{tid}/results", params={"page_size": "100000"}
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "invalid_request"
        # the CWE filter (the simulator's plugins carry no <cwe>: every finding has cwes [])
        url = f"{d.url}/api/v1/scans/{tid}/results"
        async with http.get(url, params={"cwe": "CWE-79", "profile": "summary"}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["total"] == 0
        async with http.get(url, params={"page_size": "3"}) as r:
            assert [i["cwes"] for i in (await r.json())["items"]] == [[]] * 3
        async with http.get(url, params={"cwe": "XSS"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["field"] == "cwe"

        # raw export and diff against the earlier scan of the same targets
        async with http.get(f"{d.url}/api/v1/scans/{good['task_id']}/export") as r:
            assert r.status == 200
            body = await r.read()
        assert body.startswith(b"<?xml") and body.count(b"<ReportHost ") == 3
        async with http.get(
            f"{d.url}/api/v1/scans/{untrusted['task_id']}/compare", params={"base": good["task_id"]}
        ) as r:
            assert r.status == 200, await r.text()
            diff = (await r.json())["diff"]
        assert diff["fixed_total"] >= 1  # credentialed checks found more than untrusted ones

        async with http.get(f"{d.url}/metrics") as r:
            text = await r.text()
    assert 'nessus_pool_scans_total{pool="lan",status="completed"} 2.0' in text
    assert 'nessus_pool_scans_total{pool="lan",status="failed"} 1.0' in text
    assert 'nessus_pool_validation_total{authentication_status="failed",pool="lan"} 1.0' in text
    assert 'nessus_pool_scanner_capacity{pool="lan",scanner="sim-1"} 2.0' in text
    assert "nessus_pool_build_info" in text
    assert "wrong-pw-123" not in text
