"""``nessus-pool mcp`` as a new user starts it (from ``/``, ``env -i PATH=/usr/bin:/bin``):
pipelined messages in both eras and both modes, what stderr says first, and how the bridge
treats a bad ``--connect``, an unreachable daemon and its token."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.simulator.ports import free_port_range as free_port
from tests.conftest import DaemonFactory, write_config
from tests.integration.test_mcp_sdk import NESSUS_POOL, mcp_config
from tests.integration.test_mcp_stdio import INIT, line

pytestmark = pytest.mark.acceptance

TOKEN = "pipeline-admin-token-0123456789abcdef"
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(NESSUS_POOL), "mcp", *args, cwd="/",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip


async def exchange(
    proc: asyncio.subprocess.Process, messages: list[dict[str, Any]], replies: int
) -> tuple[list[dict[str, Any]], str]:
    """Send every message in ONE write, read ``replies`` lines, then close stdin."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"".join(line(m) for m in messages))
    await proc.stdin.drain()
    got = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) for _ in range(replies)]
    proc.stdin.close()
    rest, err = await asyncio.wait_for(proc.communicate(), 15)
    assert rest == b"", rest  # nothing more: no stray error reply
    return got, err.decode()


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(mcp_config(tmp_path, server={"admin-tokens": [TOKEN]}))
    return d


def handshake_messages() -> list[dict[str, Any]]:
    return [
        INIT,
        INITIALIZED,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "ping"},
    ]


def modern_messages() -> list[dict[str, Any]]:
    return [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}},
        {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"_meta": MODERN_META}},
    ]


async def test_bridge_answers_requests_pipelined_behind_initialize(
    daemon: Daemon, tmp_path: Path
) -> None:
    """The reviewer's case: initialize, initialized and tools/list in one write. The bridge
    used to send tools/list before it had the session id (answer: an error with id null)."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    proc = await spawn("--connect", f"{daemon.url}/mcp", "--token-file", str(tmp_path / "token"))
    replies, err = await exchange(proc, handshake_messages(), 3)
    by_id = {r["id"]: r for r in replies}
    assert set(by_id) == {1, 2, 3}, replies
    assert len(by_id[2]["result"]["tools"]) >= 12 and by_id[3]["result"] == {}
    assert proc.returncode == 0 and TOKEN not in err


async def test_bridge_answers_pipelined_stateless_requests(daemon: Daemon) -> None:
    proc = await spawn("--connect", f"{daemon.url}/mcp", env={"NESSUS_POOL_TOKEN": TOKEN})
    replies, _ = await exchange(proc, modern_messages(), 2)
    by_id = {r["id"]: r for r in replies}
    assert len(by_id[1]["result"]["tools"]) >= 12 and "error" not in by_id[2]
    assert proc.returncode == 0


@pytest.mark.parametrize("era", ["handshake", "stateless"])
async def test_embedded_answers_pipelined_requests(era: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    proc = await spawn("--config", str(config))
    messages = handshake_messages() if era == "handshake" else modern_messages()
    replies, err = await exchange(proc, messages, len(messages) - (era == "handshake"))
    ids = sorted(r["id"] for r in replies)
    assert ids == ([1, 2, 3] if era == "handshake" else [1, 2]), replies
    assert all("error" not in r for r in replies), replies
    assert proc.returncode == 0, err


async def test_request_without_session_is_refused_with_its_id(daemon: Daemon) -> None:
    """Any error carries the request's id, so a client can match it to the call."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{daemon.url}/mcp",
            json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        ) as resp,
    ):
        body = await resp.json()
    assert resp.status == 400 and body["id"] == 7
    assert "Mcp-Session-Id" in body["error"]["message"]


async def test_embedded_first_stderr_line_names_the_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    proc = await spawn("--config", str(config))
    _, err = await asyncio.wait_for(proc.communicate(b""), 20)
    first = err.decode().splitlines()[0]
    assert proc.returncode == 0
    assert first.startswith("nessus-pool mcp: embedded engine: config "), err
    assert f"storage {(tmp_path / 'data').resolve()}" in first


