"""The schedule MCP tools through the toolbox of a real daemon: admin tokens create and
delete, read-only tokens only list; bad arguments name the field; a config schedule cannot
be deleted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nessus_pool.api.mcp.handlers import TOOLS
from nessus_pool.api.mcp.tools import Toolbox, ToolContext
from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config


def body(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(result["content"][0]["text"])
    return out


async def test_schedule_tools(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    cfg = sim_config(
        tmp_path,
        schedules=[{"name": "from-file", "targets": "10.9.0.1", "every-s": 3600}],
    )
    d: Daemon = await start_daemon(cfg)
    assert d.service is not None
    tools = Toolbox(d.service, TOOLS)
    admin, reader = ToolContext(role="admin"), ToolContext(role="read")
    args = {"name": "nightly", "targets": "10.9.0.2", "cron": "30 2 * * *",
            "timezone": "Europe/Berlin"}  # fmt: skip
    denied = await tools.call("create_schedule", args, reader)
    assert denied["isError"] and body(denied)["code"] == "forbidden"
    made = await tools.call("create_schedule", args, admin)
    assert not made["isError"], made
    assert body(made)["next_run_at"].endswith(":30:00.000+00:00")
    bad = await tools.call("create_schedule", args | {"name": "x", "every_s": 60}, admin)
    assert bad["isError"] and body(bad)["field"] == "cron"
    bad = await tools.call("create_schedule", args | {"name": "x", "overlap": "maybe"}, admin)
    assert bad["isError"] and body(bad)["field"] == "overlap"
    listed = body(await tools.call("list_schedules", {}, reader))
    assert listed["total"] == 2
    assert [(s["name"], s["source"]) for s in listed["schedules"]] == [
        ("from-file", "config"),
        ("nightly", "api"),
    ]
    denied = await tools.call("delete_schedule", {"name": "nightly"}, reader)
    assert body(denied)["code"] == "forbidden"
    ro = await tools.call("delete_schedule", {"name": "from-file"}, admin)
    assert ro["isError"] and "config file" in body(ro)["error"]
    gone = await tools.call("delete_schedule", {"name": "nightly"}, admin)
    assert body(gone) == {"name": "nightly", "deleted": True}
    assert body(await tools.call("list_schedules", {}, reader))["total"] == 1
