"""Streamable HTTP transport rules at /mcp, checked with hand-built requests (aiohttp)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory
from tests.integration.test_mcp_sdk import SECRET, mcp_config

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ADMIN, READER = "admin-token-0123456789", "read-token-0123456789"


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(
        mcp_config(tmp_path, server={"listen": "127.0.0.1:0", "max-body-bytes": 4096,
                                     "allowed-origins": ["https://app.example"]},
                   security={"max-addresses-per-task": 16})
    )  # fmt: skip
    return d


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Mcp:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def post(
        self, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.http.post(self.url, data=data, headers={**ACCEPT, **(headers or {})}) as r:
            text = await r.text()
            payload = json.loads(text) if text and r.content_type == "application/json" else text
            return r.status, dict(r.headers), payload

    async def initialize(self, headers: dict[str, str] | None = None) -> str:
        status, h, body = await self.post(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}},
            },
            headers,
        )  # fmt: skip
        assert status == 200 and body["result"]["protocolVersion"] == "2025-06-18"
        return h["Mcp-Session-Id"]

    async def modern(
        self, method: str, params: dict[str, Any] | None = None, /, **headers: str
    ) -> tuple[int, dict[str, str], Any]:
        hdrs = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method, **headers}
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": method,
            "params": {**(params or {}), "_meta": META},
        }
        return await self.post(body, hdrs)


@pytest.fixture
def mcp(daemon: Daemon, http: aiohttp.ClientSession) -> Mcp:
    return Mcp(http, f"{daemon.url}/mcp")


def req(method: str, params: dict[str, Any] | None = None, rid: int = 2) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}


async def test_session_lifecycle(mcp: Mcp, http: aiohttp.ClientSession) -> None:
    sid = await mcp.initialize()
    assert len(sid) >= 22  # >= 128 random bits, url-safe
    hdr = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    status, _, _ = await mcp.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, hdr)
    assert status == 202
    status, _, body = await mcp.post(req("tools/list"), hdr)
    assert status == 200 and len(body["result"]["tools"]) == 18
    assert "resultType" not in body["result"]
    status, _, body = await mcp.post(req("tools/list"))
    assert status == 400 and body["error"]["code"] == -32600
    status, _, _ = await mcp.post(req("tools/list"), {"Mcp-Session-Id": "unknown-session"})
    assert status == 404
    status, _, body = await mcp.post(
        req("tools/list"), {**hdr, "MCP-Protocol-Version": "1999-01-01"}
    )
    assert status == 400 and body["error"]["code"] == -32022
    async with http.get(mcp.url, headers=hdr) as r:
        assert r.status == 405
    async with http.delete(mcp.url, headers=hdr) as r:
        assert r.status == 204
    status, _, _ = await mcp.post(req("tools/list"), hdr)
    assert status == 404


async def test_json_rpc_errors(mcp: Mcp) -> None:
    status, _, body = await mcp.post(None, raw=b"{not json")
    assert status == 400 and body["error"]["code"] == -32700 and body["id"] is None
    status, _, body = await mcp.post([req("ping")])
    assert status == 400 and body["error"]["code"] == -32600
    status, _, body = await mcp.post({"jsonrpc": "2.0", "id": 3})
    assert status == 400 and body["error"]["code"] == -32600
    sid = await mcp.initialize()
    hdr = {"Mcp-Session-Id": sid}
    status, _, body = await mcp.post(req("no/such"), hdr)
    assert status == 200 and body["error"]["code"] == -32601
    # arguments that do not fit the schema: a tool result the model can read (SEP-1303)
    status, _, body = await mcp.post(
        req("tools/call", {"name": "list_tasks", "arguments": {"limit": "ten"}}), hdr
    )
    result = body["result"]
    assert result["isError"] is True and result["structuredContent"]["field"] == "limit"
    assert "Expected `int`" in result["structuredContent"]["error"]
    status, _, body = await mcp.post(
        req("tools/call", {"name": "list_pools", "arguments": {"bogus": 1}}), hdr
    )
    assert body["result"]["isError"] is True and "bogus" in body["result"]["content"][0]["text"]
    # a tool we do not have, and arguments that are not an object, stay JSON-RPC errors
    status, _, body = await mcp.post(req("tools/call", {"name": "nope", "arguments": {}}), hdr)
    assert body["error"]["code"] == -32602 and body["error"]["data"] == {"field": "name"}
    status, _, body = await mcp.post(
        req("tools/call", {"name": "list_pools", "arguments": [1]}), hdr
    )
    assert body["error"]["code"] == -32602 and body["error"]["data"] == {"field": "arguments"}


async def test_modern_stateless_requests(mcp: Mcp) -> None:
    status, h, body = await mcp.modern("server/discover")
    assert status == 200 and MODERN in body["result"]["supportedVersions"]
    assert body["result"]["ttlMs"] >= 0 and "Mcp-Session-Id" not in h
    status, _, body = await mcp.modern("tools/list")
    assert body["result"]["resultType"] == "complete" and body["result"]["cacheScope"] == "public"
    status, _, body = await mcp.modern("tools/list", **{"Mcp-Method": "prompts/list"})
    assert status == 400 and body["error"]["code"] == -32020
    call = {"name": "list_pools", "arguments": {}}
    status, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": "list_tasks"})
    assert status == 400 and body["error"]["code"] == -32020
    status, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": "list_pools"})
    assert status == 200 and body["result"]["resultType"] == "complete"
    status, _, body = await mcp.modern("nope/nothing")
    assert status == 404 and body["error"]["code"] == -32601
    status, _, body = await mcp.post(req("tools/list"), {"MCP-Protocol-Version": MODERN})
    assert status == 400 and body["error"]["code"] == -32602
    status, _, _ = await mcp.post(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
        {"MCP-Protocol-Version": MODERN},
    )
    assert status == 202


async def test_progress_streams_as_sse(mcp: Mcp) -> None:
    _, _, body = await mcp.modern(
        "tools/call",
        {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.0.1"}},
        **{"Mcp-Name": "run_untrusted_scan"},
    )
    task_id = body["result"]["structuredContent"]["task_id"]
    params = {
        "name": "wait_for_scan",
        "arguments": {"task_id": task_id, "timeout_s": 30},
        "_meta": {**META, "progressToken": "tok"},
    }
    hdrs = {**ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
            "Mcp-Name": "wait_for_scan"}  # fmt: skip
    msg = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}
    async with mcp.http.post(mcp.url, json=msg, headers=hdrs) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        events = [
            json.loads(line[5:])
            for line in (await r.text()).splitlines()
            if line.startswith("data:")
        ]
    assert events[0]["method"] == "notifications/progress"
    assert events[0]["params"]["progressToken"] == "tok"
    assert events[-1]["id"] == 9
    assert events[-1]["result"]["structuredContent"]["status"] == "completed"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "https://app.example"}, 200),
        ({"Origin": "http://localhost:5173"}, 200),
        ({"Host": "evil.example:8835"}, 403),
    ],
)
async def test_origin_and_host(mcp: Mcp, headers: dict[str, str], status: int) -> None:
    got, _, _ = await mcp.modern("server/discover", **headers)
    assert got == status


async def test_body_limit(mcp: Mcp) -> None:
    # past the cap: max-body-bytes raised to what 16 addresses need (Config.body_limit_bytes)
    big = req("ping", {"pad": "x" * 100_000})
    status, _, _ = await mcp.post(big)
    assert status == 413


async def test_tokens_and_roles(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    d = await start_daemon(
        mcp_config(tmp_path, server={"listen": "127.0.0.1:0", "admin-tokens": [ADMIN],
                                     "read-tokens": [READER]})
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        mcp = Mcp(http, f"{d.url}/mcp")
        status, h, _ = await mcp.modern("tools/list")
        assert status == 401 and h["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await mcp.modern("tools/list", Authorization="Bearer wrong")
        assert status == 401
        read = {"Authorization": f"Bearer {READER}"}
        submit = {"name": "run_untrusted_scan", "arguments": {"targets": "10.2.0.1"}}
        status, _, body = await mcp.modern(
            "tools/call", submit, **{"Mcp-Name": "run_untrusted_scan"}, **read
        )
        assert status == 200 and body["result"]["isError"] is True
        assert "admin token" in body["result"]["content"][0]["text"]
        pools = {"name": "list_pools", "arguments": {}}
        status, _, body = await mcp.modern(
            "tools/call", pools, **{"Mcp-Name": "list_pools"}, **read
        )
        assert body["result"]["isError"] is False
        admin = {"Authorization": f"Bearer {ADMIN}"}
        status, _, body = await mcp.modern(
            "tools/call", submit, **{"Mcp-Name": "run_untrusted_scan"}, **admin
        )
        assert body["result"]["isError"] is False
        sid = await mcp.initialize(admin)  # a session answers only its own token
        status, _, _ = await mcp.post(req("tools/list"), {"Mcp-Session-Id": sid, **read})
        assert status == 404
        status, _, _ = await mcp.post(req("tools/list"), {"Mcp-Session-Id": sid, **admin})
        assert status == 200


async def test_secrets_never_echoed(mcp: Mcp) -> None:
    calls = [
        {"targets": "10.3.0.1", "ssh_username": "u", "ssh_password": SECRET},
        {"targets": "10.3.0.1", "ssh_password": SECRET},  # missing username: tool error
        {"targets": "10.3.0.1", "ssh_username": "u", "ssh_password": SECRET,
         "elevate_privileges_with": "sudo", "escalation_password": SECRET, "credential": "lab"},
        {"targets": "10.3.0.1", "ssh_username": "u", "ssh_password": SECRET, "bogus": SECRET},
    ]  # fmt: skip
    texts = []
    for args in calls:
        params = {"name": "run_authenticated_scan", "arguments": args}
        _, _, body = await mcp.modern(
            "tools/call", params, **{"Mcp-Name": "run_authenticated_scan"}
        )
        texts.append(json.dumps(body))
    task_id = json.loads(texts[0])["result"]["structuredContent"]["task_id"]
    for name in ("get_scan_status", "list_tasks"):
        args = {"task_id": task_id} if name == "get_scan_status" else {}
        _, _, body = await mcp.modern(
            "tools/call", {"name": name, "arguments": args}, **{"Mcp-Name": name}
        )
        texts.append(json.dumps(body))
    assert all(SECRET not in t for t in texts)
    assert '"isError": true' in texts[1] and '"isError": true' in texts[3]
    assert '"field": "bogus"' in texts[3]
