"""The task lifecycle as a table: which status may follow which. Pure, no I/O.

Every status change of a task goes through :func:`check_transition` (the engine's
``_change``). A change not in :data:`ALLOWED` is a bug in nessus-pool, never user input: it is
logged and refused, so memory and disk can never be moved into a state the design rules out
(for example a cancel's write landing after a task's final row).

A step that keeps the status (``created``, ``cancel_requested``, the ``exported`` checkpoint)
is a transition to the same status and is allowed only while the task is unfinished.
"""

from __future__ import annotations

from typing import Any

from nessus_pool.errors import NessusPoolError
from nessus_pool.models import Task, TaskEvent, TaskStatus
from nessus_pool.store import Op, op_event, op_save_task

_Q = TaskStatus.QUEUED
_D = TaskStatus.DISPATCHING
_R = TaskStatus.RUNNING
_P = TaskStatus.PAUSED
_E = TaskStatus.EXPORTING
_OK = TaskStatus.COMPLETED
_F = TaskStatus.FAILED
_C = TaskStatus.CANCELED
_T = TaskStatus.TIMED_OUT

#: from -> the statuses it may change to
ALLOWED: dict[TaskStatus, frozenset[TaskStatus]] = {
    # submitted (queued -> queued is the first "queued" row); dispatched; canceled while
    # waiting; failed unstarted (pool removed, restart)
    _Q: frozenset({_Q, _D, _C, _F}),
    # created/launched, requeued (scanner error, export-only), canceled before launch,
    # refused by the scanner or out of scope at launch
    _D: frozenset({_D, _R, _Q, _C, _F}),
    # the scan ended (export next), was aborted (requeue), canceled, lost; paused on the
    # scanner (by a person or a maintenance window)
    _R: frozenset({_R, _P, _E, _Q, _C, _F, _T}),
    # resumed; everything a running scan may do (stopped: canceled, timed out or requeued
    # by a window's "stop"; lost; ended while paused, resumed on the scanner by hand)
    _P: frozenset({_P, _R, _E, _Q, _C, _F, _T}),
    # exported (checkpoint), ingested; canceled while the export was retried; requeued
    # when the scan to export died with the embedded simulator in a restart
    _E: frozenset({_E, _OK, _T, _C, _F, _Q}),
    # ended for good; only a dead letter (always failed) gets a fresh start
    _OK: frozenset(),
    _F: frozenset({_Q}),
    _C: frozenset(),
    _T: frozenset(),
}


class TransitionError(NessusPoolError):
    """A task status change that the lifecycle does not allow (a bug in nessus-pool)."""

    code = "internal_error"


def check_transition(
    task_id: str, old: TaskStatus, new: TaskStatus, *, dead_letter: bool = False
) -> None:
    """Raise :class:`TransitionError` unless ``old -> new`` is in :data:`ALLOWED`
    (``failed -> queued`` only for a dead letter)."""
    if new in ALLOWED[old] and (old is not _F or dead_letter):
        return
    raise TransitionError(
        f"task {task_id}: {old.value} -> {new.value} is not an allowed transition",
        task_id=task_id,
        old=old.value,
        new=new.value,
    )


def transition(
    t: Task,
    to: TaskStatus,
    event: str,
    now_ms: int,
    *,
    ev_reason: str | None = None,
    ev_detail: str | None = None,
    checked: bool = False,
    **fields: Any,
) -> list[Op]:
    """Apply one lifecycle step to ``t`` (synchronously: ``fields``, then ``status`` and
    ``updated_at_ms``) and return the store operations that record it: the task row and an
    event row named ``event``. Raises :class:`TransitionError` (before touching ``t``) unless
    the change is allowed; ``checked`` when the caller has just checked it."""
    if not checked:
        check_transition(t.task_id, t.status, to, dead_letter=t.dead_letter)
    for name, value in fields.items():
        setattr(t, name, value)
    t.status = to
    t.updated_at_ms = now_ms
    return [
        op_save_task(t),
        op_event(
            TaskEvent(
                task_id=t.task_id, at_ms=now_ms, status=event, reason=ev_reason, detail=ev_detail
            )
        ),
    ]
