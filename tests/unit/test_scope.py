"""Target scope: refused before queueing with the offending target named, the narrowest
covering pool chosen, mandatory scope for real scanners, and a re-check at launch."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nessus_pool.config import parse_config
from nessus_pool.daemon import Daemon
from nessus_pool.errors import ConfigError, ScopeError
from nessus_pool.scope import Scope
from nessus_pool.service import SubmitRequest
from nessus_pool.simulator import SimulatorCluster, SimulatorOptions, start_simulators
from tests.conftest import DaemonFactory

KEYS = {"access-key": "sim-access-key", "secret-key": "sim-secret-key"}


def test_scope_rules() -> None:
    s = Scope(
        ["10.0.0.0/8", "*.lab.example"], ["10.0.0.0/24", "secret.lab.example"], mandatory=False
    )
    assert s.why_not("10.1.2.3") is None
    assert s.why_not("10.1.0.0/16") is None
    assert s.why_not("10.1.0.1-10.1.0.9") is None
    assert "overlaps denied 10.0.0.0/24" in (s.why_not("10.0.0.0/23") or "")
    assert "outside" in (s.why_not("11.0.0.1") or "")
    assert "outside" in (s.why_not("10.255.255.255-11.0.0.1") or "")
    assert s.why_not("db.lab.example") is None
    assert "denied pattern" in (s.why_not("secret.lab.example") or "")
    assert "could not be resolved" in (s.why_not("db.other.example") or "")
    assert s.why_not("db.other.example", {"db.other.example": ["10.9.9.9"]}) is None
    assert "inside denied" in (s.why_not("db.lab.example", {"db.lab.example": ["10.0.0.7"]}) or "")
    with pytest.raises(ScopeError) as err:
        s.check(["10.1.1.1", "8.8.8.8"])
    assert err.value.field == "targets[1]" and "8.8.8.8" in str(err.value)
    assert Scope([], [], mandatory=False).why_not("8.8.8.8") is None
    assert "mandatory" in (Scope([], [], mandatory=True).why_not("8.8.8.8") or "")
    assert Scope(["10.0.0.0/16"], [], mandatory=False).breadth(["10.0.0.1"]) < s.breadth(
        ["10.0.0.1"]
    )


@given(st.ip_addresses(v=4), st.integers(8, 32), st.ip_addresses(v=4))
def test_allowed_means_inside_and_denied_always_wins(
    base: ipaddress.IPv4Address, prefix: int, addr: ipaddress.IPv4Address
) -> None:
    net = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    assert (Scope([str(net)], [], mandatory=True).why_not(str(addr)) is None) == (addr in net)
    assert Scope([str(net)], [str(addr)], mandatory=True).why_not(str(addr)) is not None


def test_require_scope_needs_allowed_targets_for_real_scanners() -> None:
    text = """
[security]
require-scope = true
[[pools]]
name = "dmz"
[[pools.scanners]]
id = "d1"
url = "https://d1.example:8834"
access-key = { env = "X" }
secret-key = { env = "Y" }
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.path == "$.pools[0].allowed-targets"
    ok = parse_config(
        text.replace('name = "dmz"', 'name = "dmz"\nallowed-targets = ["10.0.0.0/8"]')
    )
    assert ok.config.security.require_scope


@pytest.fixture
async def sims() -> AsyncIterator[SimulatorCluster]:
    cluster = await start_simulators(2, options=SimulatorOptions(scan_seconds=0.2, seed=9))
    yield cluster
    await cluster.close()


def scoped(tmp_path: Path, sims: SimulatorCluster) -> dict[str, Any]:
    s = sims.scanners
    return {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "data")},
        "security": {"require-scope": True, "max-addresses-per-task": 4096},
        "pools": [
            {
                "name": "wide",
                "poll-interval-s": 0.05,
                "allowed-targets": ["10.0.0.0/8"],
                "denied-targets": ["10.0.0.0/24"],
                "scanners": [{"id": "w1", "url": s[0].url, **KEYS}],
            },
            {
                "name": "narrow",
                "poll-interval-s": 0.05,
                "allowed-targets": ["10.1.0.0/16", "*.lab.example"],
                "scanners": [{"id": "n1", "url": s[1].url, **KEYS}],
            },
        ],
    }


async def test_api_refuses_out_of_scope_and_picks_narrowest_pool(
    tmp_path: Path, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(scoped(tmp_path, sims))
    svc = d.service
    assert svc is not None and d.engine is not None
    assert (await svc.submit(SubmitRequest(targets="10.1.2.3"))).pool == "narrow"
    assert (await svc.submit(SubmitRequest(targets="10.2.0.1"))).pool == "wide"
    assert (await svc.submit(SubmitRequest(targets="db.lab.example"))).pool == "narrow"
    with pytest.raises(ScopeError, match=r"10\.0\.0\.5") as err:
        await svc.submit(SubmitRequest(targets="10.1.0.1, 10.0.0.5"))
    assert "no pool may scan" in str(err.value)
    with pytest.raises(ScopeError, match="overlaps denied") as err2:
        await svc.submit(SubmitRequest(targets="10.0.0.5", pool="wide"))
    assert err2.value.field == "targets[0]"
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{d.url}/api/v1/scans", json={"targets": "192.168.1.1"}) as r,
    ):
        body = await r.json()
    assert r.status == 422
    assert body["error"]["code"] == "out_of_scope" and "192.168.1.1" in body["error"]["message"]
    queued = len(d.engine.tasks)
    assert queued == 3  # nothing half-accepted


