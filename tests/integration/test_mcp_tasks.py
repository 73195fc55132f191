"""MCP Tasks over scan tasks on the raw wire, both eras: 2025-11-25 experimental tasks
(``params.task``, tasks/get|result|list|cancel) and the 2026-07-28 tasks extension
(server-directed ``resultType: "task"``), against a real daemon with the simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory
from tests.integration.test_mcp_http import ACCEPT, ADMIN, META, MODERN, READER
from tests.integration.test_mcp_sdk import SECRET, mcp_config

EXT = "io.modelcontextprotocol/tasks"
META_TASKS = {**META, "io.modelcontextprotocol/clientCapabilities": {"extensions": {EXT: {}}}}


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


class Wire:
    """A handshake-era session or 2026-07-28 requests over real HTTP."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.http = http
        self.url = url
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.sid: str | None = None
        self.next_id = 1

    async def post(self, body: Any, headers: dict[str, str]) -> tuple[int, list[dict[str, Any]]]:
        async with self.http.post(
            self.url, data=json.dumps(body), headers={**ACCEPT, **self.auth, **headers}
        ) as r:
            text = await r.text()
            if r.content_type == "text/event-stream":
                return r.status, sse_messages(text)
            return r.status, [json.loads(text)] if text else []

    async def initialize(self, version: str = "2025-11-25") -> dict[str, Any]:
        async with self.http.post(
            self.url,
            data=json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                             "params": {"protocolVersion": version, "capabilities": {},
                                        "clientInfo": {"name": "t", "version": "1"}}}),
            headers={**ACCEPT, **self.auth},
        ) as r:  # fmt: skip
            body = await r.json()
            self.sid = r.headers["Mcp-Session-Id"]
        await self.post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, self._legacy_headers()
        )
        result: dict[str, Any] = body["result"]
        return result

    def _legacy_headers(self) -> dict[str, str]:
        assert self.sid is not None
        return {"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": "2025-11-25"}

    async def rpc_all(self, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every message of the reply (notifications first, the response last)."""
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        _, msgs = await self.post(body, self._legacy_headers())
        return msgs

    async def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return (await self.rpc_all(method, params))[-1]

    async def modern(
        self, method: str, params: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        self.next_id += 1
        headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
        name = params.get("name") or params.get("taskId") or params.get("uri")
        if name:
            headers["Mcp-Name"] = name
        body = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": method,
            "params": {**params, "_meta": meta or META},
        }
        return await self.post(body, headers)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def tokens_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    server = {"listen": "127.0.0.1:0", "admin-tokens": [ADMIN], "read-tokens": [READER]}
    return mcp_config(tmp_path, server=server, **extra)


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(tokens_config(tmp_path))
    return d


async def test_tools_declare_task_support_and_capabilities(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    w = Wire(http, f"{daemon.url}/mcp", ADMIN)
    init = await w.initialize()
    assert init["capabilities"]["tasks"] == {
        "list": {}, "cancel": {}, "requests": {"tools": {"call": {}}},
    }  # fmt: skip
    tools = (await w.rpc("tools/list", {}))["result"]["tools"]
    support = {t["name"]: t.get("execution", {}).get("taskSupport") for t in tools}
    assert {n for n, s in support.items() if s} == {"run_untrusted_scan", "run_authenticated_scan"}
    assert set(support.values()) == {None, "optional"}
    _, msgs = await w.modern("server/discover", {})
    assert msgs[0]["result"]["capabilities"]["extensions"] == {EXT: {}}
    # a tool that cannot run as a task: -32601, as 2025-11-25 says
    reply = await w.rpc(
        "tools/call", {"name": "list_pools", "arguments": {}, "task": {"ttl": 60000}}
    )
    assert reply["error"]["code"] == -32601


async def test_legacy_task_lifecycle_result_equals_status(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    w = Wire(http, f"{daemon.url}/mcp", ADMIN)
    await w.initialize()
    created = await w.rpc(
        "tools/call",
        {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.0.1"}, "task": {"ttl": 5}},
    )
    task = created["result"]["task"]
    task_id = task["taskId"]
    assert task["status"] == "working"
    assert task["createdAt"].endswith("Z") and task["lastUpdatedAt"].endswith("Z")
    ttl_floor_ms = 30 * 86400 * 1000  # housekeeping's finished-ttl-s, not the 5 ms asked for
    assert task["ttl"] >= ttl_floor_ms and 1000 <= task["pollInterval"] <= 60000
    assert task["statusMessage"].startswith(("queued in pool lan", "starting", "running"))
    immediate = created["result"]["_meta"]["io.modelcontextprotocol/model-immediate-response"]
    assert json.loads(immediate)["task_id"] == task_id

    got = (await w.rpc("tasks/get", {"taskId": task_id}))["result"]
    assert got["taskId"] == task_id and got["status"] in ("working", "completed")
    # tasks/result blocks until the scan ends, with log lines at the chosen level
    assert (await w.rpc("logging/setLevel", {"level": "info"}))["result"] == {}
    msgs = await w.rpc_all("tasks/result", {"taskId": task_id})
    result = msgs[-1]["result"]
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert result["isError"] is False
    status = (await w.rpc("tools/call", {"name": "get_scan_status",
                                         "arguments": {"task_id": task_id}}))["result"]  # fmt: skip
    assert result["structuredContent"] == status["structuredContent"]
    assert status["structuredContent"]["status"] == "completed"
    logs = [m["params"] for m in msgs[:-1] if m.get("method") == "notifications/message"]
    if got["status"] == "working":  # it ran while we waited: its end was logged
        assert logs and logs[-1]["level"] == "notice"
        assert logs[-1]["data"]["task_id"] == task_id
        assert {x["level"] for x in logs} <= {"info", "notice"}  # no debug below info

    done = (await w.rpc("tasks/get", {"taskId": task_id}))["result"]
    assert done["status"] == "completed" and done["statusMessage"].startswith("completed:")
    listed = (await w.rpc("tasks/list", {}))["result"]["tasks"]
    assert task_id in [t["taskId"] for t in listed]
    # cancelling a finished task: -32602; an unknown one too; a bad cursor too
    assert (await w.rpc("tasks/cancel", {"taskId": task_id}))["error"]["code"] == -32602
    assert (await w.rpc("tasks/get", {"taskId": "0" * 16}))["error"]["code"] == -32602
    assert (await w.rpc("tasks/get", {"taskId": 7}))["error"]["code"] == -32602
    bad_cursor = (await w.rpc("tasks/list", {"cursor": "x"}))["error"]
    assert bad_cursor["code"] == -32602 and bad_cursor["data"] == {"field": "cursor"}
    bad = await w.rpc("logging/setLevel", {"level": "verbose"})
    assert bad["error"]["code"] == -32602 and bad["error"]["data"] == {"field": "level"}


async def test_legacy_cancel_cancels_the_scan(
    start_daemon: DaemonFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cfg = tokens_config(tmp_path)
    cfg["simulator"]["scan-seconds"] = 600.0
    d: Daemon = await start_daemon(cfg)
    w = Wire(http, f"{d.url}/mcp", ADMIN)
    await w.initialize()
    ids = []
    for target in ("10.9.1.1", "10.9.1.2", "10.9.1.3"):  # 2 run (capacity 2), 1 queues
        created = await w.rpc(
            "tools/call",
            {"name": "run_untrusted_scan", "arguments": {"targets": target}, "task": {}},
        )
        ids.append(created["result"]["task"]["taskId"])
    queued = (await w.rpc("tasks/get", {"taskId": ids[2]}))["result"]
    assert queued["statusMessage"].startswith("queued in pool lan, position 1")
    for task_id in (ids[2], ids[0]):  # a queued one and a running one
        cancelled = (await w.rpc("tasks/cancel", {"taskId": task_id}))["result"]
        assert cancelled["taskId"] == task_id and cancelled["status"] == "cancelled"
        status = await d.service.get_task(task_id)  # type: ignore[union-attr]
        assert status.status == "canceled"


async def test_read_token_reads_tasks_but_never_creates_or_cancels(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    admin = Wire(http, f"{daemon.url}/mcp", ADMIN)
    await admin.initialize()
    created = await admin.rpc(
        "tools/call", {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.2.1"},
                       "task": {}},
    )  # fmt: skip
    task_id = created["result"]["task"]["taskId"]
    reader = Wire(http, f"{daemon.url}/mcp", READER)
    await reader.initialize()
    assert (await reader.rpc("tasks/get", {"taskId": task_id}))["result"]["taskId"] == task_id
    assert task_id in [t["taskId"] for t in (await reader.rpc("tasks/list", {}))["result"]["tasks"]]
    refused = await reader.rpc(
        "tools/call", {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.2.2"},
                       "task": {}},
    )  # fmt: skip
    assert refused["error"]["code"] == -32602 and "admin token" in refused["error"]["message"]
    no = await reader.rpc("tasks/cancel", {"taskId": task_id})
    assert no["error"]["code"] == -32600 and "admin token" in no["error"]["message"]
    # modern era too
    _, msgs = await reader.modern("tasks/cancel", {"taskId": task_id}, META_TASKS)
    assert msgs[0]["error"]["code"] == -32600
    assert len((await daemon.service.list_tasks()).tasks) == 1  # type: ignore[union-attr]


async def test_task_survives_a_restart(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    cfg = tokens_config(tmp_path)
    d: Daemon = await start_daemon(cfg)
    async with aiohttp.ClientSession() as http:
        w = Wire(http, f"{d.url}/mcp", ADMIN)
        await w.initialize()
        created = await w.rpc(
            "tools/call", {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.3.1"},
                           "task": {}},
        )  # fmt: skip
        task_id = created["result"]["task"]["taskId"]
        final = (await w.rpc("tasks/result", {"taskId": task_id}))["result"]
    await d.stop()
    d2: Daemon = await start_daemon(cfg, name="again.toml")
    async with aiohttp.ClientSession() as http:
        w = Wire(http, f"{d2.url}/mcp", ADMIN)
        await w.initialize()
        got = (await w.rpc("tasks/get", {"taskId": task_id}))["result"]
        assert got["status"] == "completed" and got["taskId"] == task_id
        again = (await w.rpc("tasks/result", {"taskId": task_id}))["result"]
        assert again["structuredContent"] == final["structuredContent"]
        _, msgs = await w.modern("tasks/get", {"taskId": task_id}, META_TASKS)
        assert msgs[0]["result"]["result"]["structuredContent"] == final["structuredContent"]


async def test_modern_tasks_extension(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    w = Wire(http, f"{daemon.url}/mcp", ADMIN)
    call = {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.4.1"}}
    # without the extension: the ordinary result, never a task
    _, msgs = await w.modern("tools/call", call)
    plain = msgs[-1]["result"]
    assert plain["resultType"] == "complete" and "taskId" not in plain
    plain_id = plain["structuredContent"]["task_id"]
    _, msgs = await w.modern("tasks/get", {"taskId": plain_id})
    assert msgs[0]["error"]["code"] == -32021
    assert msgs[0]["error"]["data"] == {"requiredCapabilities": {"extensions": {EXT: {}}}}
    # with it: the server creates a task
    _, msgs = await w.modern("tools/call", {**call, "arguments": {"targets": "10.9.4.2"}},
                             META_TASKS)  # fmt: skip
    created = msgs[-1]["result"]
    assert created["resultType"] == "task" and created["status"] == "working"
    assert created["ttlMs"] >= 30 * 86400 * 1000 and created["pollIntervalMs"] >= 1000
    assert "ttl" not in created and "pollInterval" not in created
    task_id = created["taskId"]
    # tasks/get with the wrong Mcp-Name header: refused (the extension routes by task id)
    status, bad = await w.post(
        {"jsonrpc": "2.0", "id": 99, "method": "tasks/get",
         "params": {"taskId": task_id, "_meta": META_TASKS}},
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tasks/get", "Mcp-Name": "other"},
    )  # fmt: skip
    assert status == 400 and bad[0]["error"]["code"] == -32020
    await daemon.service.wait_for(task_id, 30.0)  # type: ignore[union-attr]
    _, msgs = await w.modern("tasks/get", {"taskId": task_id}, META_TASKS)
    done = msgs[0]["result"]
    assert done["resultType"] == "complete" and done["status"] == "completed"
    _, st = await w.modern("tools/call", {"name": "get_scan_status",
                                          "arguments": {"task_id": task_id}})  # fmt: skip
    assert done["result"]["structuredContent"] == st[-1]["result"]["structuredContent"]
    _, msgs = await w.modern("tasks/update", {"taskId": task_id, "inputResponses": {}},
                             META_TASKS)  # fmt: skip
    assert msgs[0]["result"] == {"resultType": "complete"}
    _, msgs = await w.modern("tasks/cancel", {"taskId": task_id}, META_TASKS)
    assert msgs[0]["result"] == {"resultType": "complete"}  # an acknowledgement
    # the handshake era's methods are not in this era
    for method in ("tasks/list", "tasks/result", "logging/setLevel"):
        status, msgs = await w.modern(method, {"taskId": task_id}, META_TASKS)
        assert status == 404 and msgs[0]["error"]["code"] == -32601


async def test_modern_failed_scan_is_completed_with_is_error(
    start_daemon: DaemonFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """2026-07-28 keeps ``failed`` for JSON-RPC errors: a scan that failed is a completed
    task whose result has isError; 2025-11-25 calls it failed."""
    cfg = tokens_config(tmp_path)
    cfg["simulator"]["scan-seconds"] = 5
    cfg["pools"][0]["max-scan-duration-s"] = 0.3  # the scan times out
    d: Daemon = await start_daemon(cfg)
    w = Wire(http, f"{d.url}/mcp", ADMIN)
    _, msgs = await w.modern(
        "tools/call", {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.5.1"}},
        META_TASKS,
    )  # fmt: skip
    task_id = msgs[-1]["result"]["taskId"]
    await d.service.wait_for(task_id, 30.0)  # type: ignore[union-attr]
    _, msgs = await w.modern("tasks/get", {"taskId": task_id}, META_TASKS)
    assert msgs[0]["result"]["status"] == "completed"
    assert msgs[0]["result"]["result"]["isError"] is True
    await w.initialize()
    legacy = (await w.rpc("tasks/get", {"taskId": task_id}))["result"]
    assert legacy["status"] == "failed" and legacy["statusMessage"].startswith("timed out")
    result = (await w.rpc("tasks/result", {"taskId": task_id}))["result"]
    assert result["isError"] is True
    assert result["structuredContent"]["status"] == "timeout"


async def test_wait_for_scan_logs_at_the_chosen_level_modern(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    w = Wire(http, f"{daemon.url}/mcp", ADMIN)
    _, msgs = await w.modern(
        "tools/call", {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.6.1"}}
    )
    task_id = msgs[-1]["result"]["structuredContent"]["task_id"]
    meta = {**META, "io.modelcontextprotocol/logLevel": "debug"}
    _, msgs = await w.modern(
        "tools/call", {"name": "wait_for_scan", "arguments": {"task_id": task_id}}, meta
    )
    logs = [m["params"] for m in msgs if m.get("method") == "notifications/message"]
    assert logs and logs[-1]["level"] == "notice" and logs[-1]["data"]["status"] == "completed"
    assert all(SECRET not in json.dumps(x) for x in logs)
    # without the _meta field: never a log line (2026-07-28 MUST NOT)
    _, msgs = await w.modern(
        "tools/call", {"name": "wait_for_scan", "arguments": {"task_id": task_id}}
    )
    assert [m for m in msgs if m.get("method") == "notifications/message"] == []
    bad = {**META, "io.modelcontextprotocol/logLevel": "loud"}
    status, msgs = await w.modern(
        "tools/call", {"name": "wait_for_scan", "arguments": {"task_id": task_id}}, bad
    )
    assert status == 400 and msgs[0]["error"]["code"] == -32602


async def test_ttl_is_housekeeping_retention(
    start_daemon: DaemonFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The ttl a task reports is what housekeeping keeps: once retention deletes the scan,
    tasks/get answers -32602 (the spec's "task not found")."""
    from nessus_pool.engine.housekeeping import housekeeping_once

    cfg = tokens_config(tmp_path, housekeeping={"finished-ttl-s": 60.0})
    d: Daemon = await start_daemon(cfg)
    w = Wire(http, f"{d.url}/mcp", ADMIN)
    await w.initialize()
    created = await w.rpc(
        "tools/call",
        {"name": "run_untrusted_scan", "arguments": {"targets": "10.9.7.1"}, "task": {}},
    )
    task_id = created["result"]["task"]["taskId"]
    await w.rpc("tasks/result", {"taskId": task_id})
    done = (await w.rpc("tasks/get", {"taskId": task_id}))["result"]
    assert d.service is not None and d.engine is not None
    v = await d.service.get_task(task_id)
    assert v.finished_at_ms is not None
    assert done["ttl"] == v.finished_at_ms - v.created_at_ms + 60_000
    expires_ms = v.created_at_ms + done["ttl"]
    kept = await housekeeping_once(d.engine, d.config.housekeeping, now_ms=expires_ms - 1)
    assert kept.tasks_deleted == 0
    assert (await w.rpc("tasks/get", {"taskId": task_id}))["result"]["status"] == "completed"
    gone = await housekeeping_once(d.engine, d.config.housekeeping, now_ms=expires_ms + 1)
    assert gone.tasks_deleted == 1
    err = (await w.rpc("tasks/get", {"taskId": task_id}))["error"]
    assert err["code"] == -32602 and "not found" in err["message"]


async def test_no_secret_in_tasks_logs_or_prompts(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    """An inline SSH password never comes back: not in the task, its status message, the
    log lines, the result, the task list, completions or prompts."""
    w = Wire(http, f"{daemon.url}/mcp", ADMIN)
    await w.initialize()
    await w.rpc("logging/setLevel", {"level": "debug"})
    args = {"targets": "10.9.8.1", "ssh_username": "root", "ssh_password": SECRET}
    seen: list[Any] = []
    created = await w.rpc_all(
        "tools/call", {"name": "run_authenticated_scan", "arguments": args, "task": {}}
    )
    seen += created
    task_id = created[-1]["result"]["task"]["taskId"]
    seen += await w.rpc_all("tasks/result", {"taskId": task_id})
    seen += await w.rpc_all("tasks/get", {"taskId": task_id})
    seen += await w.rpc_all("tasks/list", {})
    for name in ("triage_scan", "troubleshoot_authentication", "compare_with_previous"):
        seen += await w.rpc_all("prompts/get", {"name": name, "arguments": {"task_id": task_id}})
    _, msgs = await w.modern("tasks/get", {"taskId": task_id}, META_TASKS)
    seen += msgs
    text = json.dumps(seen)
    assert task_id in text and SECRET not in text
    assert any(m.get("method") == "notifications/message" for m in seen)
