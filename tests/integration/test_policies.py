"""Saved Nessus policies end to end: the real daemon, two simulated scanners (HTTPS) whose
policies differ, the admin API. A policy is resolved through GET /policies on the chosen
scanner; a task goes only to scanners that have its policy; a policy nobody has is refused
at submit, naming each scanner and what it has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from nessus_pool.simulator import SimulatedScanner
from nessus_pool.simulator.export import compliance_checks
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_mcp_agent import Session
from tests.integration.test_mcp_http import Mcp
from tests.integration.test_ops_cli import cli


async def _daemon(start_daemon: DaemonFactory, tmp_path: Path, **pool: Any) -> Daemon:
    data = sim_config(tmp_path, scanners=2, cap=2, scan_seconds=0.3)
    data["pools"][0].update(pool)
    d: Daemon = await start_daemon(data)
    assert d.sim_cluster is not None and d.engine is not None
    sim2 = _sim(d, "sim-2")
    # sim-2 lost the CIS audit and has a policy of its own; sim-1 keeps the defaults
    cis = next(p.id for p in sim2.policies.policies.values() if p.name == "Linux CIS audit")
    sim2.policies.delete(cis)
    sim2.policies.add("Team ports", "advanced", "", sim2.clock.now_ms())
    for handle in d.engine.pools["lan"].scanners.values():
        await handle.probe()
    return d


def _sim(d: Daemon, name: str) -> SimulatedScanner:
    assert d.sim_cluster is not None
    found: SimulatedScanner = next(s for s in d.sim_cluster.scanners if s.name == name)
    return found


async def _submit(http: aiohttp.ClientSession, d: Daemon, body: dict[str, Any]) -> Any:
    async with http.post(f"{d.url}/api/v1/scans", json=body) as r:
        return r.status, await r.json()


async def test_policy_goes_only_to_scanners_that_have_it(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _daemon(start_daemon, tmp_path)
    assert d.service is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{d.url}/api/v1/policies") as r:
            assert r.status == 200
            listed = await r.json()
        assert listed == {
            "pools": [
                {
                    "pool": "lan",
                    "default_policy": None,
                    "scanners": [
                        {"scanner": "sim-1", "policies": ["Linux CIS audit", "Tuned TCP ports"]},
                        {"scanner": "sim-2", "policies": ["Team ports", "Tuned TCP ports"]},
                    ],
                }
            ]
        }
        ids = []
        for i in range(4):  # 4 tasks, 2 slots per scanner: the free sim-1 must stay unused
            status, body = await _submit(
                http, d, {"targets": f"192.0.2.{i + 1}", "policy": "Team ports"}
            )
            assert status == 202, body
            ids.append(body["task_id"])
    for task_id in ids:
        done = await d.service.wait_for(task_id, 30)
        assert (done.status, done.scanner) == ("completed", "sim-2")
    sim2_scans = _sim(d, "sim-2").scans.values()
    assert sorted(s.policy for s in sim2_scans) == ["Team ports"] * 4
    assert _sim(d, "sim-1").stats().created == 0


async def test_unknown_policy_is_refused_naming_what_each_scanner_has(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _daemon(start_daemon, tmp_path)
    async with aiohttp.ClientSession() as http:
        status, body = await _submit(http, d, {"targets": "192.0.2.1", "policy": "PCI quarterly"})
        assert status == 400
        assert body["error"]["field"] == "policy"
        assert body["error"]["message"] == (
            "no scanner of pool 'lan' has the saved policy 'PCI quarterly': "
            "sim-1 has 'Linux CIS audit', 'Tuned TCP ports'; "
            "sim-2 has 'Team ports', 'Tuned TCP ports'"
        )
        status, body = await _submit(
            http, d, {"targets": "192.0.2.1", "policy": "Team ports", "scanner": "sim-1"}
        )
        assert status == 400 and body["error"]["field"] == "policy"
        assert (
            "scanner 'sim-1' does not have the saved policy 'Team ports'"
            in (body["error"]["message"])
        )
        status, body = await _submit(
            http, d, {"targets": "192.0.2.1", "policy": "Team ports", "template": "basic"}
        )
        assert status == 400 and body["error"]["field"] == "policy"
        for bad in ("", "   ", "x" * 201, 7):
            status, body = await _submit(http, d, {"targets": "192.0.2.1", "policy": bad})
            assert status == 400, bad
            assert body["error"]["field"] in ("policy", "$.policy"), body
    assert _sim(d, "sim-1").stats().created + _sim(d, "sim-2").stats().created == 0


async def test_pool_default_policy_applies_unless_a_template_is_named(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _daemon(start_daemon, tmp_path, **{"default-policy": "Linux CIS audit"})
    assert d.service is not None
    async with aiohttp.ClientSession() as http:
        _, by_default = await _submit(http, d, {"targets": "192.0.2.1"})
        _, by_template = await _submit(http, d, {"targets": "192.0.2.2", "template": "basic"})
        async with http.get(f"{d.url}/api/v1/policies?pool=lan") as r:
            assert (await r.json())["pools"][0]["default_policy"] == "Linux CIS audit"
        async with http.get(f"{d.url}/api/v1/policies?pool=nope") as r:
            assert r.status == 404
    done = await d.service.wait_for(by_default["task_id"], 30)
    assert (done.status, done.scanner) == ("completed", "sim-1")
    assert (await d.service.wait_for(by_template["task_id"], 30)).status == "completed"
    policies = sorted(s.policy for sim in ("sim-1", "sim-2") for s in _sim(d, sim).scans.values())
    assert policies == ["Basic Network Scan", "Linux CIS audit"]


@pytest.mark.parametrize("policy", ["Linux CIS audit"])
async def test_policy_is_resolved_on_the_scanner_at_create(
    tmp_path: Path, start_daemon: DaemonFactory, policy: str
) -> None:
    # deleted on the scanner after the probe: the scan is not created from something else
    d = await _daemon(start_daemon, tmp_path)
    assert d.service is not None
    sim1 = _sim(d, "sim-1")
    sim1.policies.delete(next(p.id for p in sim1.policies.policies.values() if p.name == policy))
    async with aiohttp.ClientSession() as http:
        status, body = await _submit(http, d, {"targets": "192.0.2.9", "policy": policy})
    assert status == 202
    done = await d.service.wait_for(body["task_id"], 30)
    assert done.status == "failed"
    assert "no saved policy named 'Linux CIS audit'" in (done.error or "")
    assert sim1.stats().created == 0


async def test_mcp_list_policies_and_scan_with_a_policy(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _daemon(start_daemon, tmp_path)
    assert d.service is not None
    async with aiohttp.ClientSession() as http:
        mcp = Mcp(http, f"{d.url}/mcp")
        session = Session(mcp, await mcp.initialize())
        _, listed = await session.rpc("tools/list", {})
        tool = next(t for t in listed["result"]["tools"] if t["name"] == "list_policies")
        assert tool["annotations"] == {"readOnlyHint": True, "openWorldHint": False}
        shown = (await session.call("list_policies", {}))["structuredContent"]
        by_scanner = {s["scanner"]: s["policies"] for s in shown["pools"][0]["scanners"]}
        assert by_scanner["sim-2"] == ["Team ports", "Tuned TCP ports"]
        sub = await session.call(
            "run_untrusted_scan", {"targets": "192.0.2.40", "policy": "Team ports"}
        )
        task_id = sub["structuredContent"]["task_id"]
        refused = await session.call(
            "run_untrusted_scan", {"targets": "192.0.2.41", "policy": "PCI quarterly"}
        )
        assert refused["isError"] is True
        assert refused["structuredContent"]["field"] == "policy"
        assert "sim-1 has 'Linux CIS audit'" in refused["structuredContent"]["error"]
    done = await d.service.wait_for(task_id, 30)
    assert (done.status, done.scanner) == ("completed", "sim-2")


async def test_cli_lists_policies_and_submits_with_one(
    tmp_path: Path, start_daemon: DaemonFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    d = await _daemon(start_daemon, tmp_path, **{"default-policy": "Tuned TCP ports"})
    rc, out, err = await cli(capsys, d, "policies")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["POOL", "SCANNER", "SAVED", "POLICIES"]
    assert "sim-2" in lines[2] and "Team ports, Tuned TCP ports" in lines[2]
    assert "default policy 'Tuned TCP ports'" in err
    rc, out, err = await cli(
        capsys, d, "scan", "submit", "192.0.2.50", "--policy", "Team ports", "--wait",
        "--poll-interval", "0.05", "--wait-timeout", "60",
    )  # fmt: skip
    assert rc == 0, err
    assert _sim(d, "sim-2").stats().created == 1
    rc, out, err = await cli(capsys, d, "scan", "submit", "192.0.2.51", "--policy", "Nope")
    assert rc == 2 and "no scanner of pool 'lan' has the saved policy 'Nope'" in err


async def test_compliance_policy_results_are_summarised(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _daemon(start_daemon, tmp_path)
    assert d.service is not None
    targets = ["192.0.2.61", "192.0.2.62"]
    async with aiohttp.ClientSession() as http:
        status, body = await _submit(
            http, d, {"targets": ", ".join(targets), "policy": "Linux CIS audit"}
        )
        assert status == 202, body
        done = await d.service.wait_for(body["task_id"], 30)
        assert (done.status, done.scanner) == ("completed", "sim-1")
        async with http.get(f"{d.url}/api/v1/scans/{body['task_id']}") as r:
            summary = (await r.json())["results"]["summary"]
    seed = _sim(d, "sim-1").seed
    expected = {"passed": 0, "failed": 0, "warning": 0, "error": 0}
    for host in targets:
        for _, result in compliance_checks(host, seed=seed):
            expected[result.lower()] += 1
    assert summary["compliance"] == expected
    assert sum(expected.values()) == 16
    # a scan from a template has no compliance checks to count
    plain = await d.service.submit(SubmitRequest(targets="192.0.2.63", template="basic"))
    view = await d.service.wait_for(plain.task_id, 30)
    assert view.results is not None and view.results["summary"]["compliance"] is None


async def test_refusal_names_at_most_20_policies_per_scanner(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _daemon(start_daemon, tmp_path)
    assert d.engine is not None
    sim1 = _sim(d, "sim-1")
    for i in range(300):  # a scanner with hundreds of saved policies
        sim1.policies.add(f"p{i:03d} " + "x" * 300, "basic", "", 0)
    await d.engine.pools["lan"].scanners["sim-1"].probe()
    async with aiohttp.ClientSession() as http:
        status, body = await _submit(http, d, {"targets": "192.0.2.1", "policy": "nope"})
    message = body["error"]["message"]
    assert status == 400 and "and 282 more (see GET /api/v1/policies)" in message
    assert len(message) < 6000


async def test_waiting_reason_counts_only_scanners_with_the_policy(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _daemon(start_daemon, tmp_path)
    assert d.service is not None
    d.service.set_scanner_enabled("sim-2", False)  # the only scanner with "Team ports"
    sub = await d.service.submit(SubmitRequest(targets="192.0.2.70", policy="Team ports"))
    view = await d.service.get_task(sub.task_id)
    # sim-1 is free, but it cannot take this task: it waits for the drained sim-2
    assert (view.status, view.waiting_reason) == ("queued", "scanners_draining")
    d.service.set_scanner_enabled("sim-2", True)
    done = await d.service.wait_for(sub.task_id, 30)
    assert (done.status, done.scanner) == ("completed", "sim-2")
