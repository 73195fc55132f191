"""Arguments and results of the MCP tools as msgspec Structs: the JSON Schemas the tools
advertise are generated from these once, and arguments are decoded into them, so what is
advertised and what is accepted cannot drift apart. Names and parameters follow the seed
server so its users can switch."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from nessus_pool.models import Escalation
from nessus_pool.service import TASK_ID_PATTERN

D = Meta  # short alias: Annotated[type, D(description=...)]

TaskId = Annotated[str, D(pattern=TASK_ID_PATTERN, description="From run_*_scan or list_tasks")]
Targets = Annotated[
    str | list[str],
    D(description="IPs, CIDRs, a-b ranges or hostnames: comma-separated or a list"),
]
Pool = Annotated[str | None, D(description="Default: the pool whose scope fits")]
Instance = Annotated[str | None, D(description="Pin to this scanner")]
ProfileName = Literal["minimal", "summary", "brief", "full"]
#: what get_scan_results accepts: the schema line says ``custom`` for custom_fields, so that
ResultsProfile = Literal["minimal", "summary", "brief", "full", "custom"]
Name = Annotated[str, D(max_length=200)] | None
Description = Annotated[str, D(max_length=2000)]
IdempotencyKey = Annotated[str, D(min_length=1, max_length=200)] | None
Priority = Annotated[int, D(ge=-100, le=100, description="Higher runs first")]
SevValue = int | str


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class UntrustedScanArgs(_Args):
    targets: Targets
    name: Name = None
    description: Description = ""
    scanner_pool: Pool = None
    scanner_instance: Instance = None
    schema_profile: Annotated[ProfileName, D(description="Unused (seed)")] = "brief"
    idempotency_key: IdempotencyKey = None
    priority: Priority = 0
    policy: Annotated[str, D(max_length=200)] | None = None


class AuthenticatedScanArgs(UntrustedScanArgs):
    scan_type: Annotated[
        Literal["authenticated", "authenticated_privileged"],
        D(description="_privileged: SSH plus escalation (needs elevate_privileges_with)"),
    ] = "authenticated"
    credential: Annotated[
        str | None,
        D(description="A credential set named on the server"),
    ] = None
    ssh_username: str | None = None
    ssh_password: Annotated[str | None, D(description="Never echoed or stored")] = None
    elevate_privileges_with: Escalation | None = None
    escalation_account: Annotated[str | None, D(description="Default root")] = None
    escalation_password: Annotated[str | None, D(description="Never echoed or stored")] = None


class TaskArgs(_Args):
    task_id: TaskId


class Filters(_Args):
    """All given filters must hold."""

    min_severity: Annotated[SevValue | None, D(description="0-4 or info..critical; or worse")] = (
        None
    )
    severity: Annotated[SevValue | None, D(description='Exactly this ("4", "high") or ">=3"')] = (
        None
    )
    severities: list[SevValue] | None = None
    min_cvss3: Annotated[float, D(ge=0, le=10)] | None = None
    cvss_score: Annotated[str | float | None, D(description='">7.0", ">=5", "<4" or 7')] = None
    host: Annotated[str | None, D(description="IP, CIDR or hostname (exact)")] = None
    port: Annotated[int, D(ge=0, le=65535)] | None = None
    protocol: Annotated[str | None, D(description="tcp, udp, icmp")] = None
    plugin_id: int | str | None = None
    plugin_name: Annotated[str | None, D(description="Substring, any case")] = None
    plugin_family: str | None = None
    cve: Annotated[str | None, D(description="Substring of a CVE id")] = None
    cwe: Annotated[int | str | None, D(description="79 or CWE-79")] = None
    exploit_available: bool | None = None
    text: Annotated[str | None, D(description="Substring of the plugin name")] = None
    sort: Literal["severity", "cvss3", "host", "plugin_id", "port"] = "severity"


class ResultsArgs(_Args):
    task_id: TaskId
    page: Annotated[int, D(ge=0, description="1-based; 0: all (capped at 500)")] = 1
    page_size: Annotated[int | None, D(description="Default 3; else clamped to 10-100")] = None
    schema_profile: Annotated[
        ResultsProfile, D(description="Fields: minimal < summary < brief < full")
    ] = "brief"
    custom_fields: Annotated[list[str] | None, D(description="Fields instead of a profile")] = None
    filters: Filters | None = None
    view: Annotated[Literal["findings", "hosts"], D(description="hosts: per-host results")] = (
        "findings"
    )
    auth_status: Annotated[
        Literal["success", "failed", "partial", "not_applicable", "unknown"] | None,
        D(description="view=hosts"),
    ] = None


class ListTasksArgs(_Args):
    limit: Annotated[int, D(ge=1, le=100)] = 10
    status_filter: Annotated[
        str | None,
        D(description="queued, running, completed, failed, timeout, canceled (comma-separated)"),
    ] = None
    scanner_pool: str | None = None
    target_filter: Annotated[str | None, D(description="IP or CIDR (overlap) or hostname")] = None
    cursor: Annotated[str | None, D(description="next_cursor of the previous page")] = None


class PoolArgs(_Args):
    scanner_pool: Annotated[str | None, D(description="Default: the first pool")] = None


class NoArgs(_Args):
    pass


class CompareArgs(_Args):
    task_id: Annotated[str, D(pattern=TASK_ID_PATTERN, description="The newer scan")]
    base_task_id: Annotated[str, D(pattern=TASK_ID_PATTERN)] | None = None
    min_severity: SevValue = "low"
    limit: Annotated[int, D(ge=1, le=100, description="Per section")] = 5
    page: Annotated[int, D(ge=1)] = 1


class WaitArgs(_Args):
    task_id: TaskId
    timeout_s: Annotated[float, D(ge=0, le=600)] = 60.0


# --- results ---------------------------------------------------------------------------------
# Results are open JSON objects: ``{"type": "object", "additionalProperties": true}`` plus the
# keys every success carries. No ``properties`` at the root: fastmcp 2.13 turns a typed root
# into a generated class (``result.data["task_id"]`` then fails), and the seed server published
# open objects. The keys' meaning is in README ("MCP tools") and api/mcp/compat.py.

_STATUS_KEYS = ("task_id", "trace_id", "status", "scanner_pool", "progress", "next_step")
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "submit": ("task_id", "trace_id", "status", "queue_position", "estimated_wait_minutes"),
    "status": _STATUS_KEYS,
    "wait": (*_STATUS_KEYS, "wait_timed_out"),
    "compare": ("task_id", "base_task_id", "diff"),
    "tasks": ("tasks", "total"),
    "scanners": ("scanners", "total", "pools"),
    "pools": ("pools", "default_pool"),
    "policies": ("pools",),
    "pool": (
        "pool", "scanner_type", "total_scanners", "total_capacity", "total_active",
        "available_capacity", "utilization_pct", "scanners",
    ),
    "queue": ("pool", "queue_depth", "dlq_size", "next_tasks", "timestamp"),
}  # fmt: skip


def open_object(keys: tuple[str, ...]) -> dict[str, Any]:
    """An open object that carries ``keys``, unless it is a lookup that found nothing
    (``{"error": "task ... not found"}``, the seed's shape, an answer and not a failure)."""
    return {
        "type": "object",
        "additionalProperties": True,
        "if": {"required": ["error"]},
        "else": {"required": list(keys)},
    }


#: get_scan_results returns one string (JSON-NL), wrapped the way fastmcp wraps a ``str``
#: result so that its clients' ``result.data`` is that string, as with the seed server
JSONL_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"result": {"type": "string", "description": "JSON-NL lines"}},
    "required": ["result"],
    "x-fastmcp-wrap-result": True,
}


#: descriptions of properties whose type annotation cannot carry one (constrained optionals)
DESCRIPTIONS: dict[str, str] = {
    "idempotency_key": "Same key and request: same task",
    "base_task_id": "Default: the previous scan of the same targets",
    "timeout_s": "Stop waiting after this many seconds",
}
