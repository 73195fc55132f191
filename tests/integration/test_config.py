"""Config parsing and validation: every error names the path and the fix."""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.cli import main
from nessus_pool.config import (
    SecretSource,
    diff,
    load_config,
    parse_config,
    preflight,
    render_starter_config,
    resolve_secret,
)
from nessus_pool.daemon import Daemon
from nessus_pool.errors import ConfigError
from tests.conftest import DaemonFactory, sim_config, write_config

REPO = Path(__file__).resolve().parents[2]

SCANNER = """
[[pools]]
name = "lan"
[[pools.scanners]]
id = "lan-1"
url = "https://n1.example:8834"
access-key = { env = "NP_TEST_AK" }
secret-key = { env = "NP_TEST_SK" }
max-concurrent-scans = 2
"""


def test_shipped_config_runs_the_simulator_without_warnings() -> None:
    loaded = load_config(REPO / "nessus-pool.toml")
    assert loaded.warnings == []
    cfg = loaded.config
    assert cfg.simulator is not None and cfg.simulator.pool == "lan"
    assert [p.name for p in cfg.pools] == ["lan"]


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        (
            SCANNER.replace("max-concurrent-scans = 2", "max-concurrent-scans = 0"),
            "$.pools[0].scanners[0].max-concurrent-scans",
            "1 or more",
        ),
        (SCANNER + "\nbogus = 1\n", "$.pools[0].scanners[0]", "unknown field"),
        (
            SCANNER.replace('url = "https://n1.example:8834"', 'url = "ftp://x"'),
            "$.pools[0].scanners[0].url",
            "not an http(s) URL",
        ),
        (
            SCANNER + SCANNER.replace('name = "lan"', 'name = "dmz"'),
            "$.pools[1].scanners[0].id",
            "must be unique",
        ),
        ('[server]\nlisten = "0.0.0.0:8835"\n', "$.server.admin-tokens", "not loopback"),
        (
            SCANNER.replace('secret-key = { env = "NP_TEST_SK" }', ""),
            "$.pools[0].scanners[0]",
            "set both access-key and secret-key",
        ),
    ],
)
def test_errors_name_path_and_fix(text: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.path == path
    assert words in str(err.value)


def test_plain_secret_warns_and_reference_resolves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain = SCANNER.replace('{ env = "NP_TEST_AK" }', '"plainkey"')
    loaded = parse_config(plain)
    assert any("access-key is a plain string" in w for w in loaded.warnings)
    monkeypatch.setenv("NP_TEST_SK", "s3cr3t")
    sc = loaded.config.pools[0].scanners[0]
    assert resolve_secret(sc.secret_key, "x") == "s3cr3t"
    secret_file = tmp_path / "key"
    secret_file.write_text("from-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_secret(SecretSource(file="key"), "x") == "from-file"
    monkeypatch.delenv("NP_TEST_SK")
    with pytest.raises(ConfigError, match="NP_TEST_SK is not set") as err:
        resolve_secret(sc.secret_key, "$.pools[0].scanners[0].secret-key")
    assert "s3cr3t" not in str(err.value)


def test_diff_reports_changes() -> None:
    old = parse_config(SCANNER).config
    new = parse_config(
        SCANNER.replace("max-concurrent-scans = 2", "max-concurrent-scans = 4")
        + SCANNER.replace('name = "lan"', 'name = "dmz"').replace("lan-1", "dmz-1")
        + '[server]\nlisten = "127.0.0.1:9999"\n'
    ).config
    d = diff(old, new)
    assert d.pools_added == ["dmz"]
    assert d.scanners_added == ["dmz-1"]
    assert d.scanners_changed == ["lan-1"]
    assert d.restart_required == ["server.listen"]
    assert diff(old, old).empty


def test_config_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--config", str(REPO / "nessus-pool.toml")]) == 0
    one = tmp_path / "one.toml"
    one.write_text(SCANNER)
    assert main(["config", "check", "--offline", "--config", str(one)]) == 0
    assert "ok (1 pool, 1 scanner; " in capsys.readouterr().out  # plurals (#11 item 13)
    bad = tmp_path / "bad.toml"
    bad.write_text(SCANNER.replace("max-concurrent-scans = 2", "max-concurrent-scans = -1"))
    assert main(["config", "check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "$.pools[0].scanners[0].max-concurrent-scans" in err
    assert main(["config", "check", "--config", str(tmp_path / "missing.toml")]) == 2
    out = tmp_path / "new.toml"
    assert main(["config", "init", "--output", str(out)]) == 0
    assert load_config(out).config.simulator is not None
    assert main(["config", "init", "--output", str(out)]) == 2


# --- #11 item 1: an unresolvable credential secret is known at start, not at dispatch -----------

LAB_VAR = "NP_TEST_LAB_PASSWORD"
LAB = {"lab": {"username": "audit", "password": {"env": LAB_VAR}}}


async def submit_lab(d: Daemon) -> tuple[int, dict[str, Any]]:
    body = {"targets": "10.0.0.5", "scan_type": "authenticated", "credential": "lab"}
    async with aiohttp.ClientSession() as http, http.post(f"{d.url}/api/v1/scans", json=body) as r:
        return r.status, await r.json()


async def test_unset_credential_variable_warns_at_start_and_refuses_submit(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv(LAB_VAR, raising=False)
    caplog.set_level(logging.INFO, logger="nessus_pool")
    d: Daemon = await start_daemon(sim_config(tmp_path, credentials=LAB))
    [warning] = [r for r in caplog.records if getattr(r, "event", "") == "credential_unavailable"]
    assert warning.levelno == logging.WARNING
    assert (warning.__dict__["credential"], warning.__dict__["variable"]) == ("lab", LAB_VAR)
    assert LAB_VAR in warning.getMessage()
    status, body = await submit_lab(d)
    assert status == 400, body
    assert body["error"]["field"] == "credential"
    assert "'lab'" in body["error"]["message"] and LAB_VAR in body["error"]["message"]
    # set later (a secret file can appear at any time; here the variable): accepted at once
    monkeypatch.setenv(LAB_VAR, "audit")
    status, body = await submit_lab(d)
    assert status == 202, body


def test_config_check_names_the_unset_credential_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NESSUS_POOL_LAB_PASSWORD", raising=False)
    shipped = tmp_path / "nessus-pool.toml"
    shipped.write_text((REPO / "nessus-pool.toml").read_text(encoding="utf-8"))
    assert main(["config", "check", "--config", str(shipped)]) == 0
    err = capsys.readouterr().err
    assert "credential set 'lab' cannot be used" in err
    assert "NESSUS_POOL_LAB_PASSWORD is not set" in err
    monkeypatch.setenv("NESSUS_POOL_LAB_PASSWORD", "audit")
    assert main(["config", "check", "--config", str(shipped)]) == 0
    assert "warning" not in capsys.readouterr().err


# --- #11 item 2: `config check` runs what `serve` runs ------------------------------------------


def broken_configs(tmp_path: Path) -> dict[str, dict[str, Any]]:
    scanner = {
        "id": "lan-1",
        "url": "https://n1.example:8834",
        "access-key": {"file": str(tmp_path / "missing-access-key")},
        "secret-key": {"env": "NP_TEST_SK"},
    }
    base = sim_config(tmp_path)
    return {
        "missing secret file": {
            **base,
            "pools": [{"name": "lan", "scanners": [scanner]}],
        },
        "missing token variable": {
            **base,
            "server": {"listen": "127.0.0.1:0", "admin-tokens": [{"env": "NP_TEST_NO_TOKEN"}]},
        },
        "unreadable ca-file": {
            **base,
            "pools": [
                {
                    "name": "lan",
                    "scanners": [
                        {
                            **scanner,
                            "access-key": {"env": "NP_TEST_SK"},
                            "ca-file": str(tmp_path / "no-ca.pem"),
                        }
                    ],
                }
            ],
        },
        "storage under a file": {
            **base,
            "storage": {"path": str(tmp_path / "a-file" / "data")},
        },
    }


@pytest.mark.parametrize(
    "case",
    ["missing secret file", "missing token variable", "unreadable ca-file", "storage under a file"],
)
async def test_config_check_refuses_what_serve_refuses(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NP_TEST_SK", "sk")
    monkeypatch.delenv("NP_TEST_NO_TOKEN", raising=False)
    (tmp_path / "a-file").write_text("not a folder")
    path = write_config(tmp_path / "np.toml", broken_configs(tmp_path)[case])
    assert main(["config", "check", "--config", str(path)]) == 2
    check_error = capsys.readouterr().err
    # serve: the same file, the same error, before anything is created
    d = Daemon(load_config(path), config_path=str(path))
    with pytest.raises(ConfigError) as err:
        await d.start()
    assert str(err.value) in check_error
    assert not (tmp_path / "data").exists()
    # --offline checks the file alone
    assert main(["config", "check", "--offline", "--config", str(path)]) == 0


def test_prod_example_fails_check_without_its_secrets_and_passes_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # empty: no LoadCredential yet
    monkeypatch.delenv("NESSUS_LAN2_ACCESS_KEY", raising=False)
    prod = str(REPO / "examples" / "nessus-pool.prod.toml")
    assert main(["config", "check", "--config", prod]) == 2
    err = capsys.readouterr().err
    assert "at `$.server.admin-tokens[0]`" in err
    assert "NESSUS_LAN2_ACCESS_KEY is not set" in err
    assert main(["config", "check", "--offline", "--config", prod]) == 0


# --- #11 item 3: relative paths are relative to the config file ---------------------------------


async def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "sk").write_text("secret-from-file\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    data = sim_config(tmp_path)
    data["storage"] = {"path": "data"}
    data["credentials"] = {"lab": {"username": "audit", "password": {"file": "sk"}}}
    path = write_config(etc / "np.toml", data)
    loaded = load_config(os.path.relpath(path))
    assert loaded.config.storage.path == str(etc / "data")
    cred = loaded.config.credentials["lab"]
    assert resolve_secret(cred.password) == "secret-from-file"
    assert preflight(loaded.config) == []
    caplog.set_level(logging.INFO, logger="nessus_pool")
    d = Daemon(loaded, config_path=str(path))
    await d.start()
    try:
        assert (etc / "data" / "nessus-pool.db").exists()
        assert not (elsewhere / "data").exists()
        [opened] = [r for r in caplog.records if getattr(r, "event", "") == "storage_opened"]
        assert opened.__dict__["path"] == str(etc / "data")
    finally:
        await d.stop()
    # under systemd a relative secret file is a LoadCredential= name, not a path
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cred = load_config(path).config.credentials["lab"]
    assert isinstance(cred.password, SecretSource) and cred.password.file == "sk"


def test_absolute_scanner_paths_stay_and_ca_file_is_made_absolute(tmp_path: Path) -> None:
    text = SCANNER + 'ca-file = "ca/lan.pem"\n[storage]\npath = "/var/lib/np"\n'
    cfg = parse_config(text, "x", base_dir=tmp_path).config
    assert cfg.pools[0].scanners[0].ca_file == str(tmp_path / "ca" / "lan.pem")
    assert cfg.storage.path == "/var/lib/np"


# --- #11 item 4: `config init` writes the shipped file -------------------------------------------


def test_config_init_writes_the_shipped_commented_file(tmp_path: Path) -> None:
    shipped = (REPO / "nessus-pool.toml").read_text(encoding="utf-8")
    assert render_starter_config() == shipped
    out = tmp_path / "new.toml"
    assert main(["config", "init", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == shipped
    assert "# Named SSH credential sets" in shipped  # the comments are kept
    assert "NESSUS_POOL_LAB_PASSWORD" in out.read_text(encoding="utf-8")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "default-config.toml" in pyproject["tool"]["setuptools"]["package-data"]["nessus_pool"]


async def test_reload_runs_the_same_checks(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LAB_VAR, "audit")
    monkeypatch.setenv("NP_TEST_SK", "sk")
    data = sim_config(tmp_path, credentials=LAB)
    d: Daemon = await start_daemon(data)
    monkeypatch.delenv(LAB_VAR)
    outcome = await d.reload()
    assert outcome.applied
    assert any(LAB_VAR in w for w in outcome.warnings), outcome.warnings
    broken = broken_configs(tmp_path)["unreadable ca-file"]
    write_config(Path(str(d.config_path)), {**broken, "credentials": LAB})
    outcome = await d.reload()
    assert not outcome.applied
    assert "no-ca.pem" in outcome.message and "$.pools[0].scanners[0].ca-file" in outcome.message


async def test_mcp_authenticated_scan_with_unusable_credential_is_a_tool_error(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_mcp_http import Mcp

    monkeypatch.delenv(LAB_VAR, raising=False)
    d: Daemon = await start_daemon(sim_config(tmp_path, credentials=LAB))
    call = {"name": "run_authenticated_scan", "arguments": {"targets": "10.0.0.5",
                                                            "credential": "lab"}}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        status, _, body = await Mcp(http, f"{d.url}/mcp").modern(
            "tools/call", call, **{"Mcp-Name": "run_authenticated_scan"}
        )
    assert status == 200 and body["result"]["isError"] is True, body
    text = body["result"]["content"][0]["text"]
    assert "'lab'" in text and LAB_VAR in text
