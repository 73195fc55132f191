"""What an agent meets: argument errors it can read and correct (SEP-1303), a filter put at the
wrong level, context sizes (tools/list and the default findings page, printed and bounded),
next steps that name the cheapest useful call, and malformed input that is never a 500
(issue 13) over HTTP and stdio."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, write_config
from tests.integration.test_mcp_http import ACCEPT, Mcp, req
from tests.integration.test_mcp_sdk import mcp_config
from tests.integration.test_mcp_stdio import INIT, line, spawn

# +3,600 over the 12,000 of issue 11: create/list/delete_schedule (1,235 + 363 + 499) and
# pause_scan/resume_scan (569 + 552) of issue #17; get_scan_results view=hosts and
# auth_status (234) of issue #13 (hosts paged)
TOOLS_LIST_MAX_BYTES = 15_600
DEFAULT_PAGE_MAX_BYTES = 6_000


def compact_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(mcp_config(tmp_path))
    return d


class Session:
    def __init__(self, mcp: Mcp, sid: str) -> None:
        self.mcp = mcp
        self.hdr = {"Mcp-Session-Id": sid}

    async def rpc(self, method: str, params: dict[str, Any]) -> tuple[int, Any]:
        status, _, body = await self.mcp.post(req(method, params), self.hdr)
        return status, body

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        _, body = await self.rpc("tools/call", {"name": name, "arguments": args})
        result: dict[str, Any] = body["result"]
        return result


@pytest.fixture
async def session(daemon: Daemon) -> Any:
    async with aiohttp.ClientSession() as http:
        mcp = Mcp(http, f"{daemon.url}/mcp")
        yield Session(mcp, await mcp.initialize())


async def finished(session: Session, target: str = "10.1.0.5") -> tuple[str, dict[str, Any]]:
    sub = await session.call("run_untrusted_scan", {"targets": target})
    task_id = sub["structuredContent"]["task_id"]
    done = await session.call("wait_for_scan", {"task_id": task_id, "timeout_s": 60})
    assert done["structuredContent"]["status"] == "completed"
    return task_id, done["structuredContent"]


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is True
    body: dict[str, Any] = json.loads(result["content"][0]["text"])
    assert body == result["structuredContent"]
    return body


async def test_invalid_arguments_are_tool_results_naming_field_and_values(
    session: Session,
) -> None:
    task_id, _ = await finished(session)
    # a filter at top level: says where it belongs
    err = error_of(await session.call("get_scan_results", {"min_severity": "high",
                                                           "task_id": task_id}))  # fmt: skip
    assert err["field"] == "min_severity" and err["code"] == "invalid_arguments"
    assert 'filters={"min_severity"' in err["error"] and "task_id" in err["error"]
    # an enum: the accepted values
    err = error_of(await session.call("get_scan_results", {"task_id": task_id,
                                                           "schema_profile": "huge"}))  # fmt: skip
    assert err["field"] == "schema_profile"
    assert all(p in err["error"] for p in ("minimal", "summary", "brief", "full"))
    # a nested field, and the seed's own check
    err = error_of(
        await session.call("get_scan_results", {"task_id": task_id, "filters": {"sev": 3}})
    )
    assert err["field"] == "filters.sev" and "min_severity" in err["error"]
    err = error_of(await session.call("run_authenticated_scan", {
        "targets": "10.1.0.9", "scan_type": "invalid_type_xyz",
        "ssh_username": "u", "ssh_password": "p"}))  # fmt: skip
    assert err["field"] == "scan_type" and "authenticated_privileged" in err["error"]
    err = error_of(await session.call("run_authenticated_scan", {
        "targets": "10.1.0.9", "scan_type": "authenticated_privileged",
        "ssh_username": "u", "ssh_password": "p"}))  # fmt: skip
    assert err["field"] == "elevate_privileges_with" and "sudo" in err["error"]
    err = error_of(await session.call("get_scan_results", {
        "task_id": task_id, "schema_profile": "full", "custom_fields": ["host"]}))  # fmt: skip
    assert err["field"] == "custom_fields" and "Cannot specify both" in err["error"]
    err = error_of(await session.call("get_scan_results", {
        "task_id": task_id, "filters": {"min_severity": "bogus"}}))  # fmt: skip
    assert "critical" in err["error"] and err["field"] == "min_severity"
    # a secret typed into an enum field is not echoed back
    err = error_of(await session.call("run_authenticated_scan", {
        "targets": "10.1.0.9", "ssh_username": "u", "ssh_password": "p",
        "elevate_privileges_with": "Hunter2-Secret!"}))  # fmt: skip
    assert err["field"] == "elevate_privileges_with" and "sudo" in err["error"]
    assert "Hunter2" not in json.dumps(err)
    # repeated custom fields are listed once
    page = await session.call("get_scan_results", {"task_id": task_id,
                                                   "custom_fields": ["host"] * 500})  # fmt: skip
    assert json.loads(page["content"][0]["text"].split("\n")[0])["fields"] == ["host"]
    # unknown tools and malformed requests stay JSON-RPC errors
    _, body = await session.rpc("tools/call", {"name": "nope", "arguments": {}})
    assert body["error"]["code"] == -32602


async def test_context_sizes(session: Session) -> None:
    _, body = await session.rpc("tools/list", {})
    tools_bytes = compact_size(body["result"])
    for tool in body["result"]["tools"]:
        # every input schema complete: every property typed, required listed
        schema = tool["inputSchema"]
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert {"type", "enum", "anyOf"} & prop.keys(), (tool["name"], name)
    task_id, status = await finished(session)
    page = await session.call("get_scan_results", {"task_id": task_id})
    page_bytes = compact_size(page)
    print(f"\ntools/list {tools_bytes} bytes; default get_scan_results page {page_bytes} bytes")
    assert tools_bytes < TOOLS_LIST_MAX_BYTES
    assert page_bytes < DEFAULT_PAGE_MAX_BYTES
    lines = [json.loads(x) for x in page["content"][0]["text"].splitlines()]
    breakdown = status["results_summary"]["severity_breakdown"]
    assert lines[0]["informational_excluded"] == breakdown["info"] > 0
    assert "min_severity" in lines[0]["note"]
    assert {row["severity"] for row in lines[2:-1]} <= {"1", "2", "3", "4"}
    vulns = status["results_summary"]["vulnerabilities_total"]
    assert lines[0]["total_vulnerabilities"] == vulns and len(lines) - 3 == min(3, vulns)
    # an explicit severity filter is obeyed as given: informational included
    every = await session.call(
        "get_scan_results", {"task_id": task_id, "page": 0, "filters": {"min_severity": 0}}
    )
    rows = [json.loads(x) for x in every["content"][0]["text"].splitlines()]
    assert "informational_excluded" not in rows[0] and rows[0]["truncated"] is False
    assert len(rows) - 2 == status["results_summary"]["findings_total"]


async def test_context_sizes_of_a_many_host_scan(session: Session) -> None:
    """A /27 of the simulator (30 hosts, 68 findings above informational): the default page,
    the default comparison and the page next_step suggests stay under the 6 KB target; a
    clamped page_size and clipped texts say so."""
    base_id, _ = await finished(session, "10.0.1.0/27")
    task_id, status = await finished(session, "10.0.2.0/27")  # other hosts: all new / fixed
    vulns = status["results_summary"]["vulnerabilities_total"]
    assert status["results_summary"]["hosts_scanned"] >= 25 and vulns > 40
    page = await session.call("get_scan_results", {"task_id": task_id})
    diff = await session.call("compare_scans", {"task_id": task_id, "base_task_id": base_id})
    listing = await session.call(
        "get_scan_results", {"task_id": task_id, "schema_profile": "minimal", "page_size": 10}
    )
    sizes = {"page": compact_size(page), "compare": compact_size(diff),
             "next_step page": compact_size(listing)}  # fmt: skip
    print(f"\n/27 scan, {vulns} findings above informational: {sizes} bytes")
    assert max(sizes.values()) < DEFAULT_PAGE_MAX_BYTES, sizes
    lines = [json.loads(x) for x in page["content"][0]["text"].splitlines()]
    schema, rows, pagination = lines[0], lines[2:-1], lines[-1]
    assert pagination["page_size"] == len(rows) == 3 and pagination["has_next"] is True
    assert schema["total_vulnerabilities"] == vulns and schema["texts_clipped"] >= 1
    assert all(len(r["description"]) <= 121 for r in rows)
    assert 'schema_profile="full"' in schema["note"]
    # the whole text on request
    whole = await session.call("get_scan_results", {"task_id": task_id, "custom_fields": [
        "host", "plugin_id", "description"]})  # fmt: skip
    wrows = [json.loads(x) for x in whole["content"][0]["text"].splitlines()]
    assert "texts_clipped" not in wrows[0]
    assert any(len(r["description"]) > 121 for r in wrows[2:-1])
    # a page_size past the bound says it was clamped
    big = await session.call("get_scan_results", {"task_id": task_id, "page_size": 1000})
    big_lines = [json.loads(x) for x in big["content"][0]["text"].splitlines()]
    assert big_lines[0]["page_size_requested"] == 1000 and big_lines[-1]["page_size"] == 100
    assert "page_size 1000 clamped to 100" in big_lines[0]["note"]
    # compare_scans: informational left out and counted, 5 per section, paged
    d = diff["structuredContent"]["diff"]
    assert d["min_severity"] == "low" and d["informational_excluded"]["new"] > 0
    assert d["new_total"] == vulns and len(d["new"]) == 5 and d["next_page"] == 2
    assert all(item["severity"] >= 1 for item in d["new"] + d["fixed"])
    assert "min_severity=info" in d["note"]
    seen = {(i["host"], i["plugin_id"], i["port"]) for i in d["new"]}
    nxt = await session.call("compare_scans", {"task_id": task_id, "base_task_id": base_id,
                                               "page": 2, "limit": 5})  # fmt: skip
    more = nxt["structuredContent"]["diff"]["new"]
    assert more and seen.isdisjoint((i["host"], i["plugin_id"], i["port"]) for i in more)
    every = await session.call("compare_scans", {"task_id": task_id, "base_task_id": base_id,
                                                 "min_severity": "info", "limit": 1})  # fmt: skip
    e = every["structuredContent"]["diff"]
    assert e["new_total"] == vulns + d["informational_excluded"]["new"]
    assert "informational_excluded" not in e


async def test_next_step_names_the_cheapest_call(session: Session) -> None:
    task_id, done = await finished(session)
    step = done["next_step"]
    call = f'get_scan_results(task_id={task_id!r}, schema_profile="minimal", page_size=10)'
    assert call in step
    assert f"the {done['results_summary']['vulnerabilities_total']} findings" in step
    sub = await session.call("run_untrusted_scan", {"targets": "10.1.0.8"})
    assert "wait_for_scan" in sub["structuredContent"]["message"]


async def test_failed_login_next_step_points_at_the_credential(session: Session) -> None:
    """Its findings are an unauthenticated view: the next call is about the credential."""
    sub = await session.call("run_authenticated_scan", {
        "targets": "10.1.0.7", "scan_type": "authenticated",
        "ssh_username": "audit", "ssh_password": "wrong"})  # fmt: skip
    task_id = sub["structuredContent"]["task_id"]
    done = (await session.call("wait_for_scan", {"task_id": task_id, "timeout_s": 60}))[
        "structuredContent"
    ]
    assert done["authentication_status"] == "failed" and done["results_available"] is True
    step = done["next_step"]
    assert f"troubleshoot_authentication prompt (task_id={task_id!r})" in step
    assert "troubleshooting" in step and "run_authenticated_scan" in step
    assert "get_scan_results" not in step


async def test_custom_profile_is_accepted_as_the_result_names_it(session: Session) -> None:
    """custom_fields alone answers profile "custom"; echoing that profile back is accepted."""
    task_id, _ = await finished(session)
    fields = ["host", "severity"]
    alone = await session.call("get_scan_results", {"task_id": task_id, "custom_fields": fields})
    schema = json.loads(alone["content"][0]["text"].split("\n")[0])
    assert schema["profile"] == "custom" and schema["fields"] == fields
    again = {"task_id": task_id, "custom_fields": fields, "schema_profile": schema["profile"]}
    echoed = await session.call("get_scan_results", again)
    assert echoed.get("isError") is not True
    assert echoed["content"][0]["text"] == alone["content"][0]["text"]
    err = error_of(
        await session.call("get_scan_results", {"task_id": task_id, "schema_profile": "custom"})
    )
    assert err["field"] == "custom_fields" and 'schema_profile="custom" needs' in err["error"]


DEEP = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 1000 + b"]" * 1000 + b"}"
BAD_CURSORS = ["99999999999999999999999", "\u00b2", "-1", "1e3"]


async def test_malformed_input_over_http_is_never_500(daemon: Daemon, session: Session) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{daemon.url}/mcp", data=DEEP, headers=ACCEPT) as r,
    ):
        body = await r.json()
        assert r.status == 400 and body["error"]["code"] == -32600
    status, body = await session.rpc(
        "tools/call", {"name": "list_pools", "arguments": {"x": [[[[[[[[[]]]]]]]]]}}
    )
    assert status == 200 and body["result"]["isError"] is True
    for cursor in BAD_CURSORS:
        status, body = await session.rpc("resources/list", {"cursor": cursor})
        assert status == 200 and body["error"]["code"] == -32602, cursor
        assert body["error"]["data"] == {"field": "cursor"}
        result = await session.call("list_tasks", {"cursor": cursor})
        assert result["isError"] is True and result["structuredContent"]["field"] == "cursor"


async def test_malformed_input_over_stdio(tmp_path: Path) -> None:
    proc = await spawn(write_config(tmp_path / "np.toml", mcp_config(tmp_path)))
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line(INIT) + DEEP + b"\n")
    for i, cursor in enumerate(BAD_CURSORS):
        msg = {"jsonrpc": "2.0", "id": 10 + i, "method": "resources/list",
               "params": {"cursor": cursor}}  # fmt: skip
        proc.stdin.write(line(msg))
    await proc.stdin.drain()
    replies = [
        json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        for _ in range(2 + len(BAD_CURSORS))
    ]
    by_id = {r["id"]: r for r in replies}
    assert by_id[None]["error"]["code"] == -32600
    assert all(by_id[10 + i]["error"]["code"] == -32602 for i in range(len(BAD_CURSORS)))
    proc.stdin.close()
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert b"Traceback" not in err
