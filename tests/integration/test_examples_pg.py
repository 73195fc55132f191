"""The PostgreSQL examples stay true to the code: the config validates, and the password
it references is loaded by the systemd drop-in under the same name."""

from __future__ import annotations

import re
from pathlib import Path

from nessus_pool.config import SecretSource, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_postgresql_example_validates_and_its_drop_in_loads_its_password() -> None:
    cfg = parse_config((EXAMPLES / "nessus-pool.postgresql.toml").read_text()).config
    assert cfg.storage.url is not None and cfg.storage.url.startswith("postgresql://")
    assert isinstance(cfg.storage.password, SecretSource)
    drop_in = (EXAMPLES / "nessus-pool.service.d" / "postgresql.conf").read_text()
    loaded = set(re.findall(r"^LoadCredential=([^:]+):", drop_in, re.M))
    assert cfg.storage.password.file in loaded
    # the migrate command the drop-in shows names this config's database
    assert f"--to {cfg.storage.url}" in drop_in
