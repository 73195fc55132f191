"""The webhook payload, version 1, and the events a task's final transition raises. Pure.

A payload is JSON::

    {"version": 1, "event": "completed", "delivery_id": "...", "occurred_at_ms": ...,
     "task": {task summary}, "counts": {"critical": 0, "high": 2, ...} | null,
     "min_severity": "high", "matching": 2, "new_findings": {...} | null,
     "top_findings": [...], "links": {"scan": "/api/v1/scans/<id>", ...}}

It never holds a credential, a secret or plugin output: the task summary names a
credential set by its name only, and ``links`` say where to fetch the results.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from nessus_pool.models import Task, TaskStatus

VERSION: Final = 1
#: the events a target may subscribe to
EVENTS: Final = ("completed", "failed", "dead_lettered", "authentication_failed", "findings",
                 "new_findings")  # fmt: skip
#: events whose payload needs the stored findings (built at the first delivery attempt)
FINDINGS_EVENTS: Final = frozenset({"findings", "new_findings"})
SEVERITIES: Final = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK: Final = {name: rank for rank, name in enumerate(SEVERITIES)}
#: findings listed in a payload (the rest are counted)
TOP_FINDINGS: Final = 10
_MAX_TEXT = 500
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(dict[str, Any])


def events_for(t: Task) -> list[str]:
    """The events ``t``'s final state raises (``t`` has its final status). A timed-out scan
    is ``failed``; a canceled one raises nothing. ``findings`` and ``new_findings`` are
    candidates wherever results were stored: whether they fire depends on the findings."""
    out: list[str] = []
    if t.status is TaskStatus.COMPLETED:
        out.append("completed")
    elif t.status in (TaskStatus.FAILED, TaskStatus.TIMED_OUT):
        out.append("failed")
        if t.dead_letter:
            out.append("dead_lettered")
    if t.scan_type.is_authenticated and t.authentication_status == "failed":
        out.append("authentication_failed")
    if t.status is not TaskStatus.CANCELED and t.authentication_status is not None:
        out += ["findings", "new_findings"]
    return out


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def task_summary(t: Task) -> dict[str, Any]:
    """What a receiver may know of a task: no credential, only the name of a credential
    set; errors clipped (they are written for logs, which hold no secret either)."""
    return {
        "task_id": t.task_id,
        "name": t.name,
        "pool": t.pool,
        "status": t.status.value,
        "reason": t.reason,
        "error": _clip(t.error),
        "targets": t.targets[:50],
        "targets_total": len(t.targets),
        "scan_type": t.scan_type.value,
        "scanner_id": t.scanner_id,
        "attempt": t.attempt,
        "dead_letter": t.dead_letter,
        "authentication_status": t.authentication_status,
        "schedule_id": t.schedule_id,
        "created_at_ms": t.created_at_ms,
        "started_at_ms": t.started_at_ms,
        "finished_at_ms": t.finished_at_ms,
    }


def links(task_id: str) -> dict[str, str]:
    return {
        "scan": f"/api/v1/scans/{task_id}",
        "results": f"/api/v1/scans/{task_id}/results",
        "compare": f"/api/v1/scans/{task_id}/compare",
        "cli": f"nessus-pool results {task_id}",
    }


def initial_payload(
    event: str, delivery_id: str, t: Task, min_severity: str, occurred_at_ms: int
) -> bytes:
    """The payload as the final transition knows it (written with it); ``counts`` and the
    findings parts are filled in by :func:`with_findings` at the first delivery attempt."""
    doc: dict[str, Any] = {
        "version": VERSION,
        "event": event,
        "delivery_id": delivery_id,
        "occurred_at_ms": occurred_at_ms,
        "task": task_summary(t),
        "counts": None,
        "min_severity": min_severity,
        "matching": None,
        "new_findings": None,
        "top_findings": [],
        "links": links(t.task_id),
    }
    return _enc.encode(doc)


def decode(body: bytes) -> dict[str, Any]:
    return _dec.decode(body)


def encode(doc: dict[str, Any]) -> bytes:
    return _enc.encode(doc)


def count_by_severity(severities: list[int]) -> dict[str, int]:
    counts = dict.fromkeys(reversed(SEVERITIES), 0)
    for s in severities:
        counts[SEVERITIES[max(0, min(4, s))]] += 1
    return counts


def at_or_above(counts: dict[str, int], min_severity: str) -> int:
    floor = SEVERITY_RANK[min_severity]
    return sum(n for name, n in counts.items() if SEVERITY_RANK[name] >= floor)


def slack_body(doc: dict[str, Any]) -> bytes:
    """A Slack-compatible ``{"text": ...}`` body for a payload."""
    t = doc["task"]
    head = f"nessus-pool: scan {t['name']!r} ({t['task_id']}, pool {t['pool']})"
    line = {
        "completed": "completed",
        "failed": f"failed: {t.get('reason') or 'unknown reason'}",
        "dead_lettered": "was dead-lettered (no attempts left)",
        "authentication_failed": "could not authenticate on at least one host",
        "findings": f"found {doc.get('matching')} finding(s) at or above {doc['min_severity']}",
        "new_findings": (
            f"found {doc.get('matching')} new finding(s) at or above {doc['min_severity']}"
        ),
    }.get(doc["event"], doc["event"])
    parts = [f"{head} {line}"]
    counts = doc.get("counts")
    if counts:
        parts.append(", ".join(f"{k}: {v}" for k, v in counts.items()))
    for f in doc.get("top_findings") or []:
        parts.append(f"- [{f['severity']}] {f['host']}: {f['plugin_name']} ({f['plugin_id']})")
    parts.append(f"details: {doc['links']['scan']}")
    return _enc.encode({"text": "\n".join(parts)})
