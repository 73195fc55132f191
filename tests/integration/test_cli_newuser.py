"""What a new user's first hour hit in the CLI: tracebacks, odd exit codes and error texts
that did not say how to fix them. Each test runs ``nessus_pool.cli.main`` in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.cli import main
from nessus_pool.config import render_starter_config
from nessus_pool.daemon import Daemon
from nessus_pool.logs import LIBRARY_LOGGERS
from nessus_pool.models import Escalation
from nessus_pool.service import SubmitRequest
from tests.conftest import SAMPLES_DIR, DaemonFactory, sim_config, write_config


def sample(name: str) -> Path:
    p = SAMPLES_DIR / name
    if not p.exists():
        pytest.skip(f"sample {name} absent")
    return p


@pytest.fixture
def daemon_logging() -> Iterator[None]:
    """``serve`` sets up logging on this test's stderr; put the loggers back afterwards."""
    loggers = [logging.getLogger(n) for n in ("nessus_pool", *LIBRARY_LOGGERS)]
    saved = [(lg, list(lg.handlers), list(lg.filters), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, filters, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.filters[:] = filters
        lg.setLevel(level)
        lg.propagate = propagate


# --- item 1: tracebacks and exit codes -------------------------------------------------------


@pytest.mark.usefixtures("daemon_logging")
def test_serve_on_a_taken_port_is_one_line_naming_the_address_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        data = sim_config(tmp_path) | {"server": {"listen": f"127.0.0.1:{port}"}}
        data["logging"] = {"format": "text"}
        path = write_config(tmp_path / "nessus-pool.toml", data)
        rc = main(["serve", "--config", str(path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if "cannot listen" in x)
    assert f"127.0.0.1:{port}" in line and "server.listen" in line and str(path) in line
    # the daemon undid its start: the storage lock is free for the next try
    assert main(["config", "check", "--config", str(path)]) == 0


def test_config_init_into_a_missing_folder_is_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.toml"
    assert main(["config", "init", "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert str(target) in err and "--output" in err and "create the folder" in err


def test_config_init_dash_writes_stdout_not_a_file_named_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init", "-o", "-"]) == 0
    assert capsys.readouterr().out == render_starter_config()
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["results", "summary", "{sample}"],
        ["results", "findings", "{sample}", "--json"],
        ["config", "init", "-o", "-"],
    ],
    ids=["results-summary", "results-findings", "config-init"],
)
def test_a_closed_stdout_ends_any_command_quietly(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `nessus-pool results summary X.xml | head -1` printed a BrokenPipeError traceback
    path = str(sample("defectdojo__nessus_many_vuln.xml"))
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with os.fdopen(write_fd, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        rc = main([a.replace("{sample}", path) for a in argv])
        monkeypatch.undo()
    assert rc == 1
    assert "Traceback" not in capsys.readouterr().err


# --- item 2: offline `results` as `scan results` ---------------------------------------------


def test_results_fields_implies_the_custom_profile(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(sample("defectdojo__nessus_many_vuln.xml"))
    assert main(["results", "findings", path, "--fields", "host,cves", "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["profile"] == "custom" and page["fields"] == ["host", "cves"]
    assert all(set(item) == {"host", "cves"} for item in page["items"]) and page["items"]
    # --fields with another profile is a contradiction, named as such
    assert main(["results", "findings", path, "--fields", "host", "--profile", "brief"]) == 2
    assert "error (fields)" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["results", "findings", "F"], ["scan", "results", "T"]])
def test_a_bad_sort_lists_the_accepted_values(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--sort", "bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--sort" in err and "'cvss3'" in err and "'plugin_id'" in err


@pytest.mark.parametrize(
    "name, text", [("README.md", "# nessus-pool\n\nsee <task_id> below\n"), ("x.json", '{"a": 1}')]
)
def test_a_file_that_is_not_xml_is_exit_2_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    for command in ("summary", "findings"):
        assert main(["results", command, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{name} is not XML" in err and "root element" not in err


def test_a_page_past_the_last_names_the_last_page(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(sample("defectdojo__nessus_many_vuln.xml"))
    assert main(["results", "findings", path, "--page-size", "2", "--json"]) == 0
    pages = json.loads(capsys.readouterr().out)["pages"]
    assert pages > 1
    assert main(["results", "findings", path, "--page-size", "2", "--page", "99"]) == 0
    out = capsys.readouterr().out
    assert f"past the last page: --page {pages}" in out


# --- item 3: error texts that say how to fix them --------------------------------------------


async def _cli(capsys: pytest.CaptureFixture[str], d: Daemon, *argv: str) -> tuple[int, str]:
    rc = await asyncio.to_thread(main, [*argv, "--url", d.url])
    return rc, capsys.readouterr().err


async def test_admin_api_validation_errors_name_the_field_and_the_accepted_values(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    async with aiohttp.ClientSession(d.url) as http:

        async def error(method: str, path: str, **kw: Any) -> dict[str, Any]:
            async with http.request(method, path, **kw) as resp:
                assert resp.status == 400, await resp.text()
                body: dict[str, Any] = (await resp.json())["error"]
                return body

        missing = await error("POST", "/api/v1/scans", json={"pool": "lan"})
        assert missing["field"] == "targets" and missing["message"] == "targets is required"

        bad_type = await error(
            "POST", "/api/v1/scans", json={"targets": ["10.0.0.1"], "scan_type": "auth"}
        )
        assert bad_type["field"] == "scan_type"
        assert bad_type["message"] == (
            "scan_type must be one of untrusted, authenticated, authenticated_privileged; "
            "got 'auth'"
        )
        # the name the caller used, never the internal `$.profile`
        for name in ("schema_profile", "profile"):
            prof = await error("GET", f"/api/v1/scans/x/results?{name}=nope")
            assert prof["field"] == name and "$." not in prof["message"]
            assert prof["message"].startswith(f"{name} must be one of ")
            assert "minimal" in prof["message"] and "custom" in prof["message"]

        pinned = await error(
            "POST", "/api/v1/scans", json={"targets": ["10.0.0.1"], "scanner": "sim-9"}
        )
        assert pinned["field"] == "scanner" and "its scanners: sim-1, sim-2" in pinned["message"]


async def test_compare_with_an_unknown_base_names_base_task_id(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.05))
    assert d.service is not None
    done = await d.service.submit(SubmitRequest(targets=["10.0.0.1"]))
    assert (await d.service.wait_for(done.task_id, 30.0)).status == "completed"
    rc, err = await _cli(capsys, d, "scan", "compare", done.task_id, "--base", "nope")
    assert rc == 1 and "field: base_task_id" in err and "'nope'" in err
    url = f"{d.url}/api/v1/scans/{done.task_id}/compare?base=nope"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["field"] == "base"


async def test_a_refused_token_says_it_was_refused_not_to_set_one(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = {"listen": "127.0.0.1:0", "admin-tokens": ["admin-s3cret-0123456789"]}
    d: Daemon = await start_daemon(sim_config(tmp_path) | {"server": server})
    for var in ("NESSUS_POOL_URL", "NESSUS_POOL_TOKEN", "NESSUS_POOL_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    rc, err = await _cli(capsys, d, "pools")
    assert rc == 1 and "no token was sent" in err
    monkeypatch.setenv("NESSUS_POOL_TOKEN", "wrong-0123456789abcdef")
    rc, err = await _cli(capsys, d, "pools")
    assert rc == 1 and "was refused" in err and "no token was sent" not in err
    assert "wrong-0123456789abcdef" not in err


@pytest.mark.parametrize(
    "argv, usage, hint",
    [
        (
            ["scan", "results", "X", "--min-severty", "high"],
            "nessus-pool scan results",
            "--min-severity",
        ),
        (["results", "findings", "F", "--pag", "2"], "nessus-pool results findings", "--page"),
        (["dlq", "purge", "--older", "7d"], "nessus-pool dlq purge", "--older-than"),
    ],
)
def test_a_mistyped_option_gets_the_subcommands_usage_and_a_hint(
    argv: list[str], usage: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {usage} ")
    assert f"(did you mean {hint}?)" in err


# --- item 4: secret files, REST field names --------------------------------------------------


def test_config_check_names_each_missing_secret_file_with_a_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {
        "storage": {"path": "data"},
        "pools": [
            {
                "name": "lan",
                "scanners": [
                    {
                        "id": "lan-1",
                        "url": "https://127.0.0.1:8834",
                        "access-key": {"file": "keys/access"},
                        "secret-key": {"file": "keys/secret"},
                    }
                ],
            }
        ],
    }
    path = write_config(tmp_path / "nessus-pool.toml", data)
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    # both listed at once (README: past the schema every problem is listed), each with a fix
    for key in ("access", "secret"):
        line = next(x for x in err.splitlines() if f"{key}-key" in x)
        assert f"secret file {tmp_path / 'keys' / key} does not exist (fix: " in line
        assert "chmod 600" in line and "config file's folder" in line


def test_config_check_reports_the_files_first_schema_error_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"pools": [{"name": "lan", "max-queued": "many"}], "storage": {"path": "d"}}
    path = write_config(tmp_path / "nessus-pool.toml", data)
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "$.pools[0].max-queued" in err and "Traceback" not in err


async def test_rest_custom_fields_take_mcps_cve_for_cves(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.05))
    assert d.service is not None
    done = await d.service.submit(SubmitRequest(targets=["10.0.0.1"]))
    assert (await d.service.wait_for(done.task_id, 30.0)).status == "completed"
    url = f"{d.url}/api/v1/scans/{done.task_id}/results?fields=host,cve&page_size=5"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        page = await resp.json()
    assert page["fields"] == ["host", "cves"] and page["items"]
    assert all(set(item) == {"host", "cves"} for item in page["items"])


def test_a_bad_enum_value_in_the_config_lists_the_accepted_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {
        "storage": {"path": "d"},
        "credentials": {"ssh": {"username": "u", "elevate-privileges-with": "sudoo"}},
    }
    path = write_config(tmp_path / "nessus-pool.toml", data)
    assert main(["config", "check", "--offline", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "elevate-privileges-with" in err
    accepted = [e.value for e in Escalation]
    assert f"(accepted: {', '.join(accepted)})" in err


async def test_an_enum_error_echoes_a_bounded_amount_of_the_value(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    body = {"targets": ["10.0.0.1"], "scan_type": "x" * 50_000}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{d.url}/api/v1/scans", json=body) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["field"] == "scan_type" and len(error["message"]) < 200
