"""The seed server's clients use fastmcp 2.13 (``result.data["task_id"]``, a plain string from
get_scan_results, ``ToolError`` for ``isError`` results). fastmcp pins an ``mcp`` 1.x that
conflicts with our test extra (mcp 2.3.0), so a separate venv is built once under the user's
cache directory and a small client script runs there against a live daemon on port 0.

Skips only when pip cannot reach a package index outside CI; in CI (``CI`` set) a failed
install fails the test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory
from tests.integration.test_mcp_sdk import mcp_config

FASTMCP_SPEC = "fastmcp==2.13.*"
VENV = Path(
    os.environ.get("NESSUS_POOL_FASTMCP_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "nessus-pool-tests"
    / "fastmcp-2.13"
)

CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from fastmcp import Client
    from fastmcp.exceptions import ToolError

    async def main(url):
        out = {}
        async with Client(url, timeout=60) as c:
            sub = (await c.call_tool("run_untrusted_scan",
                                     {"targets": "10.1.0.5", "name": "fastmcp"})).data
            out["submit"] = {k: sub[k] for k in sub}          # a dict, subscriptable
            tid = sub["task_id"]
            await c.call_tool("wait_for_scan", {"task_id": tid, "timeout_s": 60})
            out["status"] = (await c.call_tool("get_scan_status", {"task_id": tid})).data
            res = (await c.call_tool("get_scan_results", {"task_id": tid, "page": 0,
                                     "schema_profile": "minimal",
                                     "filters": {"severity": "3"}})).data
            out["results_type"] = type(res).__name__
            out["results"] = [json.loads(x) for x in res.strip().split("\\n")]
            for name in ("list_scanners", "list_pools", "get_pool_status",
                         "get_queue_status", "list_tasks"):
                out[name] = (await c.call_tool(name, {})).data
            out["missing"] = (await c.call_tool("get_scan_status",
                                                {"task_id": "invalid-task-id-12345"})).data
            try:
                await c.call_tool("run_authenticated_scan", {
                    "targets": "10.1.0.5", "name": "x", "scan_type": "invalid_type_xyz",
                    "ssh_username": "u", "ssh_password": "p"})
                out["bad_scan_type"] = None
            except ToolError as exc:
                out["bad_scan_type"] = str(exc)
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
    """
)


async def _run(*argv: str, timeout_s: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"timed out after {timeout_s} s"
    return proc.returncode or 0, out.decode(errors="replace")


async def fastmcp_python() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if marker.exists() and python.exists():
        return python
    code, out = await _run(sys.executable, "-m", "venv", "--clear", str(VENV), timeout_s=60)
    assert code == 0, out
    code, out = await _run(
        str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", FASTMCP_SPEC,
        timeout_s=300,
    )  # fmt: skip
    if code != 0:
        if os.environ.get("CI"):
            pytest.fail(f"pip could not install {FASTMCP_SPEC}: {out[-2000:]}")
        pytest.skip(f"pip could not install {FASTMCP_SPEC} (no package index?)")
    marker.write_text(FASTMCP_SPEC)
    return python


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(mcp_config(tmp_path))
    return d


@pytest.mark.timeout(400)
async def test_fastmcp_client_gets_dicts_and_a_string(daemon: Daemon, tmp_path: Path) -> None:
    python = await fastmcp_python()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    code, out = await _run(str(python), str(script), f"{daemon.url}/mcp", timeout_s=90)
    assert code == 0, out
    got = json.loads(out.strip().splitlines()[-1])

    sub = got["submit"]
    assert sub["status"] == "queued" and isinstance(sub["estimated_wait_minutes"], int)
    assert sub["scanner_instance"] == "sim-1" and sub["scanner_url"].startswith("https://")
    assert len(sub["trace_id"]) == 36
    status = got["status"]
    assert status["trace_id"] == sub["trace_id"] and status["status"] == "completed"
    assert status["targets"] == "10.1.0.5" and status["completed_at"].endswith("Z")
    assert status["results_summary"]["total_vulnerabilities"] >= 1

    assert got["results_type"] == "str"
    schema, meta, *rows = got["results"]
    assert schema["filters_applied"] == {"severity": "3"} and schema["total_pages"] == 1
    assert meta["type"] == "scan_metadata" and meta["scan_name"] == "fastmcp"
    assert rows and all(r["type"] == "vulnerability" and r["severity"] == "3" for r in rows)
    assert all(isinstance(r["plugin_id"], str) and "cvss_score" in r for r in rows)

    assert got["list_scanners"]["scanners"][0]["instance_key"] == "lan:sim-1"
    assert got["list_pools"] == {"pools": ["lan"], "default_pool": "lan"}
    assert got["get_pool_status"]["scanner_type"] == "nessus"
    assert isinstance(got["get_queue_status"]["dlq_size"], int)
    assert got["list_tasks"]["tasks"][0]["trace_id"] == sub["trace_id"]
    assert "not found" in got["missing"]["error"]
    assert got["bad_scan_type"] is not None and "scan_type" in got["bad_scan_type"]
