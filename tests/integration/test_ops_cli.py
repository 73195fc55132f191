"""The operator CLI against a real in-process daemon with the simulator: every command, its
exit codes (0 ok, 1 failed, 2 usage/validation) and its table and JSON output.

The daemon runs on the test's event loop, so the (synchronous) CLI runs in a worker thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.cli import main
from nessus_pool.daemon import Daemon
from nessus_pool.models import ScanType
from nessus_pool.ops.fleet import scanner_state
from nessus_pool.ops.output import progress_line
from nessus_pool.ops.parser import parse_duration
from nessus_pool.render import render_table
from nessus_pool.service import SubmitRequest
from nessus_pool.simulator import Faults
from tests.conftest import DaemonFactory, sim_config

Result = tuple[int, str, str]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NESSUS_POOL_URL", "NESSUS_POOL_TOKEN", "NESSUS_POOL_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)


async def cli(capsys: pytest.CaptureFixture[str], d: Daemon, *argv: str) -> Result:
    rc = await asyncio.to_thread(main, [*argv, "--url", d.url])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_pool(tmp_path: Path, *, max_attempts: int = 3, scan_seconds: float = 0.3) -> dict[str, Any]:
    return sim_config(
        tmp_path,
        scan_seconds=scan_seconds,
        pools=[
            {
                "name": "lan",
                "poll-interval-s": 0.05,
                "max-queued": 1000,
                "max-attempts": max_attempts,
            }
        ],
    )


async def submit_wait(capsys: pytest.CaptureFixture[str], d: Daemon, *extra: str) -> Result:
    return await cli(
        capsys,
        d,
        "scan",
        "submit",
        "10.0.0.1-10.0.0.2",
        "--wait",
        "--poll-interval",
        "0.05",
        "--wait-timeout",
        "60",
        *extra,
    )


# --- pure helpers ----------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1d12h") == 129600
    for bad in ("", "7x", "d", "1 d", "-5s"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_render_table_aligns_columns() -> None:
    text = render_table(["ID", "STATUS"], [["a", "queued"], ["long-id", None]])
    lines = text.splitlines()
    assert lines[0] == "ID       STATUS"
    assert lines[1] == "a        queued"
    assert lines[2] == "long-id  -"


def test_progress_line_estimates_from_progress() -> None:
    view = {
        "task_id": "t1",
        "status": "running",
        "progress_pct": 25,
        "scanner": "sim-1",
        "started_at_ms": 0,
    }
    line = progress_line(view, now_ms=30_000, width=8)
    assert "[##......]" in line and " 25%" in line and "on sim-1" in line
    assert "eta 1m30s" in line
    queued = {"task_id": "t2", "status": "queued", "queue_position": 3, "estimated_wait_s": 42.0}
    assert "position 3" in progress_line(queued, 0) and "eta 42s" in progress_line(queued, 0)


# --- scans ---------------------------------------------------------------------------------


async def test_submit_wait_status_results_download_list(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    rc, out, err = await submit_wait(capsys, d, "--name", "cli-demo")
    assert rc == 0, err
    task_id = next(line.split()[1] for line in out.splitlines() if line.startswith("task "))
    assert "completed" in out and "cli-demo" in out
    assert "%" in err and "completed" in err  # the progress lines

    rc, out, _ = await cli(capsys, d, "scan", "status", task_id)
    assert rc == 0 and task_id in out and "findings" in out
    rc, out, _ = await cli(capsys, d, "scan", "status", task_id, "--json")
    assert rc == 0 and json.loads(out)["status"] == "completed"

    rc, out, _ = await cli(capsys, d, "scan", "results", task_id, "--page-size", "3")
    assert rc == 0 and "SEVERITY" in out and "page 1/" in out
    rc, out, _ = await cli(capsys, d, "scan", "results", task_id, "--min-severity", "low", "--json")
    page = json.loads(out)
    assert rc == 0 and all(i["severity"] >= 1 for i in page["items"])
    rc, _, err = await cli(capsys, d, "scan", "results", task_id, "--min-severity", "bogus")
    assert rc == 2 and "field: filters.min_severity" in err

    dest = tmp_path / "out.nessus"
    rc, out, _ = await cli(capsys, d, "scan", "download", task_id, "-o", str(dest))
    assert rc == 0 and str(dest) in out
    assert "NessusClientData_v2" in dest.read_text()[:2000]
    assert not list(tmp_path.glob(".*.part"))

    rc, out, _ = await cli(capsys, d, "tasks", "list")
    assert rc == 0 and task_id in out and out.startswith("TASK ID")
    rc, out, _ = await cli(capsys, d, "tasks", "list", "--status", "completed", "--json")
    assert rc == 0 and [t["task_id"] for t in json.loads(out)["tasks"]] == [task_id]
    rc, _, err = await cli(capsys, d, "tasks", "list", "--status", "nonsense")
    assert rc == 2 and "field: status" in err


async def test_submit_json_drain_cancel_enable(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    for sid in ("sim-1", "sim-2"):
        rc, out, err = await cli(capsys, d, "scanners", "drain", sid)
        assert rc == 0 and "draining" in out and sid in out, err
    # nothing can start, so the task stays queued until we cancel it
    rc, out, _ = await cli(
        capsys,
        d,
        "scan",
        "submit",
        "10.0.0.9",
        "--priority",
        "5",
        "--idempotency-key",
        "k1",
        "--json",
    )
    res = json.loads(out)
    assert rc == 0 and res["status"] == "queued" and res["queue_position"] == 1
    task_id = res["task_id"]
    rc, out, _ = await cli(
        capsys, d, "scan", "submit", "10.0.0.9", "--priority", "5", "--idempotency-key", "k1"
    )
    assert rc == 0 and task_id in out and "yes" in out  # duplicate
    rc, out, _ = await cli(capsys, d, "scan", "cancel", task_id)
    assert rc == 0 and task_id in out and "canceled" in out
    rc, _, err = await cli(capsys, d, "scan", "cancel", task_id)
    assert rc == 1 and "already ended" in err
    rc, _, err = await cli(
        capsys, d, "scan", "download", task_id, "-o", str(tmp_path / "none.nessus")
    )
    assert rc == 1 and "no export" in err
    assert not (tmp_path / "none.nessus").exists()
    rc, out, _ = await cli(capsys, d, "scanners", "enable", "sim-1")
    # health decides now: "up", or "probing" if its first probe has not answered yet (probes
    # start with the listener, so this can race; it used to show "down" then)
    state = out.splitlines()[1].split()[2]
    assert rc == 0 and state in ("up", "probing"), out


async def test_wait_exits_1_when_the_scan_fails(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path, max_attempts=1))
    for s in d.sim_cluster.scanners:
        s.set_faults(Faults(abort_rate=1.0))
    rc, out, _ = await submit_wait(capsys, d)
    assert rc == 1 and "failed" in out


# --- errors --------------------------------------------------------------------------------


async def test_validation_not_found_and_usage_errors(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    rc, _, err = await cli(capsys, d, "scan", "submit", "10.0.0.1", "--pool", "nope")
    assert rc == 2 and "pool 'nope' does not exist" in err and "field: pool" in err
    rc, out, _ = await cli(capsys, d, "scan", "submit", "10.0.0.1", "--pool", "nope", "--json")
    assert rc == 2 and json.loads(out)["error"]["field"] == "pool"
    rc, _, err = await cli(capsys, d, "scan", "submit", "10.0.0.1", "--priority", "500")
    assert rc == 2 and "field: priority" in err
    rc, _, err = await cli(capsys, d, "scan", "status", "0123456789abcdef")
    assert rc == 1 and "not found" in err
    rc, _, err = await cli(capsys, d, "scan", "status", "bad id!")
    assert rc == 2 and "field: task_id" in err
    rc, _, err = await cli(capsys, d, "scanners", "show", "nope")
    assert rc == 1 and "not found" in err
    rc, _, err = await cli(capsys, d, "scanners", "drain")
    assert rc == 2 and "needs a scanner id" in err
    with pytest.raises(SystemExit) as exc:
        main(["scan", "submit", "--url", d.url])  # no targets: argparse usage error
    assert exc.value.code == 2
    capsys.readouterr()
    assert main(["pools", "--url", "ftp://x"]) == 2  # rejected before any request
    assert "not an http(s) URL" in capsys.readouterr().err


def test_connection_refused_names_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["pools", "--url", url]) == 1
    err = capsys.readouterr().err
    assert url in err and "connection refused" in err


async def test_tokens_from_file_and_env(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d: Daemon = await start_daemon(
        one_pool(tmp_path)
        | {
            "server": {
                "listen": "127.0.0.1:0",
                "admin-tokens": ["admin-s3cret-0123456789"],
                "read-tokens": ["read-s3cret-0123456789"],
            }
        }
    )
    rc, _, err = await cli(capsys, d, "pools")
    assert rc == 1 and "bearer token" in err and "NESSUS_POOL_TOKEN" in err
    token_file = tmp_path / "token"
    token_file.write_text("read-s3cret-0123456789\n")
    rc, out, _ = await cli(capsys, d, "pools", "--token-file", str(token_file))
    assert rc == 0 and "lan" in out
    rc, _, err = await cli(capsys, d, "scanners", "drain", "sim-1", "--token-file", str(token_file))
    assert rc == 1 and "admin token" in err
    monkeypatch.setenv("NESSUS_POOL_TOKEN", "admin-s3cret-0123456789")
    rc, out, _ = await cli(capsys, d, "scanners", "drain", "sim-1")
    assert rc == 0 and "draining" in out
    rc, _, err = await cli(capsys, d, "pools", "--token-file", str(tmp_path / "missing"))
    assert rc == 2 and "cannot read token file" in err


# --- pools, scanners, reload -------------------------------------------------------------------


async def test_pools_scanners_and_reload(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    rc, out, _ = await cli(capsys, d, "pools")
    assert rc == 0 and out.startswith("POOL") and "lan" in out and "0/4" in out
    rc, out, _ = await cli(capsys, d, "pools", "lan")
    assert rc == 0 and "sim-1" in out and "sim-2" in out
    rc, out, _ = await cli(capsys, d, "pools", "--json")
    assert rc == 0 and json.loads(out)["pools"][0]["name"] == "lan"
    rc, _, err = await cli(capsys, d, "pools", "nope")
    assert rc == 1 and "not found" in err
    rc, out, _ = await cli(capsys, d, "scanners")
    assert rc == 0 and "sim-1" in out and "sim-2" in out and "up" in out
    rc, out, _ = await cli(capsys, d, "scanners", "show", "sim-2", "--json")
    assert rc == 0 and json.loads(out)["id"] == "sim-2"

    rc, out, _ = await cli(capsys, d, "reload")
    assert rc == 0 and "reloaded" in out
    assert d.config_path is not None
    Path(d.config_path).write_text("[pools\n")
    rc, out, err = await cli(capsys, d, "reload")
    assert rc == 1 and "refused" in out
    rc, out, _ = await cli(capsys, d, "reload", "--json")
    assert rc == 1 and json.loads(out)["applied"] is False


# --- dead-letter queue -------------------------------------------------------------------------


async def require_dlq(d: Daemon) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{d.url}/api/v1/dlq") as r:
        if r.status == 404:
            pytest.skip("the daemon has no /api/v1/dlq endpoints yet")


async def dead_letter(capsys: pytest.CaptureFixture[str], d: Daemon) -> str:
    for s in d.sim_cluster.scanners:
        s.set_faults(Faults(abort_rate=1.0))
    rc, out, _ = await submit_wait(capsys, d, "--json")
    view = json.loads(out)
    assert rc == 1 and view["dead_letter"] is True, view
    for s in d.sim_cluster.scanners:
        s.set_faults(Faults())
    task_id: str = view["task_id"]
    return task_id


async def test_dlq_list_show_retry(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path, max_attempts=1))
    await require_dlq(d)
    rc, out, _ = await cli(capsys, d, "dlq", "list")
    assert rc == 0 and "empty" in out
    task_id = await dead_letter(capsys, d)
    rc, out, _ = await cli(capsys, d, "dlq", "list")
    assert rc == 0 and task_id in out and "attempts_exhausted" in out
    rc, out, _ = await cli(capsys, d, "dlq", "list", "--pool", "lan", "--json")
    assert rc == 0 and [t["task_id"] for t in json.loads(out)["tasks"]] == [task_id]
    rc, out, _ = await cli(capsys, d, "dlq", "show", task_id)
    assert rc == 0 and task_id in out and "AT" in out and "queued" in out
    rc, out, _ = await cli(capsys, d, "dlq", "show", task_id, "--json")
    assert rc == 0 and json.loads(out)["events"]
    rc, out, _ = await cli(capsys, d, "pools")
    assert rc == 0 and "DLQ" in out

    rc, out, _ = await cli(capsys, d, "dlq", "retry", task_id)
    assert rc == 0 and task_id in out
    assert d.service is not None
    assert (await d.service.wait_for(task_id, 30)).status == "completed"
    rc, out, _ = await cli(capsys, d, "dlq", "list")
    assert task_id not in out
    rc, _, err = await cli(capsys, d, "dlq", "retry", task_id)
    assert rc == 1 and "not in the dead-letter queue" in err
    rc, _, err = await cli(capsys, d, "dlq", "show", "0123456789abcdef")
    assert rc == 1 and "not found" in err


async def test_dlq_purge_dry_run_then_yes(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path, max_attempts=1))
    await require_dlq(d)
    first = await dead_letter(capsys, d)
    second = await dead_letter(capsys, d)

    rc, _, err = await cli(capsys, d, "dlq", "purge")
    assert rc == 2 and "task ids" in err
    rc, _, err = await cli(capsys, d, "dlq", "purge", first, "--pool", "lan")
    assert rc == 2
    rc, out, err = await cli(capsys, d, "dlq", "purge", "--pool", "lan")
    assert rc == 0 and "dry run" in out and first in out and second in out and "--yes" in err
    rc, out, _ = await cli(capsys, d, "dlq", "purge", "--older-than", "1h", "--json")
    assert rc == 0 and json.loads(out) == {"purged": 0, "task_ids": [], "dry_run": True}
    rc, out, _ = await cli(capsys, d, "dlq", "list")
    assert first in out and second in out

    rc, out, _ = await cli(capsys, d, "dlq", "purge", first)
    assert rc == 0 and "purged 1" in out and first in out
    rc, out, _ = await cli(
        capsys, d, "dlq", "purge", "--pool", "lan", "--older-than", "0s", "--yes", "--json"
    )
    assert rc == 0 and json.loads(out) == {"purged": 1, "task_ids": [second], "dry_run": False}
    rc, out, _ = await cli(capsys, d, "dlq", "list")
    assert rc == 0 and "empty" in out


# --- issue 11: names, presentation, troubleshooting --------------------------------------------


def test_scanner_state_puts_the_operators_decision_before_health() -> None:
    # a drained scanner whose first probe has not answered yet used to show "down"
    base = {"enabled": True, "export_only": False, "reachable": False}
    assert scanner_state({**base, "draining": True}) == "draining"
    assert scanner_state({**base, "draining": False, "enabled": False}) == "disabled"
    assert scanner_state({**base, "draining": False}) == "down"
    # the daemon's own word wins (it knows "probing": no probe answered yet)
    assert scanner_state({**base, "draining": False, "state": "probing"}) == "probing"


async def test_scan_list_is_tasks_list_and_pages_with_page_size(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    for sid in ("sim-1", "sim-2"):
        assert (await cli(capsys, d, "scanners", "drain", sid))[0] == 0
    ids = []
    for target in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        rc, out, _ = await cli(capsys, d, "scan", "submit", target, "--json")
        ids.append(json.loads(out)["task_id"])
    rc, out, err = await cli(capsys, d, "scan", "list", "--page-size", "2", "--json")
    page = json.loads(out)
    assert rc == 0, err
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:2] and page["next_cursor"]
    assert out.startswith("{\n  ")  # the one --json style: indented
    rc, out, err = await cli(capsys, d, "scan", "list", "--page-size", "2")
    assert rc == 0 and out.startswith("TASK ID") and "--cursor" in err
    rc, out, _ = await cli(capsys, d, "scan", "list", "--page-size", "2", "--all", "--json")
    assert [t["task_id"] for t in json.loads(out)["tasks"]] == ids[::-1]
    rc, out, _ = await cli(capsys, d, "tasks", "list", "--limit", "1", "--json")  # the alias
    assert rc == 0 and [t["task_id"] for t in json.loads(out)["tasks"]] == ids[-1:]
    rc, _, err = await cli(capsys, d, "scan", "list", "--page-size", "0")
    assert rc == 2 and "field: page_size" in err


async def test_status_prints_troubleshooting_of_a_failed_login(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    assert d.service is not None
    sub = await d.service.submit(
        SubmitRequest(
            targets="10.9.0.1",
            scan_type=ScanType.AUTHENTICATED,
            ssh_username="audit",
            ssh_password="wrong-pw-123",
        )
    )
    view = await d.service.wait_for(sub.task_id, 60)
    assert view.reason == "authentication_failed"
    assert view.results is not None
    trouble = view.results["validation"]["troubleshooting"]
    assert trouble
    rc, out, _ = await cli(capsys, d, "scan", "status", sub.task_id)
    assert rc == 0 and "validation.troubleshooting" in out
    section = out[out.index("troubleshooting:") :]
    assert all(f"  - {line}" in section for line in trouble)
    assert "wrong-pw-123" not in out


async def test_results_table_and_compare(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(one_pool(tmp_path))
    rc, out, _ = await submit_wait(capsys, d, "--json")
    first = json.loads(out)["task_id"]
    rc, out, _ = await submit_wait(capsys, d, "--json")
    second = json.loads(out)["task_id"]
    rc, out, _ = await cli(
        capsys, d, "scan", "results", second, "--profile", "summary", "--page-size", "10"
    )
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["SEVERITY", "HOST", "PORT", "PROTO", "PLUGIN"]
    assert "EXPLOIT" in header and "PLUGIN_ID" not in header
    assert rows[0].split()[0] in ("critical", "high", "medium", "low", "info")
    assert "True" not in out and "False" not in out
    assert rows[-1].startswith("page 1/") and rows[-1].endswith("findings (next: --page 2)")

    rc, out, _ = await cli(
        capsys, d, "scan", "results", second, "--sort", "cvss3", "--fields", "host,plugin_id"
    )
    assert rc == 0 and out.splitlines()[0].split() == ["HOST", "PLUGIN"]
    rc, out, _ = await cli(
        capsys, d, "scan", "results", second, "--protocol", "tcp", "--min-cvss3", "5", "--json"
    )
    page = json.loads(out)
    assert rc == 0 and page["items"]
    assert all(i["protocol"] == "tcp" and i["cvss3_base_score"] >= 5 for i in page["items"])

    rc, out, err = await cli(capsys, d, "scan", "compare", second, "--base", first)
    assert rc == 0, err
    assert out.startswith(f"{first} -> {second}: ") and " unchanged" in out.splitlines()[0]
    rc, out, _ = await cli(capsys, d, "scan", "compare", second, "--json")  # base: the last
    doc = json.loads(out)
    assert rc == 0 and doc["base_task_id"] == first and doc["diff"]["unchanged_total"] > 0
    rc, _, err = await cli(capsys, d, "scan", "compare", first)
    assert rc == 1 and "field: base_task_id" in err


async def test_a_closed_pipe_is_no_traceback(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `nessus-pool scan list --json | head -3` printed a BrokenPipeError traceback
    d: Daemon = await start_daemon(one_pool(tmp_path))
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with os.fdopen(write_fd, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        rc = await asyncio.to_thread(main, ["pools", "--json", "--url", d.url])
        monkeypatch.undo()
    assert rc == 1
    assert "Traceback" not in capsys.readouterr().err
