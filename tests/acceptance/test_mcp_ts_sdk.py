"""The 2025-11-25 tasks form through a client nobody here wrote: the TypeScript MCP SDK
(@modelcontextprotocol/sdk 1.32.x, ``client.experimental.tasks``) on Node, against a live
daemon over Streamable HTTP (issue 15 item 1)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory
from tests.integration.test_mcp_http import ADMIN
from tests.integration.test_mcp_sdk import SECRET
from tests.integration.test_mcp_tasks import tokens_config
from tests.npm_tools import npm_install

TS_SDK = "@modelcontextprotocol/sdk@1.32.2"
SCRIPT = Path(__file__).with_name("mcp_ts_tasks.mjs")

pytestmark = pytest.mark.timeout(300)


async def test_typescript_sdk_experimental_tasks(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "ts"
    await npm_install(folder, TS_SDK)
    shutil.copy(SCRIPT, folder / SCRIPT.name)
    cfg = tokens_config(tmp_path)
    cfg["simulator"]["scan-seconds"] = 2.0  # long enough to cancel the second scan
    d: Daemon = await start_daemon(cfg)
    node = shutil.which("node")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node, SCRIPT.name, f"{d.url}/mcp", ADMIN, cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert SECRET not in stdout.decode()

    assert out["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
    assert out["taskTools"] == ["run_authenticated_scan", "run_untrusted_scan"]
    # the SDK created a task, polled it (tasks/get) and fetched the result (tasks/result)
    assert out["kinds"][0] == "taskCreated" and out["kinds"][-1] == "result"
    assert "taskStatus" in out["kinds"] and "streamError" not in out
    task_id = out["created"]["taskId"]
    assert out["task"]["taskId"] == task_id and out["task"]["status"] == "completed"
    assert task_id in out["listed"]
    # the final result is get_scan_status' structured result at completion
    assert out["result"]["structuredContent"] == out["status"]
    assert out["result"]["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert out["status"]["status"] == "completed"
    # tasks/cancel cancelled the scan itself; cancelling a finished task is -32602
    assert out["cancelled"]["status"] == "cancelled"
    assert out["afterCancel"]["status"] == "cancelled"
    cancelled = await d.service.get_task(out["cancelled"]["taskId"])  # type: ignore[union-attr]
    assert cancelled.status == "canceled"
    assert out["cancelFinished"] == -32602
