"""Nessus scan statuses, mapped explicitly.

Every status string Nessus is known to report has a row in :data:`_STATUS_TABLE`. Nothing is
decided from the shape of a string: ``paused`` ends in "ed" like ``completed`` but is not
finished. Unknown strings map to :attr:`RemotePhase.UNKNOWN`, which is never terminal, and
are logged once per process.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger("nessus_pool.nessus")


class RemotePhase(enum.StrEnum):
    """What a remote scan is doing, in the terms the engine needs."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    #: pausing, resuming, stopping, canceling, processing: moving between two phases
    TRANSITIONING = "transitioning"
    COMPLETED = "completed"
    CANCELED = "canceled"
    ABORTED = "aborted"
    #: created but never launched
    EMPTY = "empty"
    IMPORTED = "imported"
    UNKNOWN = "unknown"


_STATUS_TABLE: dict[str, RemotePhase] = {
    "pending": RemotePhase.PENDING,
    "running": RemotePhase.RUNNING,
    "paused": RemotePhase.PAUSED,
    "pausing": RemotePhase.TRANSITIONING,
    "resuming": RemotePhase.TRANSITIONING,
    "stopping": RemotePhase.TRANSITIONING,
    "canceling": RemotePhase.TRANSITIONING,
    "processing": RemotePhase.TRANSITIONING,
    "completed": RemotePhase.COMPLETED,
    "canceled": RemotePhase.CANCELED,
    # a scan stopped by a user: same outcome as canceled (partial results exist)
    "stopped": RemotePhase.CANCELED,
    "aborted": RemotePhase.ABORTED,
    "imported": RemotePhase.IMPORTED,
    "empty": RemotePhase.EMPTY,
}

#: every raw status string with an explicit mapping (for tests and documentation)
KNOWN_STATUSES: frozenset[str] = frozenset(_STATUS_TABLE)

_TERMINAL = frozenset(
    {RemotePhase.COMPLETED, RemotePhase.CANCELED, RemotePhase.ABORTED, RemotePhase.IMPORTED}
)
# the same set today, kept apart because the two questions differ: "has it ended?" versus
# "is there a report to download?"
_EXPORTABLE = frozenset(
    {RemotePhase.COMPLETED, RemotePhase.CANCELED, RemotePhase.ABORTED, RemotePhase.IMPORTED}
)

_logged_unknown: set[str] = set()
_MAX_LOGGED_UNKNOWN = 100


def map_status(raw: str) -> RemotePhase:
    """Map a raw Nessus ``status`` string to a phase. Case and surrounding blanks are ignored;
    an unknown string gives ``UNKNOWN`` (logged once, as event ``unknown_scan_status``)."""
    phase = _STATUS_TABLE.get(raw.strip().lower())
    if phase is not None:
        return phase
    if raw not in _logged_unknown and len(_logged_unknown) < _MAX_LOGGED_UNKNOWN:
        _logged_unknown.add(raw)
        log.warning(
            "unknown Nessus scan status",
            extra={"event": "unknown_scan_status", "raw_status": raw[:64]},
        )
    return RemotePhase.UNKNOWN


def is_terminal(phase: RemotePhase) -> bool:
    """True when the remote scan has ended and will not change by itself."""
    return phase in _TERMINAL


def is_exportable(phase: RemotePhase) -> bool:
    """True when a report can be exported (for canceled and aborted scans: partial results)."""
    return phase in _EXPORTABLE
