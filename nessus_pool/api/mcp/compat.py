"""The seed server's result shapes (eafonin/nessus-api ``mcp-server``, its docs/API.md), built
from the service's views so that its clients can switch to us without edits.

Rules, applied to every tool result: every key the seed documents is present with its type and
meaning; our own keys stay beside them (a superset); where one of ours meant something else
under the same name, the seed's meaning keeps the name and ours moves (``status`` is the seed's
five-word vocabulary, our richer one is ``detailed_status``; ``severity`` is the seed's digit
string, ours is ``severity_level``). Pure functions: no I/O, no service calls.
"""

from __future__ import annotations

import functools
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from nessus_pool.results.types import SEVERITY_NAMES
from nessus_pool.service import PoolView, ScannerView, SubmitResult, TaskView

#: the only scanner type we drive; the seed derived it from the pool name ("nessus_dmz")
SCANNER_TYPE = "nessus"
#: trace ids are derived from task ids, so every tool names the same one for a task
_TRACE_NS = uuid.UUID("6f1c2a4e-8b7d-4e0f-9a3c-5d2b1e0f7a61")

#: seed statuses: queued | running | completed | failed | timeout (+ our canceled)
_SEED_STATUS = {
    "queued": "queued",
    "dispatching": "queued",
    "running": "running",
    "exporting": "running",
    "completed": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "timed_out": "timeout",
}

AUTH_FAILED_TROUBLESHOOTING: dict[str, Any] = {
    "likely_cause": "Credentials rejected or inaccessible target",
    "next_steps": [
        "Verify the SSH username and password (or the named credential set)",
        "Check that the target allows SSH from the scanner's address",
        "Check the target's firewall rules",
        "Check the account's permissions on the target",
        "Read validation_warnings and troubleshooting_details for the plugins that decided",
    ],
}


@functools.lru_cache(maxsize=4096)  # per status call; a uuid5 is ~3 us
def trace_id(task_id: str) -> str:
    """A stable UUID per task (the seed made a uuid4 per submit; ours is derived so that
    status, list and submit replies agree without storing it)."""
    return str(uuid.uuid5(_TRACE_NS, task_id))


@functools.lru_cache(maxsize=4096)  # three per status call, ~3 us each (issue 18)
def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_minutes(seconds: float | None) -> int:
    """Whole minutes, rounded up (the seed's ``estimated_wait_minutes`` is an int)."""
    return 0 if not seconds or seconds <= 0 else math.ceil(seconds / 60)


def targets_text(targets: list[str]) -> str:
    return ",".join(targets)


def seed_status(v: TaskView) -> str:
    """A scan that ran but could not log in is ``completed`` with
    ``authentication_status: "failed"`` (the seed's lifecycle), not ``failed``."""
    if v.status == "failed" and v.reason == "authentication_failed":
        return "completed"
    return _SEED_STATUS.get(v.status, v.status)


def progress(v: TaskView) -> int:
    if v.status == "completed" or v.reason == "authentication_failed":
        return 100
    return v.progress_pct or 0


def submit_result(
    r: SubmitResult,
    *,
    scan_type: str,
    scanner: ScannerView | None,
    pinned: bool,
    message: str,
) -> dict[str, Any]:
    """``scanner_instance`` names the scanner that will most likely run the scan (the pinned
    one, else the least loaded reachable one now); the dispatcher decides when a slot frees,
    and get_scan_status names the one that did."""
    out: dict[str, Any] = {
        "task_id": r.task_id,
        "trace_id": trace_id(r.task_id),
        "status": _SEED_STATUS.get(r.status, r.status),
        "scan_type": scan_type,
        "scanner_pool": r.pool,
        "scanner_instance": scanner.id if scanner else r.scanner,
        "scanner_url": scanner.url if scanner else None,
        "queue_position": r.queue_position or 0,
        "estimated_wait_minutes": wait_minutes(r.estimated_wait_s),
        "message": message,
        # ours
        "detailed_status": r.status,
        "scanner_pinned": pinned,
        "eta_basis": r.eta_basis,
    }
    if r.duplicate:
        out["idempotent"] = True
    return out


