"""Arguments and results of the MCP tools as msgspec Structs: the JSON Schemas the tools
advertise are generated from these once, and arguments are decoded into them, so what is
advertised and what is accepted cannot drift apart. Names and parameters follow the seed
server so its users can switch."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from nessus_pool.models import Escalation
from nessus_pool.results.query import ScanDiff
from nessus_pool.service import TASK_ID_PATTERN, ScannerView

D = Meta  # short alias: Annotated[type, D(description=...)]

TaskId = Annotated[
    str, D(pattern=TASK_ID_PATTERN, description="Task id returned by run_*_scan or list_tasks")
]
Targets = Annotated[
    str | list[str],
    D(
        description="IP addresses, CIDR ranges, IP ranges (a-b) or hostnames: a comma- or "
        'space-separated string ("192.168.1.0/24, 10.0.0.5") or a list of strings'
    ),
]
Pool = Annotated[
    str | None,
    D(description="Scanner pool name (see list_pools); default: the pool whose scope fits"),
]
Instance = Annotated[
    str | None, D(description="Run on this scanner of the pool (see list_scanners)")
]
ProfileName = Literal["minimal", "summary", "brief", "full"]
ResultsProfile = Literal["minimal", "summary", "brief", "full", "custom"]
SchemaProfile = Annotated[
    ProfileName,
    D(description="Default field profile for get_scan_results (kept for seed compatibility)"),
]
Name = Annotated[str, D(max_length=200)] | None
Description = Annotated[str, D(max_length=2000, description="Free-text scan description")]
IdempotencyKey = Annotated[str, D(min_length=1, max_length=200)] | None
Priority = Annotated[int, D(ge=-100, le=100, description="Higher runs first within the pool")]


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class UntrustedScanArgs(_Args):
    targets: Targets
    name: Name = None
    description: Description = ""
    scanner_pool: Pool = None
    scanner_instance: Instance = None
    schema_profile: SchemaProfile = "brief"
    idempotency_key: IdempotencyKey = None
    priority: Priority = 0


class AuthenticatedScanArgs(UntrustedScanArgs):
    scan_type: Annotated[
        Literal["authenticated", "authenticated_privileged"],
        D(
            description="authenticated: SSH login; authenticated_privileged: SSH login plus "
            "privilege escalation (sudo unless elevate_privileges_with says otherwise)"
        ),
    ] = "authenticated"
    credential: Annotated[
        str | None,
        D(
            description="Name of a credential set configured on the server (preferred: no "
            "secret passes through the conversation). Give this or ssh_username/ssh_password"
        ),
    ] = None
    ssh_username: Annotated[str | None, D(description="SSH user for inline credentials")] = None
    ssh_password: Annotated[
        str | None,
        D(description="SSH password for inline credentials; kept in memory only, never echoed"),
    ] = None
    elevate_privileges_with: Annotated[
        Escalation | None, D(description="Privilege escalation method (Nessus names)")
    ] = None
    escalation_account: Annotated[
        str | None, D(description="Account to escalate to (default root)")
    ] = None
    escalation_password: Annotated[
        str | None, D(description="Password for privilege escalation; never echoed")
    ] = None


class TaskArgs(_Args):
    task_id: TaskId


class Filters(_Args):
    """Findings filters; every given criterion must hold."""

    min_severity: Annotated[
        int | str | None, D(description="0-4 or critical/high/medium/low/info: this or worse")
    ] = None
    severity: Annotated[
        int | str | None, D(description="Exactly this severity (0-4 or a name)")
    ] = None
    severities: Annotated[list[int | str] | None, D(description="Any of these severities")] = None
    min_cvss3: Annotated[float, D(ge=0, le=10)] | None = None
    cvss_score: Annotated[
        str | float | None, D(description='Seed form of min_cvss3, e.g. ">7.0" or 7.0')
    ] = None
    host: Annotated[str | None, D(description="IP, CIDR (containment) or hostname (exact)")] = None
    port: Annotated[int, D(ge=0, le=65535)] | None = None
    protocol: Annotated[str | None, D(description="tcp, udp, icmp")] = None
    plugin_id: int | None = None
    plugin_family: str | None = None
    cve: Annotated[str | None, D(description="e.g. CVE-2021-44228")] = None
    cwe: Annotated[int | str | None, D(description="e.g. 79 or CWE-79")] = None
    exploit_available: bool | None = None
    text: Annotated[str | None, D(description="Substring of the plugin name")] = None
    sort: Literal["severity", "cvss3", "host", "plugin_id", "port"] = "severity"


class ResultsArgs(_Args):
    task_id: TaskId
    page: Annotated[int, D(ge=1, description="1-based page number")] = 1
    page_size: Annotated[
        int, D(ge=1, description="Findings per page; values above 100 are clamped to 100")
    ] = 40
    schema_profile: Annotated[
        ResultsProfile,
        D(description="Fields per finding: minimal < summary < brief < full; or custom"),
    ] = "brief"
    custom_fields: Annotated[
        list[str] | None,
        D(description="Fields to return (implies schema_profile custom), e.g. host, plugin_id"),
    ] = None
    filters: Filters | None = None


class ListTasksArgs(_Args):
    limit: Annotated[int, D(ge=1, le=100, description="Maximum tasks to return")] = 10
    status_filter: Annotated[
        str | None,
        D(
            description="Status or comma-separated statuses: queued, dispatching, running, "
            "exporting, completed, failed, canceled, timed_out"
        ),
    ] = None
    scanner_pool: Annotated[str | None, D(description="Only tasks of this pool")] = None
    target_filter: Annotated[
        str | None, D(description="IP or CIDR (overlap) or hostname substring")
    ] = None
    cursor: Annotated[str | None, D(description="next_cursor of the previous page")] = None


class PoolArgs(_Args):
    scanner_pool: Annotated[
        str | None, D(description="Pool name (default: the first configured pool)")
    ] = None


class NoArgs(_Args):
    pass


class CompareArgs(_Args):
    task_id: Annotated[str, D(pattern=TASK_ID_PATTERN, description="The newer scan")]
    base_task_id: Annotated[str, D(pattern=TASK_ID_PATTERN)] | None = None


class WaitArgs(_Args):
    task_id: TaskId
    timeout_s: Annotated[
        float, D(ge=0, le=600, description="Give up waiting after this many seconds")
    ] = 60.0


# --- results ---------------------------------------------------------------------------------


class _Out(msgspec.Struct, kw_only=True):
    pass


class SubmitOut(_Out):
    task_id: str
    status: str
    scan_type: str
    scanner_pool: str
    scanner_instance: str | None
    scanner_url: str | None
    queue_position: int | None
    estimated_wait_minutes: float | None
    eta_basis: str
    duplicate: bool
    message: str


class StatusOut(_Out):
    task_id: str
    name: str
    status: str
    scan_type: str
    scanner_pool: str
    scanner_instance: str | None
    targets: list[str]
    credential: str | None
    progress: int | None
    queue_position: int | None
    estimated_wait_minutes: float | None
    eta_basis: str | None
    attempt: int
    nessus_scan_id: int | None
    created_at_ms: int
    started_at_ms: int | None
    finished_at_ms: int | None
    error_message: str | None
    reason: str | None
    dead_letter: bool
    authentication_status: str | None
    validation_warnings: list[str]
    results_summary: dict[str, Any] | None
    troubleshooting: list[str]
    results_available: bool
    next_step: str
    wait_timed_out: bool | None = None


class TaskBrief(_Out):
    task_id: str
    name: str
    status: str
    scan_type: str
    scanner_pool: str
    scanner_instance: str | None
    targets: list[str]
    progress: int | None
    queue_position: int | None
    authentication_status: str | None
    created_at_ms: int
    finished_at_ms: int | None


class TaskListOut(_Out):
    tasks: list[TaskBrief]
    total: int
    next_cursor: str | None


class ResultsOut(_Out):
    task_id: str
    items: list[dict[str, Any]]
    total: int
    page: int
    page_size: int
    pages: int
    has_more: bool
    profile: str
    fields: list[str]


class ScannersOut(_Out):
    scanners: list[ScannerView]
    total: int
    pools: list[str]


class PoolBrief(_Out):
    name: str
    scanners: int
    capacity: int
    active: int
    queue_depth: int


class PoolsOut(_Out):
    pools: list[str]
    default_pool: str | None
    details: list[PoolBrief]


class PoolStatusOut(_Out):
    pool: str
    total_scanners: int
    total_capacity: int
    total_active: int
    available_capacity: int
    utilization_pct: float
    queue_depth: int
    max_queued: int
    oldest_queued_age_s: float | None
    dlq_depth: int
    mean_scan_duration_s: float | None
    eta_basis: str
    scanners: list[ScannerView]


class QueuedTask(_Out):
    task_id: str
    name: str
    queue_position: int | None
    estimated_wait_minutes: float | None
    priority: int
    created_at_ms: int


class QueueOut(_Out):
    pool: str
    queue_depth: int
    max_queued: int
    oldest_queued_age_s: float | None
    dlq_size: int
    next_tasks: list[QueuedTask]


class CompareOut(_Out):
    task_id: str
    base_task_id: str
    diff: ScanDiff


#: descriptions of properties whose type annotation cannot carry one (constrained optionals)
DESCRIPTIONS: dict[str, str] = {
    "name": "Scan name, up to 200 characters (default: made from the targets)",
    "idempotency_key": "Retry-safe key (1-200 characters): the same key with the same request "
    "returns the same task instead of starting another scan",
    "min_cvss3": "CVSS v3 base score at least this (0-10)",
    "port": "Port number (0-65535)",
    "base_task_id": "The older scan (default: the previous completed scan of the same targets "
    "in the same pool)",
    "filters": "Findings filters (all given criteria must hold)",
    "plugin_id": "Nessus plugin id",
    "plugin_family": "Nessus plugin family, e.g. Web Servers",
    "exploit_available": "Only findings with (true) or without (false) a known exploit",
    "sort": "Sort order (severity: most severe first, then CVSS)",
}
