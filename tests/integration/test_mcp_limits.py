"""Adversarial sweep (fixsec items 1-3): what one token can hold on the port. Long-lived
requests (streams, waits) get half of the connection cap and a quarter of that per token,
so probes and admin requests are never starved; sessions have a per-token quota and a
flood of ``initialize`` evicts only the flooding token's own sessions; subscriptions have a
per-token and a global budget. Real daemon on 127.0.0.1, the real aiohttp client, every
wait bounded."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.api.guard import LongLivedQuota
from nessus_pool.api.mcp import events
from nessus_pool.api.mcp.http import McpHttp
from nessus_pool.api.mcp.stdio import Output, pump
from nessus_pool.api.mcp.tasks import TaskModel
from nessus_pool.config import parse_config
from nessus_pool.daemon import Daemon
from tests.conftest import write_config
from tests.integration.test_mcp_http import ACCEPT, ADMIN, META, MODERN, READER
from tests.integration.test_mcp_sdk import mcp_config
from tests.integration.test_mcp_subscriptions import read_sse
from tests.integration.test_mcp_tasks import EXT, Wire

READER2 = "read-token-second-0123456789"
CAP = 40  # connections: long-lived 20 in all, 5 per token


def _config(tmp_path: Path, **server: Any) -> dict[str, Any]:
    cfg = mcp_config(
        tmp_path,
        server={
            "listen": "127.0.0.1:0",
            "admin-tokens": [ADMIN],
            "read-tokens": [READER, READER2],
            **server,
        },
    )
    cfg["simulator"]["scan-seconds"] = 600.0
    return cfg


async def _daemon(tmp_path: Path, **server: Any) -> Daemon:
    path = write_config(tmp_path / "nessus-pool.toml", _config(tmp_path, **server))
    d = Daemon(parse_config(path.read_text(), str(path)), config_path=str(path))
    d.max_connections = CAP
    await d.start()
    return d


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = await _daemon(tmp_path)
    yield d
    await d.stop()


def _listen(rid: int, token: str) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "subscriptions/listen",
        "params": {"notifications": {"resourcesListChanged": True}, "_meta": META},
    }
    headers = {
        **ACCEPT,
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "subscriptions/listen",
    }
    return body, headers


async def _open_listen(
    http: aiohttp.ClientSession, url: str, rid: int, token: str
) -> aiohttp.ClientResponse:
    """POST a listen; the response is left open (a stream) for the caller to close."""
    body, headers = _listen(rid, token)
    resp = await http.post(url, data=json.dumps(body), headers=headers)
    if resp.status == 200:
        async with asyncio.timeout(10):
            line = await resp.content.readline()
            while not line.startswith(b"data: "):
                line = await resp.content.readline()
        assert json.loads(line[6:])["method"] == "notifications/subscriptions/acknowledged"
    return resp


def test_the_quota_derives_from_the_cap_and_counts_per_token() -> None:
    q = LongLivedQuota(768)  # the cap on a host with the common 1024 open-file limit
    assert (q.total_max, q.per_token_max) == (384, 96)
    keys = [bytes([i]) for i in range(5)]
    for k in keys[:4]:
        for _ in range(96):
            assert q.acquire(k) is None
    refused = q.acquire(keys[0])
    assert refused is not None and "384" in refused  # the global share is full first
    q.release(keys[1])
    refused = q.acquire(keys[0])
    assert refused is not None and "per-token limit 96" in refused
    assert q.acquire(keys[4]) is None  # another token gets the freed place
    for k in keys[:4]:
        for _ in range(96):
            q.release(k)
    q.release(keys[4])
    assert q.total == 0 and all(q.held(k) == 0 for k in keys)


async def test_a_read_token_cannot_fill_the_port_with_listen_streams(daemon: Daemon) -> None:
    """The reported attack, scaled to a cap of 40: more listen streams than the cap with one
    read token. Only its quota (5) is acknowledged, the rest are refused at once (429,
    the limit named, the connection closed), and probes, admin requests and another
    token's streams still get through while the streams stay open."""
    url = f"{daemon.url}/mcp"
    streams: list[aiohttp.ClientResponse] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        try:
            refusals: list[tuple[int, Any, str | None]] = []
            for i in range(CAP + 10):
                resp = await _open_listen(http, url, i, READER)
                if resp.status == 200:
                    streams.append(resp)
                else:
                    refusals.append(
                        (resp.status, await resp.json(), resp.headers.get("Retry-After"))
                    )
                    resp.release()
            assert len(streams) == 5
            assert len(refusals) == CAP + 5
            status, body, retry = refusals[0]
            assert (status, retry) == (429, "1")
            assert body["error"]["code"] == -32600 and body["id"] == 5
            assert "per-token limit 5" in body["error"]["message"]
            # a wait on a scan is long-lived too: the same token gets no more
            w = Wire(http, url, READER)
            wait = {"name": "wait_for_scan", "arguments": {"task_id": "0" * 16}}
            status, msgs = await w.modern("tools/call", wait)
            assert status == 429 and "per-token limit" in msgs[0]["error"]["message"]
            # probes, the admin token and another read token are served
            for path in ("/healthz", "/readyz"):
                async with http.get(f"{daemon.url}{path}") as r:
                    assert r.status == 200, path
            admin = Wire(http, url, ADMIN)
            status, msgs = await admin.modern("tools/list", {})
            assert status == 200 and "tools" in msgs[-1]["result"]
            other = await _open_listen(http, url, 100, READER2)
            streams.append(other)
            assert other.status == 200
        finally:
            for s in streams:
                s.close()