async def test_hostnames_are_checked_again_at_launch(
    tmp_path: Path, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(scoped(tmp_path, sims))
    svc = d.service
    assert svc is not None
    answers = {"app.corp.example": ["10.1.0.5"]}

    async def fake_resolver(hosts: list[str]) -> dict[str, list[str]]:
        return {h: answers.get(h, []) for h in hosts}

    svc.resolver = fake_resolver
    svc.set_scanner_enabled("n1", False)
    sub = await svc.submit(SubmitRequest(targets="app.corp.example", pool="narrow"))
    answers["app.corp.example"] = ["192.0.2.10"]  # DNS changed before launch
    svc.set_scanner_enabled("n1", True)
    view = await svc.wait_for(sub.task_id, 30)
    assert view.status == "failed" and view.reason == "out_of_scope_at_launch"
    assert "192.0.2.10" in (view.error or "")
    assert sims.scanners[1].stats().created == 0


def _v6_forms(addr: ipaddress.IPv4Address) -> list[str]:
    """IPv6 spellings of one IPv4 address: mapped, compatible, NAT64 (well-known prefix and
    the local-use /48 in each RFC 6052 layout), 6to4 and Teredo (client, obfuscated)."""
    v4 = int(addr)
    hi16, lo16 = v4 >> 16, v4 & 0xFFFF
    local = int(ipaddress.IPv6Address("64:ff9b:1::"))
    return [
        f"::ffff:{addr}",
        f"::{addr}",
        f"64:ff9b::{addr}",
        str(ipaddress.IPv6Address(local | hi16 << 64 | lo16 << 40)),  # /48 layout
        str(ipaddress.IPv6Address(local | (v4 >> 24) << 64 | (v4 & 0xFFFFFF) << 32)),  # /56
        str(ipaddress.IPv6Address(local | v4 << 24)),  # /64
        str(ipaddress.IPv6Address(local | v4)),  # /96
        str(ipaddress.IPv6Address(0x2002 << 112 | v4 << 80 | 1)),
        str(ipaddress.IPv6Address(0x20010000 << 96 | (v4 ^ 0xFFFFFFFF))),
    ]


@given(st.ip_addresses(v=4), st.integers(8, 32))
def test_ipv6_spellings_of_a_denied_ipv4_address_are_denied(
    addr: ipaddress.IPv4Address, prefix: int
) -> None:
    denied = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    scope = Scope(["::/0", "0.0.0.0/0"], [str(denied)], mandatory=True)
    for form in _v6_forms(addr):
        assert "overlaps denied" in (scope.why_not(form) or ""), form
        # the same form as a one-address CIDR, a range, and a resolved hostname's answer
        assert scope.why_not(f"{form}/128") is not None, form
        assert scope.why_not(f"{form}-{form}") is not None, form
        assert scope.why_not("h.example", {"h.example": [form]}) is not None, form
    # a denied network written in IPv6 denies the plain IPv4 address too
    v6_denied = f"::ffff:{denied.network_address}/{96 + prefix}"
    assert Scope(["0.0.0.0/0"], [v6_denied], mandatory=True).why_not(str(addr)) is not None


@given(st.ip_addresses(v=4), st.integers(8, 32), st.ip_addresses(v=4))
def test_ipv6_spellings_of_an_allowed_ipv4_address_are_allowed(
    base: ipaddress.IPv4Address, prefix: int, addr: ipaddress.IPv4Address
) -> None:
    net = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    scope = Scope([str(net)], [], mandatory=True)
    for form in (f"::ffff:{addr}", f"::{addr}", f"64:ff9b::{addr}"):
        assert (scope.why_not(form) is None) == (addr in net), form
    # a CIDR written in IPv6 is held only when its IPv4 span is
    assert (scope.why_not(f"::ffff:{net.network_address}/{96 + prefix}") is None) is True
    # forms whose IPv4 address is uncertain are never allowed by an IPv4 entry
    assert scope.why_not(str(ipaddress.IPv6Address(0x2002 << 112 | int(addr) << 80))) is not None


def test_ipv6_ranges_through_embedding_prefixes_are_checked() -> None:
    scope = Scope(["::/0", "0.0.0.0/0"], ["10.66.0.0/16"], mandatory=True)
    assert scope.why_not("::ffff:10.65.255.255-::ffff:10.66.0.1") is not None
    assert scope.why_not("::ffff:10.65.0.0/112") is None
    assert scope.why_not("::ffff:10.64.0.0/110") is not None  # 10.64.0.0-10.67.255.255
    assert scope.why_not("64:ff9b::/64") is not None  # holds all of the NAT64 /96
    assert scope.why_not("2002::/16") is not None  # 6to4 of every IPv4 address
    assert scope.why_not("2001:db8::/32") is None  # documentation prefix: embeds nothing
    assert scope.why_not("::ffff:a42:101") == (
        "target ::ffff:a42:101 (IPv4 10.66.1.1) overlaps denied 10.66.0.0/16"
    )
