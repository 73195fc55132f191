"""The MCP server driven by the official MCP SDK client (2.3.0): Streamable HTTP against an
in-process daemon on port 0 with the embedded simulator, and stdio against the installed
``nessus-pool mcp`` command; handshake-era ("legacy") and the SDK's default auto mode, which
must end on 2026-07-28."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator  # type: ignore[import-untyped]
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config, write_config

ALL_TOOLS = {
    "run_untrusted_scan", "run_authenticated_scan", "get_scan_status", "get_scan_results",
    "list_tasks", "list_scanners", "list_policies", "list_pools", "get_pool_status",
    "get_queue_status",
    "cancel_scan", "compare_scans", "wait_for_scan", "pause_scan", "resume_scan",
    "create_schedule", "list_schedules", "delete_schedule",
}  # fmt: skip
READ_ONLY = ALL_TOOLS - {
    "run_untrusted_scan", "run_authenticated_scan", "cancel_scan", "create_schedule",
    "delete_schedule", "pause_scan", "resume_scan",
}  # fmt: skip
SECRET = "s3cr3t-Passw0rd!"
NESSUS_POOL = Path(sys.executable).parent / "nessus-pool"


def mcp_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return sim_config(
        tmp_path,
        scanners=1,
        scan_seconds=0.5,
        poll_s=0.05,
        credentials={"lab": {"username": "audit", "password": "lab-pw"}},
        **extra,
    )


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(mcp_config(tmp_path))
    return d


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


class Checked:
    """Calls tools and checks every success against the tool's outputSchema ourselves too."""

    def __init__(self, client: Client, schemas: dict[str, dict[str, Any]]) -> None:
        self.client = client
        self.schemas = schemas

    async def call(self, name: str, args: dict[str, Any], **kw: Any) -> Any:
        result = await self.client.call_tool(name, args, **kw)
        text = text_of(result)
        assert SECRET not in text
        if result.is_error:
            return json.loads(text)
        Draft202012Validator(self.schemas[name]).validate(result.structured_content)
        if name != "get_scan_results":
            assert json.loads(text) == result.structured_content
        return result.structured_content


