"""Drop-in compatibility with the seed server (eafonin/nessus-api ``mcp-server``), checked with
the official MCP SDK against the shapes its docs/API.md documents: every documented key with
its type and meaning, statuses and lifecycle as documented, the JSON-NL of get_scan_results,
and errors shaped as the seed shaped them. Written from the documentation, not from its tests."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_mcp_sdk import text_of

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SEED_PROFILES = {
    "minimal": ["host", "plugin_id", "severity", "cve", "cvss_score", "exploit_available"],
    "summary": ["host", "plugin_id", "severity", "cve", "cvss_score", "exploit_available",
                "plugin_name", "cvss3_base_score", "synopsis"],
    "brief": ["host", "plugin_id", "severity", "cve", "cvss_score", "exploit_available",
              "plugin_name", "cvss3_base_score", "synopsis", "description", "solution"],
}  # fmt: skip


def nessus_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A pool named ``nessus``, as the seed's default pool is."""
    data = sim_config(tmp_path, scanners=1, scan_seconds=0.5, poll_s=0.05, **extra)
    data["simulator"]["pool"] = "nessus"
    data["pools"][0]["name"] = "nessus"
    return data


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, tmp_path: Path) -> Daemon:
    d: Daemon = await start_daemon(nessus_config(tmp_path))
    return d


async def call(client: Client, name: str, args: dict[str, Any]) -> Any:
    result = await client.call_tool(name, args)
    assert not result.is_error, text_of(result)
    if name == "get_scan_results":
        return text_of(result)
    assert json.loads(text_of(result)) == result.structured_content
    return result.structured_content


async def finished(client: Client, args: dict[str, Any], tool: str = "run_untrusted_scan") -> Any:
    sub = await call(client, tool, args)
    await call(client, "wait_for_scan", {"task_id": sub["task_id"], "timeout_s": 60})
    return sub, await call(client, "get_scan_status", {"task_id": sub["task_id"]})


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.strip().split("\n")]


async def test_submit_status_and_lists(daemon: Daemon) -> None:
    async with Client(f"{daemon.url}/mcp", mode="legacy") as client:
        sub, status = await finished(
            client, {"targets": "10.1.0.5", "name": "Network Discovery",
                     "description": "Weekly", "idempotency_key": "k-1"},
        )  # fmt: skip
        assert uuid.UUID(sub["trace_id"]) and sub["status"] == "queued"
        assert sub["scanner_pool"] == "nessus" and sub["scanner_instance"] == "sim-1"
        assert sub["scanner_url"].startswith("https://127.0.0.1:")
        assert type(sub["queue_position"]) is int and type(sub["estimated_wait_minutes"]) is int
        assert isinstance(sub["message"], str) and "idempotent" not in sub
        again = await call(client, "run_untrusted_scan", {
            "targets": "10.1.0.5", "name": "Network Discovery", "description": "Weekly",
            "idempotency_key": "k-1"})  # fmt: skip
        assert again["idempotent"] is True and again["task_id"] == sub["task_id"]

        assert status["trace_id"] == sub["trace_id"] and status["status"] == "completed"
        assert status["scan_type"] == "untrusted" and status["scanner_type"] == "nessus"
        assert status["targets"] == "10.1.0.5" and status["name"] == "Network Discovery"
        assert type(status["nessus_scan_id"]) is int and status["progress"] == 100
        for key in ("created_at", "started_at", "completed_at"):
            assert ISO.match(status[key]), status[key]
        assert datetime.fromisoformat(status["completed_at"]) >= datetime.fromisoformat(
            status["created_at"]
        )
        assert status["authentication_status"] == "not_applicable"
        assert status["validation_warnings"] == [] and status["error_message"] is None
        summary = status["results_summary"]
        breakdown = summary["severity_breakdown"]
        assert set(breakdown) == {"critical", "high", "medium", "low", "info"}
        assert summary["total_vulnerabilities"] == sum(breakdown.values()) > 0
        assert summary["hosts_scanned"] == 1 and type(summary["auth_plugins_found"]) is int
        assert isinstance(summary["file_size_kb"], float) and summary["file_size_kb"] > 0
        assert "troubleshooting" not in status

        listed = await call(client, "list_tasks", {"limit": 5, "status_filter": "completed"})
        entry = next(t for t in listed["tasks"] if t["task_id"] == sub["task_id"])
        assert listed["total"] == len(listed["tasks"])
        assert {k: entry[k] for k in ("trace_id", "scanner_type", "targets", "nessus_scan_id")} == {
            k: status[k] for k in ("trace_id", "scanner_type", "targets", "nessus_scan_id")
        }
        assert all(ISO.match(entry[k]) for k in ("created_at", "started_at", "completed_at"))

        scanners = await call(client, "list_scanners", {})
        assert scanners["total"] == 1 and scanners["pools"] == ["nessus"]
        s = scanners["scanners"][0]
        assert (s["scanner_type"], s["pool"], s["instance_id"], s["instance_key"]) == (
            "nessus", "nessus", "sim-1", "nessus:sim-1")  # fmt: skip
        assert s["max_concurrent_scans"] == s["available_capacity"] + s["active_scans"]
        assert isinstance(s["utilization_pct"], float) and s["enabled"] is True and s["name"]
        assert await call(client, "list_pools", {}) == {"pools": ["nessus"],
                                                        "default_pool": "nessus"}  # fmt: skip
        pool = await call(client, "get_pool_status", {})
        assert pool["pool"] == "nessus" and pool["scanner_type"] == "nessus"
        assert pool["total_scanners"] == 1 and pool["available_capacity"] == pool[
            "total_capacity"] - pool["total_active"]  # fmt: skip
        assert set(pool["scanners"][0]) >= {"instance_key", "active_scans",
            "max_concurrent_scans", "utilization_pct", "available_capacity"}  # fmt: skip
        queue = await call(client, "get_queue_status", {})
        assert queue["pool"] == "nessus" and ISO.match(queue["timestamp"])
        assert type(queue["queue_depth"]) is int and type(queue["dlq_size"]) is int

        # errors shaped as the seed shaped them
        missing = await client.call_tool("get_scan_status", {"task_id": "invalid-task-id-12345"})
        assert not missing.is_error and "not found" in json.loads(text_of(missing))["error"]
        priv = await client.call_tool("run_authenticated_scan", {
            "targets": "10.1.0.5", "name": "x", "scan_type": "authenticated_privileged",
            "ssh_username": "u", "ssh_password": "p"})  # fmt: skip
        assert priv.is_error and "elevate_privileges_with" in json.loads(text_of(priv))["error"]


