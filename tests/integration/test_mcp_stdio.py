"""``nessus-pool mcp`` as a subprocess, by hand: only JSON-RPC on stdout, a prompt exit on
EOF, and what happens when a daemon already holds the storage lock."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.simulator.ports import free_port_range as free_port
from tests.conftest import DaemonFactory, write_config
from tests.integration.test_mcp_sdk import NESSUS_POOL, mcp_config

pytestmark = pytest.mark.acceptance


async def spawn(config: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(NESSUS_POOL), "mcp", "--config", str(config), *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},  # what desktop clients pass, nothing more
    )  # fmt: skip


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip


async def test_stdout_is_protocol_only_and_eof_exits(tmp_path: Path) -> None:
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    proc = await spawn(config)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line(INIT) + b"not json\n" + line({"jsonrpc": "2.0", "method": "x"}))
    proc.stdin.write(line({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
    await proc.stdin.drain()
    replies = [json.loads(await proc.stdout.readline()) for _ in range(3)]
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["result"]["serverInfo"]["name"] == "nessus-pool"
    assert by_id[None]["error"]["code"] == -32700
    assert len(by_id[2]["result"]["tools"]) == 18
    started = time.monotonic()
    proc.stdin.close()
    rest, err = await asyncio.wait_for(proc.communicate(), 10)
    assert await proc.wait() == 0
    assert time.monotonic() - started < 2.0  # SDK clients SIGTERM after 2 s
    assert rest == b""  # nothing but replies ever reached stdout
    assert b"Traceback" not in err


async def test_locked_storage_without_fixed_port_says_use_connect(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    data = mcp_config(tmp_path)
    await start_daemon(data)
    proc = await spawn(write_config(tmp_path / "np2.toml", data))
    _, err = await asyncio.wait_for(proc.communicate(b""), 20)
    assert proc.returncode == 1
    assert b"--connect" in err and b"already uses the storage" in err


async def test_locked_storage_bridges_to_configured_daemon(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    data = mcp_config(tmp_path, server={"listen": f"127.0.0.1:{free_port()}"})
    d: Daemon = await start_daemon(data)
    assert d.port
    proc = await spawn(write_config(tmp_path / "np2.toml", data))
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line(INIT))
    await proc.stdin.drain()
    reply = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert reply["result"]["protocolVersion"] == "2025-11-25"
    proc.stdin.write(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    proc.stdin.write(line({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
    await proc.stdin.drain()
    reply = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert reply["id"] == 2 and len(reply["result"]["tools"]) == 18
    proc.stdin.close()
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    said = err.decode()
    storage = str((tmp_path / "data").resolve())
    assert f"already runs on the storage {storage}" in said
    assert f"bridging stdio to it at http://127.0.0.1:{d.port}/mcp" in said
    assert "stop it first" not in said and "error" not in said.lower()


async def test_says_which_storage_it_opened_from_any_directory(tmp_path: Path) -> None:
    """Started by a desktop client from another directory: stderr names the config and the
    absolute storage path, so a second, empty database cannot go unnoticed."""
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = await asyncio.create_subprocess_exec(
        str(NESSUS_POOL), "mcp", "--config", str(config), cwd=elsewhere,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(b""), 20)
    said = err.decode()
    assert proc.returncode == 0, said
    assert f"config {config.resolve()}" in said
    assert f"storage {(tmp_path / 'data').resolve()}" in said and "pools lan" in said


async def test_connect_says_where_it_bridges(daemon_for_connect: Daemon, tmp_path: Path) -> None:
    url = f"{daemon_for_connect.url}/mcp"
    proc = await asyncio.create_subprocess_exec(
        str(NESSUS_POOL), "mcp", "--connect", url,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(b""), 20)
    assert f"bridging stdio to the daemon at {url}" in err.decode()


@pytest.fixture
async def daemon_for_connect(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(mcp_config(tmp_path))
    return d


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLACEHOLDER = "/ABSOLUTE/PATH/TO/nessus-pool"


@pytest.mark.parametrize("name", ["claude_desktop_stdio.json", "claude_desktop_http.json"])
async def test_desktop_examples_run_from_any_directory(
    name: str, daemon_for_connect: Daemon, tmp_path: Path
) -> None:
    """The examples give absolute paths (a desktop client's PATH has no venv); with the
    placeholder filled in as README says, each starts from an unrelated directory."""
    server = json.loads((EXAMPLES / name).read_text())["mcpServers"]["nessus-pool"]
    assert server["command"].startswith(PLACEHOLDER + "/") and Path(server["command"]).is_absolute()
    checkout = NESSUS_POOL.parents[2]  # <checkout>/.venv/bin/nessus-pool
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path / "own"))
    args = [
        str(config) if a.endswith("nessus-pool.toml") else a.replace(PLACEHOLDER, str(checkout))
        for a in server["args"]
    ]
    if "--connect" in args:
        args[args.index("--connect") + 1] = f"{daemon_for_connect.url}/mcp"
    proc = await asyncio.create_subprocess_exec(
        server["command"].replace(PLACEHOLDER, str(checkout)), *args, cwd="/",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line(INIT))
    await proc.stdin.drain()
    reply = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert reply["result"]["serverInfo"]["name"] == "nessus-pool"
    proc.stdin.close()
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0 and (b"embedded engine: config" in err or b"bridging" in err)


def test_readme_says_how_to_find_the_absolute_command() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    mcp = readme[readme.index("## MCP for AI agents") : readme.index("## Migrating from")]
    assert "realpath .venv/bin/nessus-pool" in mcp and '"command": "nessus-pool"' not in mcp
