"""The [storage] section: PostgreSQL URL and its password as a secret, refused clearly when
wrong, never echoing the password."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from nessus_pool.config import SecretSource, parse_config, preflight
from nessus_pool.errors import ConfigError


def _cfg(tmp_path: Path, **storage: object) -> str:
    return tomli_w.dumps({"storage": {"path": str(tmp_path / "data"), **storage}})


def test_a_postgresql_url_with_a_password_secret_is_taken(tmp_path: Path) -> None:
    cfg = parse_config(
        _cfg(tmp_path, url="postgresql://np@127.0.0.1:5432/np", password={"env": "NP_PG_PW"})
    ).config
    assert cfg.storage.url == "postgresql://np@127.0.0.1:5432/np"
    assert cfg.storage.password == SecretSource(env="NP_PG_PW")


@pytest.mark.parametrize(
    ("storage", "at", "says"),
    [
        ({"url": "postgresql://np:s3cr3t-pw@db:5432/np"}, "$.storage.url", "holds a password"),
        ({"url": "mysql://np@db/np"}, "$.storage.url", "not a PostgreSQL URL"),
        ({"url": "postgresql:///np"}, "$.storage.url", "names no host"),
        ({"password": {"env": "X"}}, "$.storage.password", "needs storage.url"),
        (
            {"url": "postgresql://np@db/np", "password": {"env": "A", "file": "/b"}},
            "$.storage.password",
            "exactly one of env or file",
        ),
    ],
)
def test_bad_storage_settings_name_the_field(
    tmp_path: Path, storage: dict[str, object], at: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        parse_config(_cfg(tmp_path, **storage))
    assert info.value.path == at
    assert "s3cr3t-pw" not in str(info.value)


def test_an_unset_password_variable_stops_the_start_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NP_PG_PW_UNSET", raising=False)
    cfg = parse_config(
        _cfg(tmp_path, url="postgresql://np@db/np", password={"env": "NP_PG_PW_UNSET"})
    ).config
    with pytest.raises(ConfigError, match="NP_PG_PW_UNSET") as info:
        preflight(cfg)
    assert "storage.password" in str(info.value)