def results_summary(v: TaskView, export_bytes: int | None) -> dict[str, Any] | None:
    res = v.results or {}
    summary = res.get("summary")
    if summary is None:
        return None
    validation = res.get("validation") or {}
    return {
        **summary,
        "total_vulnerabilities": summary.get("findings_total", 0),
        "file_size_kb": round((export_bytes or 0) / 1024, 1),
        "auth_plugins_found": res.get("auth_plugins_found", 0),
        "hosts_total": res.get("hosts_total", 0),
        "hosts_by_authentication_status": validation.get("hosts_by_status", {}),
    }


def status_result(
    v: TaskView, *, next_step: str, export_bytes: int | None = None
) -> dict[str, Any]:
    validation = (v.results or {}).get("validation") or {}
    details = list(validation.get("troubleshooting", []))
    out: dict[str, Any] = {
        **_task_keys(v),
        "progress": progress(v),
        "error_message": v.error,
        "authentication_status": v.authentication_status,
        "validation_warnings": list(validation.get("warnings", [])),
        # ours
        "detailed_status": v.status,
        "reason": v.reason,
        "queue_position": v.queue_position,
        "estimated_wait_minutes": (
            wait_minutes(v.estimated_wait_s) if v.estimated_wait_s is not None else None
        ),
        "eta_basis": v.eta_basis,
        "attempt": v.attempt,
        "credential": v.credential,
        "dead_letter": v.dead_letter,
        "results_available": v.export_available,
        "next_step": next_step,
    }
    if v.waiting_reason is not None:  # why a queued scan is not dispatched now
        out["waiting_reason"] = v.waiting_reason
    if v.paused_at_ms is not None:  # paused on its scanner (by a person or a window)
        out.update(
            paused_at=iso(v.paused_at_ms), paused_for_s=v.paused_for_s, paused_by=v.paused_by
        )
    summary = results_summary(v, export_bytes)
    if summary is not None:
        out["results_summary"] = summary
    if v.authentication_status == "failed":
        out["troubleshooting"] = {**AUTH_FAILED_TROUBLESHOOTING}
    elif details:
        out["troubleshooting"] = {"likely_cause": details[0], "next_steps": details[1:]}
    if details:
        out["troubleshooting_details"] = details
    return out


def _task_keys(v: TaskView) -> dict[str, Any]:
    """The seed's keys that name a task, shared by get_scan_status and list_tasks entries
    (and ``schedule_id`` for a scheduled run only: no null key on every one-off scan)."""
    keys = {
        "task_id": v.task_id,
        "trace_id": trace_id(v.task_id),
        "status": seed_status(v),
        "scan_type": v.scan_type,
        "scanner_pool": v.pool,
        "scanner_type": SCANNER_TYPE,
        "scanner_instance": v.scanner,
        "targets": targets_text(v.targets),
        "name": v.name,
        "nessus_scan_id": v.remote_scan_id,
        "created_at": iso(v.created_at_ms),
        "started_at": iso(v.started_at_ms),
        "completed_at": iso(v.finished_at_ms),
    }
    if v.schedule_id is not None:
        keys["schedule_id"] = v.schedule_id
    return keys


def task_entry(v: TaskView) -> dict[str, Any]:
    return {
        **_task_keys(v),
        # ours
        "detailed_status": v.status,
        "progress": progress(v),
        "authentication_status": v.authentication_status,
    }


def _load(active: int, capacity: int) -> dict[str, Any]:
    return {
        "active_scans": active,
        "max_concurrent_scans": capacity,
        "available_capacity": max(0, capacity - active),
        "utilization_pct": round(100 * active / capacity, 1) if capacity else 0.0,
    }


def scanner_entry(s: ScannerView) -> dict[str, Any]:
    return {
        "scanner_type": SCANNER_TYPE,
        "pool": s.pool,
        "instance_id": s.id,
        "instance_key": f"{s.pool}:{s.id}",
        "name": s.id,
        "url": s.url,
        "enabled": s.enabled,
        **_load(s.active_scans, s.capacity),
        # ours
        "draining": s.draining,
        "reachable": s.reachable,
        "scan_api": s.scan_api,
        "circuit_state": s.circuit_state,
        "version": s.version,
        "message": s.message,
    }


