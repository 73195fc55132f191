"""What a task runner's step leads to: the outcome types and the one pure table from an
exception to an outcome (instead of an except ladder in the runner)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nessus_pool.errors import (
    NessusPoolError,
    PermanentScannerError,
    ResultsError,
    ScanApiUnavailableError,
    ScannerError,
)
from nessus_pool.models import TaskStatus


@dataclass(frozen=True)
class Finished:
    """Outcome: the task ends in ``status``."""

    status: TaskStatus
    reason: str
    error: str | None = None
    dead_letter: bool = False


@dataclass(frozen=True)
class Requeued:
    """Outcome: the task goes back to its pool's queue (optionally using up an attempt)."""

    reason: str
    use_attempt: bool = True
    error: str | None = None


Outcome = Finished | Requeued


class Stop(Exception):
    """Leave the lifecycle early with ``outcome`` (a cancel or a lost scan found deep in a
    step); the normal end of a step is a returned outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def _unexpected(exc: BaseException) -> Outcome:
    return Requeued("internal_error", error=f"{type(exc).__name__}: {exc}"[:500])


#: what a step that raised leads to; the first row whose type matches wins (so subclasses
#: come before their bases). Anything unexpected is requeued as ``internal_error``.
ERROR_OUTCOMES: tuple[tuple[type[BaseException], Callable[[Any], Outcome]], ...] = (
    (Stop, lambda e: e.outcome),
    (ScanApiUnavailableError, lambda e: Requeued("scanner_export_only", use_attempt=False)),
    (
        PermanentScannerError,
        lambda e: Finished(TaskStatus.FAILED, "scanner_refused", str(e), dead_letter=True),
    ),
    (ScannerError, lambda e: Requeued(f"scanner_error: {e.code}", error=str(e))),
    (
        ResultsError,
        lambda e: Finished(TaskStatus.FAILED, "results_unreadable", str(e), dead_letter=True),
    ),
    (NessusPoolError, lambda e: Finished(TaskStatus.FAILED, e.code, str(e), dead_letter=True)),
    (Exception, _unexpected),
)


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome of a lifecycle step that raised ``exc`` (pure: no side effects)."""
    for kind, make in ERROR_OUTCOMES:
        if isinstance(exc, kind):
            return make(exc)
    return _unexpected(exc)