async def test_results_as_the_seed_shapes_them(daemon: Daemon) -> None:
    async with Client(f"{daemon.url}/mcp", mode="legacy") as client:
        sub, status = await finished(client, {"targets": "10.1.0.5", "name": "Results"})
        tid = sub["task_id"]
        for profile, fields in SEED_PROFILES.items():
            lines = jsonl(await call(client, "get_scan_results", {
                "task_id": tid, "schema_profile": profile, "page_size": 40}))  # fmt: skip
            schema, meta, *rows, pagination = lines
            assert schema["type"] == "schema" and schema["profile"] == profile
            assert schema["fields"] == [*fields, "port"]
            assert meta == {"type": "scan_metadata", "scan_name": "Results", "task_id": tid,
                            "authentication_status": "not_applicable"}  # fmt: skip
            for row in rows:
                assert list(row) == ["type", *fields, "port"] and row["type"] == "vulnerability"
                assert row["severity"] in {"1", "2", "3", "4"} and row["plugin_id"].isdigit()
                assert isinstance(row["cve"], list)
            assert pagination == {
                "type": "pagination", "page": 1, "page_size": 40,
                "total_pages": 1, "has_next": False, "next_page": None,
            }  # fmt: skip
        full = jsonl(await call(client, "get_scan_results", {
            "task_id": tid, "schema_profile": "full", "filters": {"severity": "3"}}))  # fmt: skip
        assert full[0]["fields"] == "all" and full[0]["filters_applied"] == {"severity": "3"}
        high = status["results_summary"]["severity_breakdown"]["high"]
        assert full[0]["total_vulnerabilities"] == high == len(full) - 3
        assert all(r["severity"] == "3" and r["cvss_score"] is not None for r in full[2:-1])
        # page=0: everything, no pagination line; page_size clamped to 10..100
        every = jsonl(await call(client, "get_scan_results", {
            "task_id": tid, "page": 0, "filters": {"min_severity": "info"}}))  # fmt: skip
        assert every[0]["total_pages"] == 1 and every[0]["truncated"] is False
        assert len(every) - 2 == status["results_summary"]["total_vulnerabilities"]
        assert every[-1]["type"] == "vulnerability"
        # without page_size the page is smaller than the seed's 40 (context economy)
        default = jsonl(await call(client, "get_scan_results", {"task_id": tid}))
        assert default[-1]["page_size"] == 3 == len(default) - 3
        assert default[0]["total_vulnerabilities"] == len(lines) - 3
        small = jsonl(await call(client, "get_scan_results", {
            "task_id": tid, "page_size": 3, "filters": {"min_severity": 0}}))  # fmt: skip
        assert small[-1]["page_size"] == 10 and len(small) - 3 == 10 and small[-1]["has_next"]
        big = jsonl(await call(client, "get_scan_results", {"task_id": tid, "page_size": 1000}))
        assert big[-1]["page_size"] == 100
        cvss = jsonl(await call(client, "get_scan_results", {
            "task_id": tid, "schema_profile": "minimal",
            "filters": {"cvss_score": ">7.5"}}))  # fmt: skip
        assert cvss[2:-1] and all(r["cvss_score"] > 7.5 for r in cvss[2:-1])
        # an unknown task: the seed's JSON text as the (string) result, not a failure
        gone = await client.call_tool("get_scan_results", {"task_id": "no-such-task"})
        assert not gone.is_error and gone.structured_content == {"result": text_of(gone)}
        assert "not found" in json.loads(text_of(gone))["error"]
        # informational items the same filters would match are counted, not all of them
        host = jsonl(await call(client, "get_scan_results", {
            "task_id": tid, "filters": {"port": 443}}))  # fmt: skip
        info_443 = jsonl(await call(client, "get_scan_results", {
            "task_id": tid, "page": 0, "filters": {"port": 443, "severity": 0}}))  # fmt: skip
        assert host[0]["informational_excluded"] == len(info_443) - 2
        both = await client.call_tool("get_scan_results", {
            "task_id": tid, "schema_profile": "minimal", "custom_fields": ["host"]})  # fmt: skip
        assert both.is_error and "custom_fields" in json.loads(text_of(both))["error"]


