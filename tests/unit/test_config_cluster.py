"""The [cluster] section: PostgreSQL only, a heartbeat shorter than the lease, zones that
are scanner ids or globs; the lease share each daemon takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from nessus_pool.config import diff, parse_config
from nessus_pool.engine.cluster import default_daemon_id, fair_share, in_zone, pool_hashes
from nessus_pool.errors import ConfigError

PG = {"url": "postgresql://np@127.0.0.1:5432/np"}


def _cfg(tmp_path: Path, cluster: dict[str, Any], **extra: Any) -> str:
    storage = {"path": str(tmp_path / "data"), **extra.pop("storage", PG)}
    return tomli_w.dumps({"storage": storage, "cluster": cluster, **extra})


def test_cluster_defaults(tmp_path: Path) -> None:
    cfg = parse_config(_cfg(tmp_path, {})).config
    assert cfg.cluster is not None
    assert (cfg.cluster.daemon_id, cfg.cluster.lease_s, cfg.cluster.zone) == (None, 15.0, None)
    assert cfg.cluster.heartbeat_period_s == 5.0
    set_ = parse_config(_cfg(tmp_path, {"lease-s": 9, "heartbeat-s": 2, "zone": ["dmz-*"]}))
    assert set_.config.cluster is not None and set_.config.cluster.heartbeat_period_s == 2


@pytest.mark.parametrize(
    ("cluster", "extra", "at", "says"),
    [
        ({}, {"storage": {}}, "$.cluster", "PostgreSQL only"),
        ({"lease-s": 10, "heartbeat-s": 10}, {}, "$.cluster.heartbeat-s", "shorter than"),
        ({"lease-s": 0}, {}, "$.cluster.lease-s", ">= 1.0"),
        # an absurd lease overflowed the BIGINT expiry: every heartbeat failed
        ({"lease-s": 1e308}, {}, "$.cluster.lease-s", "<= 3600.0"),
        ({"lease-s": 10, "heartbeat-s": 0.001}, {}, "$.cluster.heartbeat-s", ">= 0.2"),
        ({"zone": ["dmz 1"]}, {}, "$.cluster.zone[0]", "not a scanner id or glob"),
        ({"daemon-id": "bad id!"}, {}, "$.cluster.daemon-id", ""),
        ({"zones": ["x"]}, {}, "$.cluster", "unknown field"),
        ({}, {"simulator": {}}, "$.simulator", "embedded simulator"),
    ],
)
def test_bad_cluster_settings_are_refused_naming_the_field(
    tmp_path: Path, cluster: dict[str, Any], extra: dict[str, Any], at: str, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_cfg(tmp_path, cluster, **extra))
    assert at in str(err.value) and says in str(err.value)


def test_a_cluster_change_needs_a_restart(tmp_path: Path) -> None:
    old = parse_config(_cfg(tmp_path, {})).config
    new = parse_config(_cfg(tmp_path, {"lease-s": 30})).config
    assert "cluster" in diff(old, new).restart_required


def test_the_default_daemon_id_is_stable_and_differs_per_storage_folder() -> None:
    one = default_daemon_id("/var/lib/nessus-pool")
    assert one == default_daemon_id("/var/lib/nessus-pool")
    assert one != default_daemon_id("/var/lib/nessus-pool-2")
    parse_config(tomli_w.dumps({"storage": PG, "cluster": {"daemon-id": one}}))


def test_zones_and_fair_shares() -> None:
    assert in_zone(None, "lan-1") and in_zone(["lan-*"], "lan-1")
    assert not in_zone(["dmz-*"], "lan-1") and not in_zone([], "lan-1")
    six = [f"s{i}" for i in range(6)]
    assert fair_share(six, [None]) == 6
    assert fair_share(six, [None, None, None]) == 2
    assert fair_share(six, [None, None, None, None]) == 2  # ceil(1.5): every scanner owned
    # (this daemon's own zone is among the live ones) a scanner only this daemon may own
    # counts whole: s0 is shared (1/2), s1..s5 are ours alone: ceil(5.5)
    assert fair_share(six, [None, ["s0"]]) == 6
    assert fair_share(six, [None, None, ["s0"]]) == 3  # 1/3 + 5/2 -> ceil(2.83)


def test_pool_hashes_see_definitions_but_no_secret_value(tmp_path: Path) -> None:
    def pools(secret: str, attempts: int) -> Any:
        scanner = {"id": "s1", "url": "https://s1:8834", "access-key": "a" * 32}
        scanner["secret-key"] = secret
        text = _cfg(
            tmp_path, {}, pools=[{"name": "lan", "max-attempts": attempts, "scanners": [scanner]}]
        )
        return parse_config(text).config.pools

    base = pool_hashes(pools("s" * 32, 3))
    # an inline secret is hashed as a mark: its value cannot be tested against the hash
    assert pool_hashes(pools("t" * 32, 3)) == base
    assert pool_hashes(pools("s" * 32, 4)) != base
