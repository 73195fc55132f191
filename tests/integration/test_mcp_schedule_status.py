"""MCP get_scan_status and list_tasks name the schedule a scheduled run belongs to (issue
#17): an agent asked about a run can find its schedule without the admin API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nessus_pool.api.mcp.handlers import TOOLS
from nessus_pool.api.mcp.tools import Toolbox, ToolContext
from tests.conftest import DaemonFactory, sim_config


def body(result: dict[str, Any]) -> dict[str, Any]:
    assert not result["isError"], result
    out: dict[str, Any] = json.loads(result["content"][0]["text"])
    return out


async def test_a_scheduled_runs_status_carries_its_schedule_id(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    cfg = sim_config(
        tmp_path, schedules=[{"name": "hourly", "targets": "10.9.0.1", "every-s": 3600}]
    )
    d = await start_daemon(cfg)
    assert d.service is not None
    tools = Toolbox(d.service, TOOLS)
    reader = ToolContext(role="read")
    ran = await d.service.schedules.run_now("hourly")
    task_id = ran["run"]["task_id"]
    status = body(await tools.call("get_scan_status", {"task_id": task_id}, reader))
    assert status["schedule_id"] == "hourly"
    listed = body(await tools.call("list_tasks", {}, reader))
    entries = {t["task_id"]: t for t in listed["tasks"]}
    assert entries[task_id]["schedule_id"] == "hourly"
    # a one-off scan carries no schedule key at all (no null noise for agents)
    one_off = body(
        await tools.call("run_untrusted_scan", {"targets": "10.9.0.2"}, ToolContext(role="admin"))
    )
    status = body(await tools.call("get_scan_status", {"task_id": one_off["task_id"]}, reader))
    assert "schedule_id" not in status
