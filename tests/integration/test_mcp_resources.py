"""Scan reports as MCP resources, read by the official MCP SDK client over Streamable HTTP and
stdio in both protocol eras, and on the raw wire with a read-only token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import TextResourceContents

from nessus_pool.api.mcp import resources
from nessus_pool.daemon import Daemon
from nessus_pool.models import TERMINAL_STATUSES, status_values
from tests.conftest import DaemonFactory, write_config
from tests.integration.test_mcp_http import ADMIN, READER, Mcp, req
from tests.integration.test_mcp_sdk import SECRET, _stdio, mcp_config

TERMINAL = set(status_values(TERMINAL_STATUSES))
#: resource not found: -32002 in the handshake era, -32602 from 2026-07-28 (SEP-2164)
NOT_FOUND = {"legacy": -32002, "auto": -32602}


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(mcp_config(tmp_path))
    return d


async def finished_scan(client: Client, target: str, **extra: Any) -> str:
    """Submit a scan and wait (on the server, not by sleeping) until it has ended."""
    sub = await client.call_tool("run_untrusted_scan", {"targets": target, **extra})
    assert not sub.is_error
    task_id: str = sub.structured_content["task_id"]
    done = await client.call_tool("wait_for_scan", {"task_id": task_id, "timeout_s": 60})
    assert done.structured_content["status"] in TERMINAL
    return task_id


async def read_text(client: Client, uri: str, mime_type: str = "application/json") -> str:
    result = await client.read_resource(uri)
    assert len(result.contents) == 1
    block = result.contents[0]
    assert isinstance(block, TextResourceContents)
    assert block.uri == uri and block.mime_type == mime_type
    assert SECRET not in block.text
    return block.text


async def read_json(client: Client, uri: str) -> Any:
    return json.loads(await read_text(client, uri))


async def exercise_resources(client: Client, mode: str) -> None:
    assert client.server_capabilities.resources is not None
    assert client.server_capabilities.resources.subscribe
    task_id = await finished_scan(client, "10.1.0.5", name="report-me")

    templates = (await client.list_resource_templates()).resource_templates
    assert {t.uri_template for t in templates} == {
        "nessus-pool://scans/{task_id}/report",
        "nessus-pool://scans/{task_id}/findings",
    }
    assert all(t.title and t.description for t in templates)
    assert {t.mime_type for t in templates} == {"application/json", "application/x-ndjson"}

    listed = await client.list_resources()
    uri = f"nessus-pool://scans/{task_id}/report"
    mine = [r for r in listed.resources if r.uri == uri]
    assert len(mine) == 1 and mine[0].mime_type == "application/json"
    assert mine[0].title == "report-me (completed)" and "10.1.0.5" in (mine[0].description or "")

    status = await client.call_tool("get_scan_status", {"task_id": task_id})
    report = await read_json(client, uri)
    assert report == status.structured_content
    assert report["status"] == "completed" and report["results_summary"]["hosts_scanned"] >= 1

    first_page = await client.call_tool("get_scan_results", {"task_id": task_id})
    findings = await read_text(
        client, f"nessus-pool://scans/{task_id}/findings", "application/x-ndjson"
    )
    assert first_page.structured_content == {"result": findings}
    lines = [json.loads(x) for x in findings.splitlines()]
    assert lines[-1]["type"] == "pagination" and lines[-1]["page"] == 1
    assert 0 < len(lines) - 3 <= 40

    missing = "nessus-pool://scans/doesnotexist/report"
    with pytest.raises(MCPError) as err:
        await client.read_resource(missing)
    assert err.value.code == NOT_FOUND[mode] and err.value.data == {"uri": missing}
    for bad in ("nessus-pool://scans//report", "file:///etc/passwd", f"{uri}/../x"):
        with pytest.raises(MCPError) as err:
            await client.read_resource(bad)
        assert err.value.code == -32602 and err.value.data == {"field": "uri"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_resources_over_http(daemon: Daemon, mode: str) -> None:
    async with Client(f"{daemon.url}/mcp", mode=mode, read_timeout_seconds=60) as client:
        await exercise_resources(client, mode)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_resources_through_the_connect_bridge(
    daemon: Daemon, tmp_path: Path, mode: str
) -> None:
    """``nessus-pool mcp --connect`` relays resources too (in the 2026-07-28 era it must send
    ``Mcp-Name`` with the uri, which the daemon checks)."""
    config = write_config(tmp_path / "other.toml", mcp_config(tmp_path / "unused"))
    params = _stdio(config, "--connect", f"{daemon.url}/mcp")
    async with Client(params, mode=mode, read_timeout_seconds=60) as client:
        await exercise_resources(client, mode)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_resources_over_stdio(tmp_path: Path, mode: str) -> None:
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    async with Client(_stdio(config), mode=mode, read_timeout_seconds=60) as client:
        await exercise_resources(client, mode)


async def test_list_pages_newest_first(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "RESOURCE_PAGE_SIZE", 2)
    async with Client(f"{daemon.url}/mcp", read_timeout_seconds=60) as client:
        submitted = [await finished_scan(client, f"10.4.0.{i}") for i in range(5)]
        uris: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await client.list_resources(cursor=cursor)
            assert len(page.resources) <= 2
            uris += [r.uri for r in page.resources]
            pages += 1
            if page.next_cursor is None:
                break
            assert page.next_cursor != cursor
            cursor = page.next_cursor
        assert pages >= 3
        assert uris == [f"nessus-pool://scans/{t}/report" for t in reversed(submitted)]
        with pytest.raises(MCPError) as err:
            await client.list_resources(cursor="not-a-cursor")
        assert err.value.code == -32602 and err.value.data == {"field": "cursor"}


async def test_read_token_on_the_wire(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    """A read-only token lists and reads reports; both eras' result shapes."""
    d = await start_daemon(
        mcp_config(tmp_path, server={"listen": "127.0.0.1:0", "admin-tokens": [ADMIN],
                                     "read-tokens": [READER]})
    )  # fmt: skip
    read = {"Authorization": f"Bearer {READER}"}
    async with aiohttp.ClientSession() as http:
        mcp = Mcp(http, f"{d.url}/mcp")
        status, _, body = await mcp.modern("server/discover", **read)
        assert body["result"]["capabilities"]["resources"] == {
            "subscribe": True,
            "listChanged": True,
        }

        call = {"name": "run_untrusted_scan", "arguments": {"targets": "10.5.0.1"}}
        _, _, body = await mcp.modern(
            "tools/call",
            call,
            **{"Mcp-Name": "run_untrusted_scan"},
            Authorization=f"Bearer {ADMIN}",
        )
        task_id = body["result"]["structuredContent"]["task_id"]
        wait = {"name": "wait_for_scan", "arguments": {"task_id": task_id, "timeout_s": 60}}
        _, _, body = await mcp.modern("tools/call", wait, **{"Mcp-Name": "wait_for_scan"}, **read)
        assert body["result"]["structuredContent"]["status"] == "completed"

        status, _, body = await mcp.modern("resources/list", **read)
        uri = f"nessus-pool://scans/{task_id}/report"
        assert status == 200 and [r["uri"] for r in body["result"]["resources"]] == [uri]
        assert body["result"]["resultType"] == "complete"
        assert body["result"]["cacheScope"] == "private" and body["result"]["ttlMs"] == 0
        status, _, body = await mcp.modern(
            "resources/read", {"uri": uri}, **{"Mcp-Name": uri}, **read
        )
        assert status == 200 and body["result"]["resultType"] == "complete"
        assert json.loads(body["result"]["contents"][0]["text"])["task_id"] == task_id
        status, _, body = await mcp.modern("resources/templates/list", **read)
        assert body["result"]["cacheScope"] == "public" and body["result"]["ttlMs"] > 0
        missing = "nessus-pool://scans/0123abcd/report"
        status, _, body = await mcp.modern(
            "resources/read", {"uri": missing}, **{"Mcp-Name": missing}, **read
        )
        assert status == 400 and body["error"]["code"] == -32602
        assert body["error"]["data"] == {"uri": missing}
        # Mcp-Name mirrors params.uri for resources/read: a mismatch is refused
        status, _, body = await mcp.modern(
            "resources/read", {"uri": uri}, **{"Mcp-Name": missing}, **read
        )
        assert status == 400 and body["error"]["code"] == -32020
        assert "params.uri" in body["error"]["message"]

        sid = await mcp.initialize(read)
        hdr = {"Mcp-Session-Id": sid, **read}
        _, _, body = await mcp.post(req("resources/read", {"uri": uri}), hdr)
        assert "resultType" not in body["result"] and "ttlMs" not in body["result"]
        assert json.loads(body["result"]["contents"][0]["text"])["status"] == "completed"
        status, _, body = await mcp.post(req("resources/read", {"uri": missing}), hdr)
        assert status == 200 and body["error"]["code"] == -32002
        assert body["error"]["data"] == {"uri": missing}
        _, _, body = await mcp.post(req("resources/read", {}), hdr)
        assert body["error"]["code"] == -32602 and body["error"]["data"] == {"field": "uri"}
        _, _, body = await mcp.post(req("resources/list", {"cursor": 5}), hdr)
        assert body["error"]["code"] == -32602
