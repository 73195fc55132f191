"""``nessus-pool schedules ...`` against a real daemon: create, list, show, run-now, delete;
bad input exits 2 naming the field; a config schedule's delete exits 1 saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_ops_cli import _clean_env, cli  # noqa: F401 (a fixture)


async def test_schedules_cli(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(
        sim_config(
            tmp_path, schedules=[{"name": "from-file", "targets": "10.9.0.1", "every-s": 3600}]
        )
    )
    rc, out, err = await cli(
        capsys, d, "schedules", "create", "weekly", "10.9.0.2", "10.9.0.3",
        "--cron", "0 2 * * 1", "--timezone", "Europe/Berlin",
    )  # fmt: skip
    assert rc == 0, err
    assert "created schedule weekly: cron 0 2 * * 1 (Europe/Berlin), next run 2026-" in out
    rc, out, err = await cli(capsys, d, "schedules", "create", "bad", "10.9.0.2", "--every", "0")
    assert rc == 2 and "(field: every_s)" in err
    rc, out, err = await cli(
        capsys, d, "schedules", "create", "bad", "10.9.0.2", "--cron", "0 2 * * 1",
        "--timezone", "Atlantis/Capital",
    )  # fmt: skip
    assert rc == 2 and "(field: timezone)" in err
    rc, out, _ = await cli(capsys, d, "schedules", "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "WHEN", "TARGETS"]
    assert [line.split()[0] for line in lines[1:]] == ["from-file", "weekly"]
    rc, out, _ = await cli(capsys, d, "schedules", "run-now", "weekly", "--json")
    assert rc == 0
    task_id = json.loads(out)["run"]["task_id"]
    rc, out, _ = await cli(capsys, d, "schedules", "show", "weekly")
    assert rc == 0 and task_id in out and "manual" in out
    rc, _, err = await cli(capsys, d, "schedules", "delete", "from-file")
    assert rc == 1 and "config file" in err
    rc, out, _ = await cli(capsys, d, "schedules", "delete", "weekly")
    assert rc == 0 and "deleted schedule weekly" in out
    rc, _, err = await cli(capsys, d, "schedules", "show", "weekly")
    assert rc == 1 and "not found" in err