def pool_status(v: PoolView) -> dict[str, Any]:
    return {
        "pool": v.name,
        "scanner_type": SCANNER_TYPE,
        "total_scanners": len(v.scanners),
        "total_capacity": v.capacity,
        "total_active": v.active,
        "available_capacity": max(0, v.capacity - v.active),
        "utilization_pct": round(v.utilisation * 100, 1),
        "scanners": [
            {
                "instance_key": f"{s.pool}:{s.id}",
                **_load(s.active_scans, s.capacity),
                "instance_id": s.id,
                "reachable": s.reachable,
                "circuit_state": s.circuit_state,
            }
            for s in v.scanners
        ],
        # ours
        "queue_depth": v.queue_depth,
        "max_queued": v.max_queued,
        "oldest_queued_age_s": v.oldest_queued_age_s,
        "dlq_depth": v.dlq_depth,
        "mean_scan_duration_s": v.mean_scan_duration_s,
        "eta_basis": v.eta_basis,
        "waiting_reason": v.waiting_reason,
    }


def queue_status(v: PoolView, queued: list[TaskView], now_ms: int) -> dict[str, Any]:
    return {
        "pool": v.name,
        "queue_depth": v.queue_depth,
        "dlq_size": v.dlq_depth,
        "next_tasks": [
            {
                "task_id": t.task_id,
                "trace_id": trace_id(t.task_id),
                "name": t.name,
                "scan_type": t.scan_type,
                "targets": targets_text(t.targets),
                "queue_position": t.queue_position,
                "estimated_wait_minutes": wait_minutes(t.estimated_wait_s),
                "priority": t.priority,
                "created_at": iso(t.created_at_ms),
            }
            for t in queued
        ],
        "timestamp": iso(now_ms),
        # ours
        "max_queued": v.max_queued,
        "oldest_queued_age_s": v.oldest_queued_age_s,
        "waiting_reason": v.waiting_reason,
    }


# --- findings ---------------------------------------------------------------------------------

#: the seed's profiles (its names, its order), each followed by the fields we add
SEED_PROFILES: dict[str, tuple[str, ...]] = {
    "minimal": ("host", "plugin_id", "severity", "cve", "cvss_score", "exploit_available"),
    "summary": (
        "host", "plugin_id", "severity", "cve", "cvss_score", "exploit_available",
        "plugin_name", "cvss3_base_score", "synopsis",
    ),
    "brief": (
        "host", "plugin_id", "severity", "cve", "cvss_score", "exploit_available",
        "plugin_name", "cvss3_base_score", "synopsis", "description", "solution",
    ),
}  # fmt: skip
#: ours, appended to every non-full profile: where the finding is (full has every field,
#: ``protocol`` and ``severity_level`` among them)
EXTRA_FIELDS: tuple[str, ...] = ("port",)


def profile_fields(profile: str) -> tuple[str, ...] | None:
    """The seed's field list for a profile plus ours; None for ``full`` (every field)."""
    if profile == "full":
        return None
    return SEED_PROFILES[profile] + EXTRA_FIELDS


def cvss_score(f: dict[str, Any]) -> float | None:
    """CVSS v3 base score, else v2 (exports carry one or both)."""
    v3 = f.get("cvss3_base_score")
    return v3 if v3 is not None else f.get("cvss_base_score")


def vulnerability(f: dict[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """One finding (our Finding as a dict) as the seed's ``vulnerability`` line: string
    ``severity`` and ``plugin_id``, ``cve`` a list, ``cvss_score`` the best score known."""
    sev = int(f.get("severity", 0))
    full: dict[str, Any] = {
        "type": "vulnerability",
        **{k: v for k, v in f.items() if k not in ("severity", "plugin_id", "cves")},
        "plugin_id": str(f.get("plugin_id", "")),
        "severity": str(sev),
        "severity_level": SEVERITY_NAMES.get(sev, "info"),
        "cve": list(f.get("cves") or []),
        "cvss_score": cvss_score(f),
    }
    if fields is None:
        return full
    out = {"type": "vulnerability"}
    for name in fields:
        if name in full:
            out[name] = full[name]
    return out
