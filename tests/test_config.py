"""Config parsing and validation: every error names the path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from nessus_pool.cli import main
from nessus_pool.config import diff, load_config, parse_config, resolve_secret
from nessus_pool.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

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
    from nessus_pool.config import SecretSource

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
