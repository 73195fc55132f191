"""Subscriptions (issue 15 item 2): 2026-07-28 ``subscriptions/listen`` (SEP-2575) through the
official MCP SDK 2.3.0 client, and 2025-11-25 ``resources/subscribe`` with the session's GET
stream on the raw wire. Events come from the service's change hook; the tests wait on them
with a bound, never by sleeping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, write_config
from tests.integration.test_mcp_http import ACCEPT, ADMIN, META, MODERN, READER
from tests.integration.test_mcp_sdk import _stdio, mcp_config
from tests.integration.test_mcp_stdio import INIT, line, spawn
from tests.integration.test_mcp_tasks import EXT, Wire, tokens_config

LONG = 600.0  # scans that only end when cancelled


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    cfg = mcp_config(tmp_path)
    cfg["simulator"]["scan-seconds"] = LONG
    d: Daemon = await start_daemon(cfg)
    return d


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_listen_with_the_official_sdk(daemon: Daemon, tmp_path: Path, transport: str) -> None:
    if transport == "http":
        target: Any = f"{daemon.url}/mcp"
    else:  # its own embedded engine on its own storage
        cfg = mcp_config(tmp_path / "stdio")
        cfg["simulator"]["scan-seconds"] = LONG
        target = _stdio(write_config(tmp_path / "stdio.toml", cfg))
    async with Client(target, mode="auto", read_timeout_seconds=30) as client:
        assert client.session.protocol_version == "2026-07-28"
        out = await client.call_tool("run_untrusted_scan", {"targets": "10.8.0.1"})
        task_id = (out.structured_content or {})["task_id"]
        uri = f"nessus-pool://scans/{task_id}/report"
        other = "nessus-pool://scans/0123456789abcdef/report"
        async with client.listen(
            resources_list_changed=True, resource_subscriptions=[uri, other]
        ) as sub:
            assert sub.honored.resources_list_changed is True
            assert set(sub.honored.resource_subscriptions or ()) == {uri, other}
            await client.call_tool("cancel_scan", {"task_id": task_id})
            seen: set[Any] = set()
            async with asyncio.timeout(20):
                async for event in sub:
                    seen.add(event)
                    if {ResourceUpdated(uri=uri), ResourcesListChanged()} <= seen:
                        break
            assert ResourceUpdated(uri=other) not in seen


async def read_sse(resp: aiohttp.ClientResponse, want: Any, bound_s: float = 20.0) -> list[Any]:
    """Messages from an SSE stream until ``want(messages)`` holds (bounded)."""
    got: list[Any] = []
    async with asyncio.timeout(bound_s):
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if want(got):
                    return got
    raise AssertionError(f"stream ended before the events arrived: {got}")


def methods(msgs: list[Any]) -> list[str]:
    return [m.get("method") for m in msgs]


async def test_legacy_subscribe_on_the_get_stream(daemon: Daemon) -> None:
    async with aiohttp.ClientSession() as http:
        w = Wire(http, f"{daemon.url}/mcp")
        init = await w.initialize()
        assert init["capabilities"]["resources"] == {"subscribe": True, "listChanged": True}
        call = {"name": "run_untrusted_scan", "arguments": {"targets": "10.8.1.1"}, "task": {}}
        created = await w.rpc("tools/call", call)
        task_id = created["result"]["task"]["taskId"]
        uri = f"nessus-pool://scans/{task_id}/report"
        assert (await w.rpc("resources/subscribe", {"uri": uri}))["result"] == {}
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": w.sid or ""}
        async with http.get(w.url, headers=headers) as stream:
            assert stream.status == 200
            assert stream.content_type == "text/event-stream"
            # a second GET stream for the same session: refused
            async with http.get(w.url, headers=headers) as second:
                assert second.status == 409
            await w.rpc("tasks/cancel", {"taskId": task_id})

            def complete(msgs: list[Any]) -> bool:
                return {
                    "notifications/resources/updated",
                    "notifications/resources/list_changed",
                } <= set(methods(msgs)) and any(
                    m["params"].get("status") == "cancelled"
                    for m in msgs
                    if m["method"] == "notifications/tasks/status"
                )

            msgs = await read_sse(stream, complete)
        updated = [m["params"] for m in msgs if m["method"] == "notifications/resources/updated"]
        assert {p["uri"] for p in updated} == {uri}
        status = [m["params"] for m in msgs if m["method"] == "notifications/tasks/status"]
        assert {p["taskId"] for p in status} == {task_id}
        assert "_meta" not in status[-1]  # the task id is in the params
        # unsubscribe, bad uris
        assert (await w.rpc("resources/unsubscribe", {"uri": uri}))["result"] == {}
        bad = await w.rpc("resources/subscribe", {"uri": "x" * 600})
        assert bad["error"]["code"] == -32602 and bad["error"]["data"] == {"field": "uri"}
        # no session: no GET stream
        async with http.get(w.url, headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 405


async def test_listen_raw_wire_tasks_and_capability(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Task status on a listen stream needs the tasks extension (-32021 otherwise); the
    acknowledgement comes first and every frame carries the subscription id."""
    cfg = tokens_config(tmp_path)
    cfg["simulator"]["scan-seconds"] = LONG
    d: Daemon = await start_daemon(cfg)
    async with aiohttp.ClientSession() as http:
        w = Wire(http, f"{d.url}/mcp", ADMIN)
        _, msgs = await w.modern(
            "tools/call", {"name": "run_untrusted_scan", "arguments": {"targets": "10.8.2.1"}}
        )
        task_id = msgs[-1]["result"]["structuredContent"]["task_id"]
        hdrs = {**ACCEPT, "Authorization": f"Bearer {READER}",
                "MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"}  # fmt: skip

        def listen(meta: dict[str, Any], notifications: dict[str, Any]) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
                    "params": {"notifications": notifications, "_meta": meta}}  # fmt: skip

        async with http.post(w.url, json=listen(META, {"taskIds": [task_id]}), headers=hdrs) as r:
            body = await r.json()
            assert body["error"]["code"] == -32021
        meta = {**META, "io.modelcontextprotocol/clientCapabilities": {"extensions": {EXT: {}}}}
        bad = listen(meta, {"taskIds": [1, None]})
        async with http.post(w.url, json=bad, headers=hdrs) as r:
            body = await r.json()
            assert r.status == 400 and body["error"]["data"] == {"field": "notifications.taskIds"}
        wanted = {"taskIds": [task_id, "ffffffffffffffff"], "toolsListChanged": True}
        async with http.post(w.url, json=listen(meta, wanted), headers=hdrs) as stream:
            assert stream.content_type == "text/event-stream"
            first = await read_sse(stream, lambda m: len(m) >= 1)
            ack = first[0]
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            assert ack["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "listen-1"}
            # honoured: the known task only; tools never change, so no toolsListChanged
            assert ack["params"]["notifications"] == {"taskIds": [task_id]}
            await w.modern("tools/call", {"name": "cancel_scan", "arguments": {"task_id": task_id}})

            def cancelled(msgs: list[Any]) -> bool:
                return any(m["params"].get("status") == "cancelled" for m in msgs)

            msgs = await read_sse(stream, cancelled)
        final = msgs[-1]["params"]
        assert msgs[-1]["method"] == "notifications/tasks"
        assert (
            final["taskId"] == task_id
            and final["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-1"
        )
        assert "ttlMs" in final and "ttl" not in final


async def test_notification_streams_are_bounded(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each open stream is a hook run on every task change: past the cap a new listen is a
    JSON-RPC error and a new GET stream a 503, never an unbounded list."""
    from nessus_pool.api.mcp import features

    monkeypatch.setattr(features, "MAX_STREAMS", 1)
    async with aiohttp.ClientSession() as http:
        w = Wire(http, f"{daemon.url}/mcp")
        await w.initialize()
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": w.sid or ""}
        async with http.get(w.url, headers=headers) as stream:
            assert stream.status == 200
            other = Wire(http, f"{daemon.url}/mcp")
            await other.initialize()
            async with http.get(
                w.url, headers={**headers, "Mcp-Session-Id": other.sid or ""}
            ) as refused:
                assert refused.status == 503
            status, msgs = await w.modern(
                "subscriptions/listen", {"notifications": {"resourcesListChanged": True}}
            )
            assert status == 400 and msgs[0]["error"]["code"] == -32600
            assert "too many notification streams" in msgs[0]["error"]["message"]


@pytest.mark.parametrize("bridged", [False, True])
async def test_legacy_stdio_subscribe_and_task_status(
    start_daemon: DaemonFactory, tmp_path: Path, bridged: bool
) -> None:
    """Over stdio the one connection is the session's stream: resources/updated,
    list_changed and tasks/status arrive between the replies, also through
    ``nessus-pool mcp --connect`` (which relays the daemon's GET stream)."""
    cfg = mcp_config(tmp_path)
    cfg["simulator"]["scan-seconds"] = LONG
    config = write_config(tmp_path / "np.toml", cfg)
    if bridged:
        d: Daemon = await start_daemon(cfg, name="daemon.toml")
        proc = await spawn(config, "--connect", f"{d.url}/mcp")
    else:
        proc = await spawn(config)
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout

    async def reply_to(rid: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        notes: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while True:
                msg = json.loads(await stdout.readline())
                if msg.get("id") == rid:
                    return msg, notes
                notes.append(msg)

    def call(rid: int, method: str, params: dict[str, Any]) -> bytes:
        return line({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})

    try:
        proc.stdin.write(line(INIT))
        await reply_to(1)
        proc.stdin.write(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        scan = {"name": "run_untrusted_scan", "arguments": {"targets": "10.8.3.1"}, "task": {}}
        proc.stdin.write(call(2, "tools/call", scan))
        created, _ = await reply_to(2)
        task_id = created["result"]["task"]["taskId"]
        uri = f"nessus-pool://scans/{task_id}/report"
        proc.stdin.write(call(3, "resources/subscribe", {"uri": uri}))
        await reply_to(3)
        proc.stdin.write(call(4, "tasks/cancel", {"taskId": task_id}))
        cancelled, notes = await reply_to(4)
        assert cancelled["result"]["status"] == "cancelled"
        wanted = {"notifications/resources/updated", "notifications/resources/list_changed",
                  "notifications/tasks/status"}  # fmt: skip

        def statuses() -> list[str]:
            return [m["params"]["status"] for m in notes
                    if m.get("method") == "notifications/tasks/status"]  # fmt: skip

        # the cancel reaches the scanner (over HTTPS) after tasks/cancel has answered: read
        # notifications until they are all there, bounded (a ping reply did not wait for them)
        async with asyncio.timeout(30):
            while not (
                wanted <= {m.get("method") for m in notes} and statuses()[-1:] == ["cancelled"]
            ):
                notes.append(json.loads(await stdout.readline()))
    finally:
        proc.stdin.close()
        async with asyncio.timeout(30):
            await proc.wait()


async def test_retention_purge_changes_the_resource_list(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Housekeeping deleting a finished scan changes resources/list: subscribers hear
    resources/updated for it and list_changed."""
    from nessus_pool.engine.housekeeping import housekeeping_once

    d: Daemon = await start_daemon(mcp_config(tmp_path))
    assert d.service is not None and d.engine is not None
    async with aiohttp.ClientSession() as http:
        w = Wire(http, f"{d.url}/mcp")
        await w.initialize()
        call = {"name": "run_untrusted_scan", "arguments": {"targets": "10.8.4.1"}, "task": {}}
        task_id = (await w.rpc("tools/call", call))["result"]["task"]["taskId"]
        await w.rpc("tasks/result", {"taskId": task_id})
        uri = f"nessus-pool://scans/{task_id}/report"
        await w.rpc("resources/subscribe", {"uri": uri})
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": w.sid or ""}
        async with http.get(w.url, headers=headers) as stream:
            assert stream.status == 200
            far_ms = d.engine.clock.now_ms() + 10**12
            run = await housekeeping_once(d.engine, d.config.housekeeping, now_ms=far_ms)
            assert run.tasks_deleted == 1
            msgs = await read_sse(
                stream,
                lambda m: {"notifications/resources/updated",
                           "notifications/resources/list_changed"} <= set(methods(m)),
            )  # fmt: skip
        assert [m["params"]["uri"] for m in msgs if "uri" in m["params"]] == [uri]
        assert (await w.rpc("resources/list", {}))["result"]["resources"] == []


async def test_deleting_the_session_ends_its_get_stream(daemon: Daemon) -> None:
    async with aiohttp.ClientSession() as http:
        w = Wire(http, f"{daemon.url}/mcp")
        await w.initialize()
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": w.sid or ""}
        async with http.get(w.url, headers=headers) as stream:
            assert stream.status == 200
            async with http.delete(w.url, headers={"Mcp-Session-Id": w.sid or ""}) as r:
                assert r.status == 204
            async with asyncio.timeout(10):  # ends now, not at the next keepalive
                assert await stream.content.read() == b""
