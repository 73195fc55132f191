"""What the container image needs from the daemon.

Behaviour: `serve --generate-admin-token` writes a token once (0600, never printed) and the
daemon then refuses requests without it on a non-loopback listener; the HEALTHCHECK probe
follows the configured port and fails on anything but 200.
"""

from __future__ import annotations

import asyncio
import re
import signal
import stat
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from nessus_pool.cli import main as cli_main
from nessus_pool.container import generate_admin_tokens, healthcheck, probe_url
from nessus_pool.errors import ConfigError
from nessus_pool.simulator.ports import free_port_range
from tests.conftest import sim_config, write_config
from tests.test_acceptance import spawn, stop

# --- behaviour: the first-start token --------------------------------------------------------


def token_config(tmp_path: Path, token_file: Path, listen: str = "0.0.0.0:0") -> Path:
    data = sim_config(tmp_path, scan_seconds=0.5)
    data["server"] = {"listen": listen, "admin-tokens": [{"file": str(token_file)}]}
    return write_config(tmp_path / "nessus-pool.toml", data)


def test_generate_admin_token_writes_once_0600(tmp_path: Path) -> None:
    token_file = tmp_path / "state" / "admin-token"
    cfg = token_config(tmp_path, token_file)
    assert generate_admin_tokens(str(cfg)) == [token_file]
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    # a second start keeps it; a token put there by the operator is never replaced
    assert generate_admin_tokens(str(cfg)) == []
    assert token_file.read_text().strip() == token


def test_generate_admin_token_cannot_write_names_file_and_field(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = token_config(tmp_path, blocker / "admin-token")
    with pytest.raises(ConfigError) as err:
        generate_admin_tokens(str(cfg))
    assert err.value.path == "$.server.admin-tokens[0]"
    assert str(blocker / "admin-token") in str(err.value)
    assert cli_main(["serve", "--config", str(cfg), "--generate-admin-token"]) == 2


def test_probe_url_follows_the_listen_address() -> None:
    assert probe_url("0.0.0.0:9000") == "http://127.0.0.1:9000/readyz"
    assert probe_url("[::]:9000") == "http://[::1]:9000/readyz"
    assert probe_url("10.0.0.5:8835") == "http://10.0.0.5:8835/readyz"


async def test_healthcheck_is_healthy_on_200_only(tmp_path: Path) -> None:
    answer = {"status": 503}

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"ready": answer["status"] == 200}, status=answer["status"])

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = token_config(tmp_path, tmp_path / "t", listen=f"0.0.0.0:{port}")
    try:
        assert await asyncio.to_thread(healthcheck, str(cfg)) == 1
        answer["status"] = 200
        assert await asyncio.to_thread(healthcheck, str(cfg)) == 0
    finally:
        await runner.cleanup()
    # nothing listening any more
    assert await asyncio.to_thread(healthcheck, str(cfg)) == 1


@pytest.mark.acceptance
async def test_serve_generates_a_token_and_requires_it_on_0_0_0_0(tmp_path: Path) -> None:
    port = free_port_range(1, host="0.0.0.0")
    token_file = tmp_path / "data" / "admin-token"
    cfg = token_config(tmp_path, token_file, listen=f"0.0.0.0:{port}")
    proc = await spawn(
        "serve", "--config", str(cfg), "--generate-admin-token", ready="daemon_ready"
    )
    try:
        token = token_file.read_text().strip()
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/v1/scans") as r:
                assert r.status == 401
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(
                f"{base}/api/v1/scans", json={"targets": "10.0.0.1"}, headers=headers
            ) as r:
                assert r.status == 202, await r.text()
        assert await asyncio.to_thread(healthcheck, str(cfg)) == 0
    finally:
        assert await stop(proc, signal.SIGTERM) == 0
    assert await asyncio.to_thread(healthcheck, str(cfg)) == 1
    assert token_file.stat().st_size > 0


def test_first_start_says_where_the_token_is_never_what(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nessus_pool.cli import cmd_generate_admin_token

    token_file = tmp_path / "data" / "admin-token"
    cfg = token_config(tmp_path, token_file)
    assert cmd_generate_admin_token(str(cfg)) == 0
    err = capsys.readouterr().err
    token = token_file.read_text().strip()
    assert str(token_file) in err and token not in err
    assert cmd_generate_admin_token(str(cfg)) == 0
    assert capsys.readouterr().err == "", "later starts print nothing"
