"""Prompts and completions (issue 15 items 4, 5), through the official MCP SDK client 2.3.0 in
both eras, and read-only scoping on the raw wire."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    EmbeddedResource,
    PromptReference,
    ResourceTemplateReference,
    TextContent,
    TextResourceContents,
)

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory
from tests.integration.test_mcp_http import ADMIN, READER
from tests.integration.test_mcp_sdk import SECRET, mcp_config
from tests.integration.test_mcp_tasks import Wire, tokens_config

PROMPTS = {"triage_scan", "troubleshoot_authentication", "compare_with_previous", "plan_scan"}


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(mcp_config(tmp_path))
    return d


async def scan(client: Client, target: str) -> str:
    out = await client.call_tool("run_untrusted_scan", {"targets": target})
    task_id = str((out.structured_content or {})["task_id"])
    await client.call_tool("wait_for_scan", {"task_id": task_id, "timeout_s": 60})
    return task_id


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_prompts_with_embedded_resources(daemon: Daemon, mode: str) -> None:
    async with Client(f"{daemon.url}/mcp", mode=mode, read_timeout_seconds=60) as client:
        assert client.server_capabilities.prompts is not None
        listed = (await client.list_prompts()).prompts
        assert {p.name for p in listed} == PROMPTS
        assert all(p.description and p.arguments for p in listed)
        first = await scan(client, "10.7.0.1")
        second = await scan(client, "10.7.0.1")

        triage = await client.get_prompt("triage_scan", {"task_id": second})
        kinds = [m.content.type for m in triage.messages]
        assert kinds == ["text", "resource", "resource"]
        report, findings = (m.content for m in triage.messages[1:])
        assert isinstance(report, EmbeddedResource) and isinstance(findings, EmbeddedResource)
        assert isinstance(report.resource, TextResourceContents)
        assert report.resource.uri == f"nessus-pool://scans/{second}/report"
        status = await client.call_tool("get_scan_status", {"task_id": second})
        assert json.loads(report.resource.text) == status.structured_content
        assert str(findings.resource.uri).endswith("/findings")

        diff = await client.get_prompt("compare_with_previous", {"task_id": second})
        embedded = diff.messages[1].content
        assert isinstance(embedded, EmbeddedResource)
        assert isinstance(embedded.resource, TextResourceContents)
        compared = await client.call_tool("compare_scans", {"task_id": second})
        assert json.loads(embedded.resource.text) == compared.structured_content
        auth = await client.get_prompt("troubleshoot_authentication", {"task_id": first})
        intro = auth.messages[0].content
        assert isinstance(intro, TextContent) and "Do not ask for passwords" in intro.text

        plan = await client.get_prompt("plan_scan", {"targets": "10.7.0.0/24"})
        context = plan.messages[1].content
        assert isinstance(context, EmbeddedResource)
        assert isinstance(context.resource, TextResourceContents)
        planned = json.loads(context.resource.text)
        assert [p["pool"] for p in planned["pools"]] == ["lan"]
        assert planned["credential_sets"] == ["lab"]  # names only
        for result in (triage, diff, auth, plan):
            assert SECRET not in result.model_dump_json() and "lab-pw" not in str(result)

        with pytest.raises(MCPError) as err:
            await client.get_prompt("triage_scan", {})
        assert err.value.code == -32602 and "task_id is required" in err.value.message
        with pytest.raises(MCPError) as err:
            await client.get_prompt("triage_scan", {"task_id": "'; drop table"})
        assert err.value.code == -32602 and "task_id must match" in err.value.message
        with pytest.raises(MCPError) as err:
            await client.get_prompt("nope", {})
        assert err.value.code == -32602
        with pytest.raises(MCPError) as err:
            await client.get_prompt("triage_scan", {"task_id": "ffffffffffffffff"})
        assert err.value.code == -32602 and "not found" in err.value.message

        # completions: task ids newest first, prefix-matched; template variables too
        done = await client.complete(PromptReference(type="ref/prompt", name="triage_scan"),
                                     {"name": "task_id", "value": ""})  # fmt: skip
        assert done.completion.values[:2] == [second, first]
        one = await client.complete(PromptReference(type="ref/prompt", name="triage_scan"),
                                    {"name": "task_id", "value": first[:6]})  # fmt: skip
        assert first in one.completion.values and all(
            v.startswith(first[:6]) for v in one.completion.values
        )
        tmpl = ResourceTemplateReference(
            type="ref/resource", uri="nessus-pool://scans/{task_id}/report"
        )
        got = await client.complete(tmpl, {"name": "task_id", "value": second[:4]})
        assert second in got.completion.values
        pools = await client.complete(PromptReference(type="ref/prompt", name="plan_scan"),
                                      {"name": "pool", "value": "l"})  # fmt: skip
        assert pools.completion.values == ["lan"]
        with pytest.raises(MCPError) as err:
            await client.complete(PromptReference(type="ref/prompt", name="plan_scan"),
                                  {"name": "password", "value": ""})  # fmt: skip
        assert err.value.code == -32602


async def test_read_token_prompts_and_completions_are_scoped(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    d: Daemon = await start_daemon(tokens_config(tmp_path))
    async with aiohttp.ClientSession() as http:
        for token, creds in ((ADMIN, ["lab"]), (READER, [])):
            w = Wire(http, f"{d.url}/mcp", token)
            await w.initialize()
            got = await w.rpc(
                "completion/complete",
                {"ref": {"type": "ref/prompt", "name": "plan_scan"},
                 "argument": {"name": "credential", "value": ""}},
            )  # fmt: skip
            # credential set names complete for admin tokens only (read-only ones cannot use them)
            assert got["result"]["completion"]["values"] == creds
            plan = (await w.rpc("prompts/get", {"name": "plan_scan",
                                                "arguments": {"targets": "10.7.1.1"}}))  # fmt: skip
            text = plan["result"]["messages"][1]["content"]["resource"]["text"]
            assert json.loads(text).get("credential_sets", []) == creds
            intro = plan["result"]["messages"][0]["content"]["text"]
            assert ("read-only" in intro) is (token == READER)
            bad = await w.rpc("prompts/get", {"name": "plan_scan", "arguments": {"targets": 5}})
            assert bad["error"]["code"] == -32602
            bounded = await w.rpc(
                "completion/complete",
                {"ref": {"type": "ref/prompt", "name": "triage_scan"},
                 "argument": {"name": "task_id", "value": "x" * 10_000}},
            )  # fmt: skip
            assert bounded["result"]["completion"] == {"values": [], "total": 0, "hasMore": False}
