"""Per-host results end to end: the daemon stores them as rows while it parses the export;
the status read carries only the summary and the host count; ``GET .../hosts`` and MCP's
``get_scan_results(view="hosts")`` page and filter them; bad paging input is a 400 naming
the parameter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.api.mcp.findings import results_text
from nessus_pool.api.mcp.schemas import Filters, ResultsArgs
from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_ops_cli import cli, one_pool, submit_wait
from tests.integration.test_results_flow import run_scan


async def _get(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with http.get(url, params=params) as r:
        return r.status, await r.json()


async def test_hosts_are_paged_filtered_and_not_in_the_status(
    tmp_path: Path, start_daemon: DaemonFactory, store_url: str | None
) -> None:
    extra = {} if store_url is None else {"storage": {"url": store_url}}
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2) | extra)
    async with aiohttp.ClientSession() as http:
        body = {
            "targets": "10.9.4.0/27",
            "scan_type": "authenticated",
            "ssh_username": "audit",
            "ssh_password": "audit",
        }
        view = await run_scan(http, d, body)
        assert view["status"] == "completed", view
        results = view["results"]
        n = results["summary"]["hosts_scanned"]
        assert n >= 25 and results["hosts_total"] == n
        assert "hosts" not in results  # the status read decodes no per-host data
        url = f"{d.url}/api/v1/scans/{view['task_id']}/hosts"

        status, first = await _get(http, url, page_size="7")
        assert status == 200, first
        assert (first["total"], first["pages"], len(first["hosts"])) == (n, -(-n // 7), 7)
        status, second = await _get(http, url, page_size="7", page="2")
        walked: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"page_size": "7"} | ({"cursor": cursor} if cursor else {})
            status, page = await _get(http, url, **params)
            assert status == 200, page
            walked += page["hosts"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(walked) == n and walked[7:14] == second["hosts"]
        assert len({h["name"] for h in walked}) == n
        assert sum(h["findings_total"] for h in walked) == results["summary"]["findings_total"]
        by_status = results["validation"]["hosts_by_status"]
        for auth, count in by_status.items():
            status, page = await _get(http, url, auth_status=auth, page_size="500")
            assert status == 200 and page["total"] == count == len(page["hosts"])
            assert {h["authentication_status"] for h in page["hosts"]} == {auth}
        status, high = await _get(http, url, min_severity="high", page_size="500")
        sev = [h["severity_breakdown"] for h in walked]
        want = [h for h, b in zip(walked, sev, strict=True) if b["critical"] + b["high"]]
        assert status == 200 and high["hosts"] == want

        # MCP: the same hosts as JSON-NL lines
        assert d.service is not None
        text = await results_text(
            d.service,
            ResultsArgs(task_id=view["task_id"], view="hosts", page=2, page_size=10),
        )
        lines = [json.loads(x) for x in text.splitlines()]
        assert lines[0]["total_hosts"] == n and lines[-1]["page"] == 2
        assert [x["name"] for x in lines[1:-1]] == [h["name"] for h in walked[10:20]]
        text = await results_text(
            d.service,
            ResultsArgs(
                task_id=view["task_id"],
                view="hosts",
                filters=Filters(min_severity="high"),
                page_size=100,
            ),
        )
        assert [json.loads(x)["name"] for x in text.splitlines()[1:-1]] == [h["name"] for h in want]

        # bad input: a 400 naming the parameter, never a 500
        for params, field in (
            ({"page_size": "0"}, "page_size"),
            ({"page_size": "501"}, "page_size"),
            ({"page": "0"}, "page"),
            ({"page": "99999999999999"}, "page"),
            ({"cursor": "²"}, "cursor"),
            ({"cursor": "99999999999999999999999"}, "cursor"),
            ({"auth_status": "root"}, "auth_status"),
            ({"min_severity": "²"}, "min_severity"),
            ({"min_severity": "9"}, "min_severity"),
            ({"host": "x"}, "host"),
            ({"page": "2", "cursor": "3"}, "cursor"),
        ):
            status, err = await _get(http, url, **params)
            assert status == 400, (params, err)
            assert err["error"]["field"] == field, (params, err)
        # a parameter given twice is refused, not read as its first value
        async with http.get(f"{url}?page_size=1&limit=2") as r:
            assert r.status == 400 and (await r.json())["error"]["field"] == "page_size"
        async with http.get(f"{url}?page_size=1&page_size=2") as r:
            assert r.status == 400, await r.text()
            assert "page_size is given more than once" in (await r.json())["error"]["message"]
        status, err = await _get(http, f"{d.url}/api/v1/scans/nosuchtask/hosts")
        assert status in (400, 404), err


async def test_cli_prints_a_page_of_hosts_and_the_next_cursor(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    rc, out, _ = await submit_wait(capsys, d, "--json")
    task_id = json.loads(out)["task_id"]
    rc, out, _ = await cli(capsys, d, "scan", "hosts", task_id, "--page-size", "1")
    header, row, footer = out.splitlines()
    assert rc == 0 and header.split()[:4] == ["HOST", "IP", "AUTH", "CRIT"]
    assert row.split()[0] == "10.0.0.1"
    assert footer == "1 of 2 hosts, page 1/2; next: --cursor 0"
    rc, out, _ = await cli(capsys, d, "scan", "hosts", task_id, "--cursor", "0", "--json")
    page = json.loads(out)
    assert rc == 0 and [h["name"] for h in page["hosts"]] == ["10.0.0.2"]
    rc, _, err = await cli(capsys, d, "scan", "hosts", task_id, "--page-size", "0")
    assert rc == 2 and "field: page_size" in err