async def test_an_initialize_flood_evicts_only_the_flooding_tokens_sessions(
    tmp_path: Path,
) -> None:
    d = await _daemon(tmp_path, **{"mcp-max-sessions": 3, "mcp-sessions-per-token": 2})
    try:
        url = f"{d.url}/mcp"
        async with aiohttp.ClientSession() as http:
            victim = Wire(http, url, ADMIN)
            await victim.initialize()
            first = Wire(http, url, READER)
            await first.initialize()
            headers = {"Accept": "text/event-stream", **first.auth,
                       "Mcp-Session-Id": first.sid or ""}  # fmt: skip
            async with http.get(url, headers=headers) as stream:
                assert stream.status == 200
                flood = [Wire(http, url, READER) for _ in range(20)]
                for w in flood:
                    await w.initialize()
                # the flooder's oldest session is gone, and its GET stream ended with it
                async with asyncio.timeout(10):
                    rest = await stream.content.read()
                assert b"data:" not in rest
            assert (await first.post({"jsonrpc": "2.0", "id": 9, "method": "ping"},
                                     first._legacy_headers()))[0] == 404  # fmt: skip
            # the other token's session is untouched
            assert (await victim.rpc("ping", {})).get("result") == {}
            # the table is full of live sessions of two tokens: a third token is refused,
            # and nobody is evicted for it
            await Wire(http, url, READER).initialize()
            third = await http.post(url, data=json.dumps({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}),
                headers={**ACCEPT, "Authorization": f"Bearer {READER2}"})  # fmt: skip
            body = await third.json()
            assert third.status == 429 and "mcp-max-sessions = 3" in body["error"]["message"]
            assert "Mcp-Session-Id" not in third.headers
            assert (await victim.rpc("ping", {})).get("result") == {}
    finally:
        await d.stop()


# --- request ids (item 6) --------------------------------------------------------------------


