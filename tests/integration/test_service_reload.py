"""POST /api/v1/reload: a refused reload is an error in the one shape (the CLI still prints
the refusal and exits 1), and a reload that needs a restart is a warning in the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config, write_config
from tests.integration.test_ops_cli import cli


async def test_a_refused_reload_answers_in_the_one_error_shape(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    assert d.config_path is not None
    Path(d.config_path).write_text("[pools\n")
    async with aiohttp.ClientSession() as http, http.post(f"{d.url}/api/v1/reload") as r:
        status, body = r.status, await r.json()
    assert status == 400
    assert list(body) == ["error"] and body["error"]["code"] == "reload_refused"
    assert body["error"]["message"].startswith("reload refused: ")
    rc, out, err = await cli(capsys, d, "reload")
    assert (rc, err) == (1, "")
    assert out.startswith("reload refused: ")
    rc, out, _ = await cli(capsys, d, "reload", "--json")
    assert rc == 1 and json.loads(out)["applied"] is False


async def test_a_reload_that_needs_a_restart_is_a_warning(
    tmp_path: Path, start_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
) -> None:
    data = sim_config(tmp_path)
    d: Daemon = await start_daemon(data)
    assert d.config_path is not None
    caplog.set_level(logging.INFO)
    await d.reload()  # nothing changed: information
    data["simulator"]["scan-seconds"] = 5.0  # the embedded simulator starts with the process
    write_config(Path(d.config_path), data)
    outcome = await d.reload()
    assert outcome.applied and "restart needed for: simulator" in outcome.message
    levels = [r.levelno for r in caplog.records if getattr(r, "event", None) == "config_reloaded"]
    assert levels == [logging.INFO, logging.WARNING]