async def exercise(client: Client, expect_version: str) -> None:
    """List, then call every tool: a scan, a wait with progress, findings, a second scan of
    the same target and a comparison."""
    assert client.session.protocol_version == expect_version
    tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == ALL_TOOLS
    for t in tools:
        assert t.output_schema is not None and t.annotations is not None
        for schema in (t.input_schema, t.output_schema):
            Draft202012Validator.check_schema(schema)
            assert schema["type"] == "object"
        assert t.input_schema["additionalProperties"] is False
        assert t.annotations.read_only_hint is (t.name in READ_ONLY)
    c = Checked(client, {t.name: t.output_schema or {} for t in tools})

    first = await c.call("run_untrusted_scan", {"targets": "10.1.0.5", "name": "first"})
    assert first["status"] == "queued" and first["scanner_pool"] == "lan"
    assert {"queue_position", "estimated_wait_minutes", "scanner_url"} <= first.keys()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    done = await c.call(
        "wait_for_scan",
        {"task_id": first["task_id"], "timeout_s": 60},
        progress_callback=on_progress,
    )
    assert done["status"] == "completed" and done["wait_timed_out"] is False
    assert progress and progress == sorted(set(progress))
    status = await c.call("get_scan_status", {"task_id": first["task_id"]})
    assert status["results_summary"]["hosts_scanned"] >= 1
    assert status["authentication_status"] is not None and status["results_available"]

    page = await client.call_tool(
        "get_scan_results",
        {"task_id": first["task_id"], "page_size": 5, "schema_profile": "minimal"},
    )
    assert page.structured_content == {"result": text_of(page)}
    lines = [json.loads(x) for x in text_of(page).splitlines()]
    assert lines[0]["type"] == "schema" and lines[0]["profile"] == "minimal"
    assert lines[0]["fields"][:6] == [
        "host", "plugin_id", "severity", "cve", "cvss_score", "exploit_available",
    ]  # fmt: skip
    assert lines[1]["type"] == "scan_metadata" and lines[1]["task_id"] == first["task_id"]
    assert lines[-1]["type"] == "pagination" and lines[-1]["page_size"] == 10  # clamped
    assert all(line["type"] == "vulnerability" for line in lines[2:-1])
    custom = await c.call(
        "get_scan_results",
        {
            "task_id": first["task_id"],
            "custom_fields": ["host", "plugin_id"],
            "filters": {"min_severity": "info", "sort": "plugin_id"},
        },
    )
    rows = [json.loads(x) for x in custom["result"].splitlines()]
    assert rows[0]["profile"] == "custom" and rows[0]["fields"] == ["host", "plugin_id"]
    assert {tuple(r) for r in rows[2:-1]} == {("type", "host", "plugin_id")}

    second = await c.call("run_untrusted_scan", {"targets": "10.1.0.5", "name": "second"})
    await c.call("wait_for_scan", {"task_id": second["task_id"], "timeout_s": 60})
    diff = await c.call("compare_scans", {"task_id": second["task_id"]})
    assert diff["base_task_id"] == first["task_id"]
    assert {"new_total", "fixed_total"} <= diff["diff"].keys()

    auth = await c.call(
        "run_authenticated_scan",
        {"targets": ["10.1.0.6"], "ssh_username": "root", "ssh_password": SECRET},
    )
    assert auth["scan_type"] == "authenticated"
    named = await c.call("run_authenticated_scan", {"targets": "10.1.0.7", "credential": "lab"})
    await c.call("cancel_scan", {"task_id": named["task_id"]})
    canceled = await c.call("wait_for_scan", {"task_id": named["task_id"], "timeout_s": 30})
    assert canceled["status"] == "canceled"
    again = await c.call("cancel_scan", {"task_id": named["task_id"]})
    assert again["code"] == "conflict" and again["status_code"] == 409

    listed = await c.call("list_tasks", {"limit": 50})
    assert {first["task_id"], second["task_id"]} <= {t["task_id"] for t in listed["tasks"]}
    assert (await c.call("list_scanners", {}))["total"] == 1
    assert (await c.call("list_pools", {}))["default_pool"] == "lan"
    assert (await c.call("get_pool_status", {"scanner_pool": "lan"}))["total_capacity"] >= 1
    assert (await c.call("get_queue_status", {}))["pool"] == "lan"

    # a lookup that finds nothing is an answer (the seed's shape), not a failure
    missing = await client.call_tool("get_scan_status", {"task_id": "doesnotexist"})
    assert not missing.is_error and missing.structured_content is not None
    assert missing.structured_content["code"] == "not_found"
    assert "doesnotexist" in missing.structured_content["error"]
    bad = await c.call("run_untrusted_scan", {"targets": "not a target!"})
    assert bad["code"] in ("invalid_request", "out_of_scope") and isinstance(bad["error"], str)
    with pytest.raises(MCPError) as err:
        await client.call_tool("no_such_tool", {})
    assert err.value.code == -32602
    wrong = await client.call_tool("get_scan_results", {"task_id": first["task_id"], "page": -1})
    assert wrong.is_error and json.loads(text_of(wrong))["field"] == "page"


@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_sdk_over_http(daemon: Daemon, mode: str, version: str) -> None:
    async with Client(f"{daemon.url}/mcp", mode=mode, read_timeout_seconds=60) as client:
        await exercise(client, version)
        if mode == "legacy":
            await client.session.send_ping()


def _stdio(config: Path, *extra: str) -> StdioServerParameters:
    exe = shutil.which("nessus-pool", path=str(NESSUS_POOL.parent)) or str(NESSUS_POOL)
    return StdioServerParameters(command=exe, args=["mcp", *extra, "--config", str(config)])


@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_sdk_over_stdio(tmp_path: Path, mode: str, version: str) -> None:
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    async with Client(_stdio(config), mode=mode, read_timeout_seconds=60) as client:
        await exercise(client, version)


async def test_stdio_bridges_to_running_daemon(daemon: Daemon, tmp_path: Path) -> None:
    """--connect relays to the daemon's /mcp, in both eras."""
    config = write_config(tmp_path / "other.toml", mcp_config(tmp_path / "unused"))
    for mode in ("legacy", "auto"):
        params = _stdio(config, "--connect", f"{daemon.url}/mcp")
        async with Client(params, mode=mode, read_timeout_seconds=30) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == ALL_TOOLS
            pools = await client.call_tool("list_pools", {})
            assert pools.structured_content["pools"] == ["lan"]