async def test_ids_outside_the_safe_integer_range_are_refused(daemon: Daemon) -> None:
    """An id of 2**70 would be echoed as a number no JavaScript client reads back exactly:
    -32600 naming the id, answered with id null; the edges of the range are served."""
    async with aiohttp.ClientSession() as http:
        headers = {**ACCEPT, "Authorization": f"Bearer {READER}",
                   "MCP-Protocol-Version": MODERN, "Mcp-Method": "ping"}  # fmt: skip
        for rid, ok in ((2**70, False), (-(2**53), False), (2**53 - 1, True), (-(2**53 - 1), True)):
            body = {"jsonrpc": "2.0", "id": rid, "method": "ping", "params": {"_meta": META}}
            async with http.post(f"{daemon.url}/mcp", data=json.dumps(body), headers=headers) as r:
                reply = await r.json()
            if ok:
                assert r.status == 200 and reply["id"] == rid and "result" in reply, reply
            else:
                assert r.status == 400 and reply["id"] is None, reply
                assert reply["error"]["code"] == -32600
                assert "id must be a string or an integer" in reply["error"]["message"]


class _Replies(Output):
    """The protocol stream as a list (the pump's only use of it is send)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.lines.append(json.loads(data))
        self.arrived.set()


async def test_stdio_refuses_a_duplicate_in_flight_id_and_the_first_stays_cancellable() -> None:
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    out = _Replies()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def on_request(msg: dict[str, Any]) -> bytes | None:
        started.set()
        try:
            await asyncio.Event().wait()  # a long wait_for_scan
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    async def on_notification(msg: dict[str, Any]) -> None:
        return None

    def send(msg: dict[str, Any]) -> None:
        inbox.put_nowait(json.dumps(msg).encode() + b"\n")

    pumping = asyncio.create_task(pump(inbox.get, out, on_request, on_notification))
    try:
        send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {}})
        async with asyncio.timeout(10):
            await started.wait()
        send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {}})
        async with asyncio.timeout(10):
            await out.arrived.wait()
        assert out.lines[0]["id"] == 7 and out.lines[0]["error"]["code"] == -32600
        assert "already in flight" in out.lines[0]["error"]["message"]
        send({"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 7}})  # fmt: skip
        async with asyncio.timeout(10):
            await cancelled.wait()  # the first request, not a replacement
    finally:
        inbox.put_nowait(b"")  # EOF
        async with asyncio.timeout(10):
            await pumping


# --- subscription budgets (item 3) -----------------------------------------------------------


async def test_subscriptions_have_a_per_token_and_a_global_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """256 subscriptions per session times 10,000 sessions was ~1.4 GB for a read token:
    a token's sessions share one budget (6 here) and all together another (10); ending a
    session or unsubscribing gives its places back."""
    monkeypatch.setattr(events, "SUBSCRIPTIONS_PER_TOKEN", 6)
    monkeypatch.setattr(events, "SUBSCRIPTIONS_TOTAL", 10)
    d = await _daemon(tmp_path)

    def uri(i: int) -> str:
        return f"nessus-pool://scans/{i:016x}/report"

    async def subscribe(w: Wire, i: int) -> dict[str, Any]:
        return await w.rpc("resources/subscribe", {"uri": uri(i)})

    try:
        url = f"{d.url}/mcp"
        async with aiohttp.ClientSession() as http:
            s1, s2 = Wire(http, url, READER), Wire(http, url, READER)
            await s1.initialize()
            await s2.initialize()
            for i in range(4):
                assert (await subscribe(s1, i))["result"] == {}
            for i in range(4, 6):
                assert (await subscribe(s2, i))["result"] == {}
            assert (await subscribe(s2, 4))["result"] == {}  # again: no new place
            over = await subscribe(s2, 6)
            assert over["error"]["code"] == -32602 and over["error"]["data"] == {"field": "uri"}
            assert "its limit is 6" in over["error"]["message"]
            admin = Wire(http, url, ADMIN)
            await admin.initialize()
            for i in range(10, 14):
                assert (await subscribe(admin, i))["result"] == {}
            full = await subscribe(admin, 14)
            assert "limit is 10" in full["error"]["message"]
            # a listen stream's subscriptions count against the global budget
            body, headers = _listen(50, READER2)
            body["params"]["notifications"] = {"resourceSubscriptions": [uri(20)]}
            async with http.post(url, data=json.dumps(body), headers=headers) as r:
                refused = await r.json()
            assert refused["error"]["data"] == {"field": "notifications.resourceSubscriptions"}
            # unsubscribing and ending a session give places back
            assert (await s1.rpc("resources/unsubscribe", {"uri": uri(0)}))["result"] == {}
            assert (await subscribe(admin, 14))["result"] == {}
            async with http.delete(url, headers={**s2.auth, **s2._legacy_headers()}) as r:
                assert r.status == 204
            for i in range(30, 32):
                assert (await subscribe(s1, i))["result"] == {}
            assert "limit is 10" in (await subscribe(s1, 32))["error"]["message"]
    finally:
        await d.stop()


# --- one read per change, however many streams (item 5) --------------------------------------


async def test_a_change_is_read_once_for_all_the_streams_that_report_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten listen streams on one task: each change of it builds its DetailedTask once, not
    once per stream (999 streams took /healthz p99 from 5 to 137 ms)."""
    d = await _daemon(tmp_path)
    streams: list[aiohttp.ClientResponse] = []
    try:
        assert d.service is not None
        url = f"{d.url}/mcp"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            admin = Wire(http, url, ADMIN)
            _, msgs = await admin.modern(
                "tools/call", {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.0.1"}}
            )
            task_id = msgs[-1]["result"]["structuredContent"]["task_id"]
            meta = {**META, "io.modelcontextprotocol/clientCapabilities": {"extensions": {EXT: {}}}}
            for i, token in enumerate([READER] * 5 + [READER2] * 5):
                body, headers = _listen(i, token)
                body["params"] = {"notifications": {"taskIds": [task_id]}, "_meta": meta}
                resp = await http.post(url, data=json.dumps(body), headers=headers)
                assert resp.status == 200
                streams.append(resp)
                first = await read_sse(resp, lambda m: len(m) >= 1)
                assert first[0]["params"]["notifications"] == {"taskIds": [task_id]}
            detailed_calls: list[str] = []
            real = TaskModel.detailed

            async def counted(self: TaskModel, v: Any) -> dict[str, Any]:
                detailed_calls.append(v.task_id)
                return await real(self, v)

            monkeypatch.setattr(TaskModel, "detailed", counted)
            changes: list[str] = []
            stop = d.service.on_task_change(lambda tid: changes.append(tid))
            try:
                await admin.modern(
                    "tools/call", {"name": "cancel_scan", "arguments": {"task_id": task_id}}
                )

                def ended(msgs: list[Any]) -> bool:
                    return any(m["params"].get("status") == "cancelled" for m in msgs)

                for s in streams:
                    await read_sse(s, ended)
            finally:
                stop()
        ours = [c for c in changes if c == task_id]
        assert ours and 0 < len(detailed_calls) <= len(ours), (detailed_calls, ours)
    finally:
        for s in streams:
            s.close()
        await d.stop()


def _mcp_http(d: Daemon) -> McpHttp:
    assert d.app is not None
    for route in d.app.router.routes():
        owner = getattr(inspect.unwrap(route.handler), "__self__", None)
        if isinstance(owner, McpHttp):
            return owner
    raise AssertionError("no /mcp routes")


async def test_an_expired_session_ends_its_get_stream(daemon: Daemon) -> None:
    """Idle expiry removes the session the same way DELETE does: its GET stream ends."""
    url = f"{daemon.url}/mcp"
    async with aiohttp.ClientSession() as http:
        w = Wire(http, url, READER)
        await w.initialize()
        headers = {"Accept": "text/event-stream", **w.auth, "Mcp-Session-Id": w.sid or ""}
        async with http.get(url, headers=headers) as stream:
            assert stream.status == 200
            _mcp_http(daemon).session_idle_s = 0.0  # every session is now past its idle time
            status, _ = await w.post({"jsonrpc": "2.0", "id": 3, "method": "ping"},
                                     w._legacy_headers())  # fmt: skip
            assert status == 404
            async with asyncio.timeout(10):
                await stream.content.read()  # EOF: the stream was closed with the session
        assert _mcp_http(daemon).sessions == {}
