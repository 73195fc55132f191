"""Plain data shared across layers: enums and msgspec Structs. Imports nothing of ours."""

from __future__ import annotations

import enum

import msgspec


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    DISPATCHING = "dispatching"
    RUNNING = "running"
    #: paused on the scanner (by a person or a maintenance window): keeps its slot
    PAUSED = "paused"
    EXPORTING = "exporting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """Holds a scanner slot."""
        return self in ACTIVE_STATUSES


#: the one list of each status set: import these, never re-list them
TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.TIMED_OUT}
)
#: holding a scanner slot
ACTIVE_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.DISPATCHING, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.EXPORTING}
)
#: not finished: waiting in a queue or holding a slot (what a restart recovers)
UNFINISHED_STATUSES: frozenset[TaskStatus] = ACTIVE_STATUSES | {TaskStatus.QUEUED}


def status_values(statuses: frozenset[TaskStatus]) -> list[str]:
    """The stored strings of ``statuses``, in declaration order (for SQL and filters)."""
    return [s.value for s in TaskStatus if s in statuses]


class ScanType(enum.StrEnum):
    UNTRUSTED = "untrusted"
    AUTHENTICATED = "authenticated"
    AUTHENTICATED_PRIVILEGED = "authenticated_privileged"

    @property
    def is_authenticated(self) -> bool:
        return self is not ScanType.UNTRUSTED


class Escalation(enum.StrEnum):
    """SSH privilege escalation methods, as Nessus names them in the credentials block."""

    NOTHING = "Nothing"
    SUDO = "sudo"
    SU = "su"
    SU_SUDO = "su+sudo"
    PBRUN = "pbrun"
    DZDO = "dzdo"
    K5LOGIN = ".k5login"
    CISCO_ENABLE = "Cisco 'enable'"
    CHECKPOINT_EXPERT = "Checkpoint Gaia 'expert'"


class SshCredential(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved SSH credentials for one scan. Holds secrets: never log, persist or return it;
    ``__repr__`` hides them."""

    username: str
    password: str | None = None
    private_key: str | None = None
    private_key_passphrase: str | None = None
    elevate_privileges_with: Escalation = Escalation.NOTHING
    escalation_account: str | None = None
    escalation_password: str | None = None

    def __repr__(self) -> str:
        return (
            f"SshCredential(username={self.username!r}, "
            f"elevate_privileges_with={self.elevate_privileges_with.value!r}, secrets=<redacted>)"
        )

    __str__ = __repr__


class ScanSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine asks a scanner to create."""

    name: str
    targets: list[str]
    description: str = ""
    template: str = "basic"
    folder_id: int | None = None
    remote_scanner_id: int | None = None
    credential: SshCredential | None = None
    #: a saved policy's name on the scanner (``GET /policies``); replaces ``template``
    policy: str | None = None


#: the marker stored in ``Task.credential`` for credentials given inline in the request: the
#: secret itself lives only in the engine's memory
INLINE_CREDENTIAL = "(inline)"


class Task(msgspec.Struct, kw_only=True):
    """A scan request and its whole lifecycle state, as persisted in the ``tasks`` table."""

    task_id: str
    seq: int
    pool: str
    status: TaskStatus = TaskStatus.QUEUED
    priority: int = 0
    name: str
    description: str = ""
    targets: list[str]
    scan_type: ScanType = ScanType.UNTRUSTED
    credential: str | None = None
    template: str | None = None
    #: a saved Nessus policy by name (the pool's default-policy when None)
    policy: str | None = None
    requested_scanner: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    scanner_id: str | None = None
    attempt: int = 0
    #: attempts before this count do not use up max-attempts (a DLQ retry starts afresh
    #: without ever reusing a scan name)
    attempt_base: int = 0
    remote_scan_id: int | None = None
    remote_scan_uuid: str | None = None
    remote_scan_name: str | None = None
    progress_pct: int | None = None
    export_path: str | None = None
    export_sha256: str | None = None
    export_bytes: int | None = None
    reason: str | None = None
    error: str | None = None
    dead_letter: bool = False
    created_at_ms: int
    updated_at_ms: int
    dispatched_at_ms: int | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    authentication_status: str | None = None
    #: while paused: since when, and by whom ("user" or "window": a window resumes only
    #: what it paused)
    paused_at_ms: int | None = None
    paused_by: str | None = None
    #: time spent paused by maintenance windows, which max-scan-duration does not count
    window_paused_ms: int = 0
    #: the schedule whose run this is (its name), None for a scan submitted by hand
    schedule_id: str | None = None


class TaskEvent(msgspec.Struct, kw_only=True, frozen=True):
    task_id: str
    at_ms: int
    status: str
    reason: str | None = None
    detail: str | None = None