async def test_failed_login_is_completed_with_failed_authentication(daemon: Daemon) -> None:
    async with Client(f"{daemon.url}/mcp", mode="legacy") as client:
        _, status = await finished(
            client,
            {"targets": "10.1.0.7", "name": "Bad creds", "scan_type": "authenticated",
             "ssh_username": "audit", "ssh_password": "wrong"},
            tool="run_authenticated_scan",
        )  # fmt: skip
        assert status["status"] == "completed" and status["authentication_status"] == "failed"
        assert status["detailed_status"] == "failed" and status["progress"] == 100
        trouble = status["troubleshooting"]
        assert isinstance(trouble["likely_cause"], str) and len(trouble["next_steps"]) >= 3
        assert status["results_summary"]["hosts_scanned"] == 1


async def test_timed_out_scan_is_timeout(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    data = nessus_config(tmp_path)
    data["simulator"]["scan-seconds"] = 5
    data["pools"][0]["max-scan-duration-s"] = 0.3
    d: Daemon = await start_daemon(data)
    async with Client(f"{d.url}/mcp", mode="legacy") as client:
        _, status = await finished(client, {"targets": "10.1.0.5", "name": "slow"})
        assert status["status"] == "timeout" and status["detailed_status"] == "timed_out"
        listed = await call(client, "list_tasks", {"status_filter": "timeout"})
        assert [t["status"] for t in listed["tasks"]] == ["timeout"]


async def test_a_queued_scan_says_why_it_waits(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    """Our addition beside the seed's keys: a queued scan's status and its pool's status carry
    ``waiting_reason`` (here the one scanner's one slot is taken)."""
    data = nessus_config(tmp_path)
    data["simulator"]["scan-seconds"] = 30
    data["simulator"]["max-concurrent-scans"] = 1
    d: Daemon = await start_daemon(data)
    async with Client(f"{d.url}/mcp", mode="legacy") as client:
        first = await call(client, "run_untrusted_scan", {"targets": "10.1.0.5", "name": "a"})
        second = await call(client, "run_untrusted_scan", {"targets": "10.1.0.6", "name": "b"})
        for _ in range(200):
            running = await call(client, "get_scan_status", {"task_id": first["task_id"]})
            if running["status"] == "running":
                break
            await asyncio.sleep(0.05)  # bounded poll for the condition, 10 s at most
        assert running["status"] == "running" and "waiting_reason" not in running
        queued = await call(client, "get_scan_status", {"task_id": second["task_id"]})
        assert queued["status"] == "queued"
        assert queued["waiting_reason"] == "capacity_full"
        pool = await call(client, "get_pool_status", {"scanner_pool": "nessus"})
        assert pool["waiting_reason"] == "capacity_full"