async def test_locked_storage_first_stderr_line_says_it_bridges(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    data = mcp_config(tmp_path, server={"listen": f"127.0.0.1:{free_port()}"})
    d: Daemon = await start_daemon(data)
    proc = await spawn("--config", str(write_config(tmp_path / "np2.toml", data)))
    replies, err = await exchange(proc, handshake_messages(), 3)
    assert sorted(r["id"] for r in replies) == [1, 2, 3]
    first = err.splitlines()[0]
    assert "already runs on the storage" in first and f"127.0.0.1:{d.port}/mcp" in first


@pytest.mark.parametrize("url", ["127.0.0.1:8835", "localhost/mcp", "ftp://127.0.0.1/mcp"])
async def test_connect_without_http_scheme_exits_2_naming_the_option(url: str) -> None:
    proc = await spawn("--connect", url)
    out, err = await asyncio.wait_for(proc.communicate(b""), 20)
    assert proc.returncode == 2 and out == b""
    assert f"--connect {url!r}" in err.decode() and "http://HOST:PORT/mcp" in err.decode()


async def test_unreachable_daemon_exits_1() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = await spawn("--connect", f"http://127.0.0.1:{port}/mcp")
        out, err = await asyncio.wait_for(proc.communicate(line(INIT)), 20)
    assert proc.returncode == 1 and out == b""
    assert f"cannot reach the daemon at http://127.0.0.1:{port}/mcp" in err.decode()


async def test_refused_token_exits_1_without_printing_it(daemon: Daemon) -> None:
    wrong = "wrong-token-0123456789abcdef0123"
    proc = await spawn("--connect", f"{daemon.url}/mcp", env={"NESSUS_POOL_TOKEN": wrong})
    _, err = await asyncio.wait_for(proc.communicate(b""), 20)
    assert proc.returncode == 1
    assert "needs a bearer token and ours is refused" in err.decode() and wrong not in err.decode()


async def test_token_on_the_command_line_warns(daemon: Daemon) -> None:
    proc = await spawn("--connect", f"{daemon.url}/mcp", "--token", TOKEN)
    replies, err = await exchange(proc, handshake_messages(), 3)
    assert len(replies) == 3 and proc.returncode == 0
    assert "warning: --token puts the token on the command line" in err and TOKEN not in err
    assert err.splitlines()[0].startswith("nessus-pool mcp: bridging stdio to the daemon at")


async def test_unreadable_token_file_exits_2_naming_the_option(tmp_path: Path) -> None:
    proc = await spawn("--connect", "http://127.0.0.1:9/mcp", "--token-file", str(tmp_path / "x"))
    _, err = await asyncio.wait_for(proc.communicate(b""), 20)
    assert proc.returncode == 2 and "--token-file: cannot read token file" in err.decode()


@pytest.mark.parametrize("stdin_kind", ["pipe closed at once", "regular file"])
async def test_requests_sent_before_eof_are_answered(stdin_kind: str, tmp_path: Path) -> None:
    """``printf ... | nessus-pool mcp`` and ``nessus-pool mcp < requests.jsonl``: what was
    asked before EOF is answered (tools/list was cancelled by EOF; a file on stdin got no
    answer at all, fd 0 having been closed by the failed pipe setup)."""
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    requests = b"".join(line(m) for m in handshake_messages())
    if stdin_kind == "regular file":
        (tmp_path / "in.jsonl").write_bytes(requests)
        with (tmp_path / "in.jsonl").open("rb") as stdin:
            proc = await asyncio.create_subprocess_exec(
                str(NESSUS_POOL), "mcp", "--config", str(config), cwd="/", stdin=stdin,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 20)
    else:
        proc = await spawn("--config", str(config))
        out, err = await asyncio.wait_for(proc.communicate(requests), 20)
    ids = sorted(json.loads(x)["id"] for x in out.splitlines())
    assert ids == [1, 2, 3] and proc.returncode == 0, err
    assert b"Traceback" not in err


async def test_stdin_from_dev_null_exits_quietly(tmp_path: Path) -> None:
    config = write_config(tmp_path / "np.toml", mcp_config(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        str(NESSUS_POOL), "mcp", "--config", str(config), cwd="/",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0 and out == b"" and b"Traceback" not in err, err


async def test_credentials_in_the_connect_url_are_refused_unprinted() -> None:
    proc = await spawn("--connect", "http://agent:Hunter2-pw@127.0.0.1:9/mcp")
    out, err = await asyncio.wait_for(proc.communicate(b""), 20)
    assert proc.returncode == 2 and out == b""
    said = err.decode()
    assert "Hunter2" not in said and "--connect 'http://127.0.0.1:9/mcp'" in said
    assert "--token-file" in said and "Traceback" not in said
