"""The lifecycle of one dispatched task on one scanner.

Every step is persisted before the remote call that depends on it: the deterministic scan
name before create, the remote id before launch. So a crash at any point is recovered by
looking the scan up by id or by name, and a scan is never created twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from nessus_pool.clock import Clock
from nessus_pool.engine.gate import CallPriority
from nessus_pool.engine.outcome import Finished, Outcome, Requeued, Stop, outcome_of
from nessus_pool.engine.state import TransitionError
from nessus_pool.engine.windows import (
    Switch,
    drop_switch,
    stopped_for_window,
    switch_step,
    window_paused_s,
)
from nessus_pool.errors import (
    RemoteNotFoundError,
    ScanApiUnavailableError,
    ScannerError,
    StorageError,
)
from nessus_pool.models import ScanSpec, SshCredential, Task, TaskStatus
from nessus_pool.nessus import ExportResult, RemotePhase, is_terminal
from nessus_pool.retry import RetryPolicy

if TYPE_CHECKING:
    from nessus_pool.engine.pool import PoolState
    from nessus_pool.engine.scanner import ScannerHandle

T = TypeVar("T")

log = logging.getLogger("nessus_pool.engine")


#: a re-attached task whose scan died with the embedded simulator: it runs again
LOST_IN_RESTART = Requeued(
    "simulator_restarted",
    use_attempt=False,
    error="the embedded simulator restarted with the daemon and its scans are gone; "
    "the scan runs again from the start (no attempt used)",
)


def remote_scan_name(task_id: str, attempt: int) -> str:
    return f"nessus-pool-{task_id}-a{attempt}"


def exported(t: Task, dest: Path) -> bool:
    """The "exported" checkpoint of this attempt is stored: its export file, digest and
    authentication verdict are known and its findings committed."""
    return (
        t.status is TaskStatus.EXPORTING
        and t.export_sha256 is not None
        and t.export_path == str(dest)
        and t.authentication_status is not None
    )


def exported_outcome(t: Task, status: TaskStatus, reason: str) -> Finished:
    """The end of a task whose results are stored (its "exported" checkpoint): ``status``
    and ``reason``, except that a completed authenticated scan whose authentication failed
    ends failed. Pure: recovery uses it too when the scanner is gone."""
    auth_failed = t.scan_type.is_authenticated and t.authentication_status == "failed"
    if auth_failed and status is TaskStatus.COMPLETED:
        return Finished(
            TaskStatus.FAILED,
            "authentication_failed",
            "the scan ran but authentication failed on at least one host; "
            "see validation.troubleshooting",
        )
    return Finished(status, reason)


class RunnerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Engine-wide settings a runner reads (replaced as a whole on reload)."""

    max_export_bytes: int = 2 * 1024**3
    #: delete our own scans on the scanner once their export is downloaded
    delete_remote_scans: bool = False


class RunnerHost(Protocol):
    """What a runner needs from the engine: the state owner's operations, the clock and a
    few hooks. The engine implements it; the runner never sees the rest of the engine."""

    clock: Clock
    recovery_gate: asyncio.Semaphore
    settings: RunnerSettings
    scope_check: Callable[[Task], Awaitable[str | None]] | None

    def change(
        self,
        t: Task,
        to: TaskStatus,
        event: str,
        *,
        ev_reason: str | None = None,
        ev_detail: str | None = None,
        **fields: Any,
    ) -> asyncio.Future[None]: ...
    def owns(self, t: Task) -> bool: ...
    async def finish(
        self,
        t: Task,
        status: TaskStatus,
        reason: str,
        error: str | None = None,
        *,
        dead_letter: bool = False,
    ) -> None: ...
    async def requeue(
        self, t: Task, reason: str, *, use_attempt: bool = True, error: str | None = None
    ) -> None: ...
    def critical(self) -> AbstractContextManager[None]: ...
    def credential_for(self, t: Task) -> SshCredential | None: ...
    def export_path(self, t: Task) -> Path: ...
    async def ingest_results(self, t: Task) -> bool: ...
    def on_launched(self, t: Task) -> None: ...
    def on_status(self, t: Task) -> None: ...
    def on_progress(self, t: Task, progress_pct: int | None, hosts: int) -> None: ...
    def on_internal_error(self, t: Task) -> None: ...


@dataclass
class RunControl:
    """How the outside world talks to a running task."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    #: a pause or resume to carry out (engine.windows), and a window's "stop"
    switch: Switch | None = None
    window_stop: bool = False


class TaskRunner:
    def __init__(
        self,
        engine: RunnerHost,
        pool: PoolState,
        task: Task,
        sc: ScannerHandle,
        control: RunControl,
        *,
        fresh: bool = False,
        written: asyncio.Future[None] | None = None,
    ) -> None:
        self.e = engine
        self.pool = pool
        self.task = task
        self.sc = sc
        self.control = control
        #: dispatched by this process with a new attempt number: no scan of that name can
        #: exist yet, so the look-ups that recovery needs are skipped
        self.fresh = fresh
        #: a re-attached runner makes its first scanner call through the engine's recovery
        #: gate: thousands of them after a restart then reach the scanners (and the event
        #: loop) a bounded number at a time instead of as one burst
        self._first_call_gate: asyncio.Semaphore | None = None if fresh else engine.recovery_gate
        #: the "created" commit, left in flight while the scan is launched
        self._created_write: asyncio.Future[None] | None = None
        #: the "dispatching" commit (queued by the dispatcher): awaited before any remote
        #: call, since recovery finds the scan by the name it stores
        self._written = written
        #: our own stop for max-scan-duration was sent (measured once, monotonic)
        self.duration_stop = False

    async def _call(
        self,
        op: Callable[[], Awaitable[T]],
        policy: RetryPolicy,
        *,
        idempotent: bool = True,
        what: str = "",
        priority: CallPriority = CallPriority.LAUNCH,
    ) -> T:
        gate, self._first_call_gate = self._first_call_gate, None
        wake = self.control.wake
        if gate is None:
            return await self.sc.call(
                op, policy, idempotent=idempotent, what=what, interrupt=wake, priority=priority
            )
        async with gate:
            return await self.sc.call(
                op, policy, idempotent=idempotent, what=what, interrupt=wake, priority=priority
            )

    @property
    def policy(self) -> RetryPolicy:
        return self.pool.retry

    async def run(self) -> None:
        t = self.task
        try:
            if self._written is not None:
                written, self._written = self._written, None
                await written
            outcome = await self._lifecycle()
        except Exception as exc:  # mapped by ERROR_OUTCOMES, including our own bugs
            outcome = LOST_IN_RESTART if self._lost_in_restart(exc) else outcome_of(exc)
            self._noted(exc, outcome)
        drop_switch(self.control)
        if isinstance(outcome, Requeued) and self.control.cancel_requested:
            # canceled while a step failed: the user asked for an end, not another attempt
            outcome = Finished(TaskStatus.CANCELED, "canceled_by_user")
            if t.status is TaskStatus.DISPATCHING and t.remote_scan_id is not None:
                try:
                    await self._delete_remote(t.remote_scan_id)  # created, never launched
                except Exception as exc:  # the cancel stands whatever the scanner says
                    self._noted(exc, Requeued("internal_error"))
        if t.status.is_terminal or not self.e.owns(t):
            return  # it ended (or was taken over) before the error: nothing to undo
        if isinstance(outcome, Finished):
            await self.e.finish(
                t, outcome.status, outcome.reason, outcome.error, dead_letter=outcome.dead_letter
            )
        else:
            await self.e.requeue(
                t, outcome.reason, use_attempt=outcome.use_attempt, error=outcome.error
            )

    def _lost_in_restart(self, exc: Exception) -> bool:
        """The embedded simulator lives and dies with this process: after a restart every
        scan it ran is gone (a 404 at the re-attach, whatever step the task was in). That
        is no fault of the scan, so it must not use an attempt; a real scanner's vanished
        scan still does (someone deleted it: bounded by max-attempts)."""
        if self.fresh or not self.sc.spec.simulated:
            return False
        if isinstance(exc, RemoteNotFoundError):
            return True
        return isinstance(exc, Stop) and exc.outcome.reason == "remote_scan_disappeared"

    def _noted(self, exc: Exception, outcome: Outcome) -> None:
        """What the scanner or the engine must remember about a step that raised."""
        if isinstance(exc, ScanApiUnavailableError):
            self.sc.slots.scan_api = False
            self.sc.slots.message = exc.message
        elif outcome.reason == "internal_error":
            # say RecursionError from a scanner's deeply nested JSON: the slot is freed and
            # the task requeued (attempt-bounded) instead of left running on a lost slot
            log.error(
                "task runner failed",
                exc_info=exc,
                extra={
                    "event": "task_internal_error",
                    "task_id": self.task.task_id,
                    "scanner": self.sc.scanner_id,
                    "error": type(exc).__name__,
                },
            )
            self.e.on_internal_error(self.task)

    # --- steps -------------------------------------------------------------------------

    async def _lifecycle(self) -> Outcome:
        t = self.task
        if t.status is TaskStatus.DISPATCHING and t.remote_scan_id is None:
            await self._create()
        launched_now = False
        if t.status is TaskStatus.DISPATCHING:
            try:
                await self._launch()
            finally:
                created, self._created_write = self._created_write, None
                if created is not None:
                    await created
            # launched by us a moment ago (a recovered one may have ended long since)
            launched_now = self.fresh
        if t.status is TaskStatus.RUNNING or t.status is TaskStatus.PAUSED:
            phase = await self._watch(nap_first=launched_now)
            return await self._after_scan(phase)
        if t.status is TaskStatus.EXPORTING:
            return await self._export_and_finish(TaskStatus.COMPLETED, "completed")
        raise TransitionError(f"task {t.task_id}: a runner cannot start from {t.status.value}")

    async def _create(self) -> None:
        t = self.task
        assert t.remote_scan_name is not None
        existing = None if self.fresh else await self._find_by_name(t.remote_scan_name)
        if existing is None:
            if self.control.cancel_requested:
                raise Stop(Finished(TaskStatus.CANCELED, "canceled_by_user"))
            if self.e.scope_check is not None:
                reason = await self.e.scope_check(t)
                if reason is not None:
                    raise Stop(Finished(TaskStatus.FAILED, "out_of_scope_at_launch", reason))
            cred = self._credential()
            spec = ScanSpec(
                name=t.remote_scan_name,
                targets=t.targets,
                description=t.description,
                template=t.template or self.pool.config.template,
                folder_id=self.sc.spec.folder_id,
                remote_scanner_id=self.sc.spec.remote_scanner_id,
                credential=cred,
                policy=t.policy,
            )
            existing = await self._create_once(spec)
        written = self.e.change(
            t, t.status, "created", ev_detail=f"remote_scan_id={existing}", remote_scan_id=existing
        )
        if self.fresh:
            # The launch need not wait for this commit: after a crash in between, recovery
            # finds the scan by its name (stored with "dispatching") and asks the scanner
            # whether it was launched. One commit less between a free slot and a launch.
            self._created_write = written
        else:
            await written

    def _credential(self) -> SshCredential | None:
        t = self.task
        if not t.scan_type.is_authenticated:
            return None
        cred = self.e.credential_for(t)
        if cred is None:
            raise Stop(
                Finished(
                    TaskStatus.FAILED,
                    "inline_credentials_lost",
                    "the inline SSH credentials were held in memory only and were lost "
                    "in a restart before the scan was created; submit the scan again "
                    "(or use a named credential set)",
                )
            )
        return cred

    async def _find_by_name(self, name: str) -> int | None:
        found = await self._call(
            lambda: self.sc.client.find_scans_by_name(name), self.policy, what="find_scans_by_name"
        )
        if not found:
            return None
        if len(found) > 1:
            log.warning(
                "duplicate remote scans",
                extra={
                    "event": "remote_scan_duplicates",
                    "task_id": self.task.task_id,
                    "scanner": self.sc.scanner_id,
                    "count": len(found),
                },
            )
        return min(s.id for s in found)

    async def _create_once(self, spec: ScanSpec) -> int:
        """Create, never twice: after a transient failure look the name up before trying
        again, since the scanner may have created it before the connection broke."""
        attempt = 0
        while True:
            attempt += 1
            try:
                remote = await self._call(
                    lambda: self.sc.client.create_scan(spec),
                    self.policy,
                    idempotent=False,
                    what="create_scan",
                )
                return remote.id
            except ScannerError as exc:
                if not exc.transient:
                    raise
                found = await self._find_by_name(spec.name)
                if found is not None:
                    return found
                if not self.policy.should_retry(exc, attempt):
                    raise
                await self._nap(self.policy.wait_s(exc, attempt, self.sc.rng))
                if self.control.cancel_requested:  # nothing was created: nothing to undo
                    raise Stop(Finished(TaskStatus.CANCELED, "canceled_by_user")) from None

    async def _launch(self) -> None:
        t = self.task
        assert t.remote_scan_id is not None
        scan_id = t.remote_scan_id
        if self.fresh:  # we created it a moment ago and have not launched it
            phase = RemotePhase.EMPTY
        else:
            details = await self._call(
                lambda: self.sc.client.scan_details(scan_id), self.policy, what="scan_details"
            )
            phase = details.phase
        if self.control.cancel_requested:
            await self._delete_remote(scan_id)
            raise Stop(Finished(TaskStatus.CANCELED, "canceled_by_user"))
        if phase is RemotePhase.EMPTY:
            try:
                t.remote_scan_uuid = await self._call(
                    lambda: self.sc.client.launch_scan(scan_id),
                    self.policy,
                    idempotent=False,
                    what="launch_scan",
                )
            except ScannerError as exc:
                if not exc.transient:
                    raise
                again = await self._call(
                    lambda: self.sc.client.scan_details(scan_id), self.policy, what="scan_details"
                )
                if again.phase is RemotePhase.EMPTY:
                    raise
        await self.e.change(
            t, TaskStatus.RUNNING, "running", started_at_ms=t.started_at_ms or self.e.clock.now_ms()
        )
        self.e.on_launched(t)

    async def _delete_remote(self, scan_id: int) -> None:
        try:
            await self._call(
                lambda: self.sc.client.delete_scan(scan_id), self.policy, what="delete_scan"
            )
        except ScannerError:
            log.warning(
                "could not delete remote scan",
                extra={
                    "event": "remote_delete_failed",
                    "task_id": self.task.task_id,
                    "scanner": self.sc.scanner_id,
                },
            )

    async def _nap(self, delay_s: float) -> None:
        """Sleep on the engine clock, waking early if the task is poked (cancel)."""
        if self.control.wake.is_set():
            self.control.wake.clear()
            return
        sleeper = asyncio.ensure_future(self.e.clock.sleep(delay_s))
        waiter = asyncio.ensure_future(self.control.wake.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
        self.control.wake.clear()

    async def _watch(self, *, nap_first: bool = False) -> RemotePhase:
        """Poll until the remote scan ends; handle cancel, max duration, lost scanner.
        ``nap_first``: the scan was launched a moment ago, so the first poll waits an
        interval (asking at once only tells us it is running: one request per scan saved).

        The first wait is 0.5-1.5 intervals (at random), the others one interval: scans
        launched together (a wave refilling freed slots, or re-attached after a restart) are
        then polled spread over the interval instead of all in the same instant, and their
        ends are noticed (and exported) spread out as well."""
        phased = False
        if nap_first:
            await self._nap(self._first_interval_s())
            phased = True
        t = self.task
        assert t.remote_scan_id is not None
        scan_id = t.remote_scan_id
        cfg = self.pool.config
        started_s = self.e.clock.monotonic_s() - max(
            0, (self.e.clock.now_ms() - (t.started_at_ms or self.e.clock.now_ms())) / 1000
        )
        last_ok_s = self.e.clock.monotonic_s()
        stop_sent = False
        while True:
            now_s = self.e.clock.monotonic_s()
            paused_s = window_paused_s(t, self.e.clock.now_ms())
            if now_s - started_s - paused_s >= cfg.max_scan_duration_s:
                self.duration_stop = True
            if self.control.switch is not None:
                await switch_step(self, scan_id)
            want_stop = self.control.cancel_requested or self.duration_stop
            if want_stop and not stop_sent:
                try:
                    await self._call(
                        lambda: self.sc.client.stop_scan(scan_id), self.policy, what="stop_scan"
                    )
                    stop_sent = True
                except RemoteNotFoundError:
                    pass
                except ScannerError as exc:
                    if not exc.transient:
                        raise
            try:
                d = await self._call(
                    lambda: self.sc.client.scan_details(scan_id),
                    self.policy,
                    what="scan_details",
                    priority=CallPriority.POLL,
                )
            except RemoteNotFoundError:
                if self.control.cancel_requested:
                    raise Stop(Finished(TaskStatus.CANCELED, "canceled_by_user")) from None
                raise Stop(Requeued("remote_scan_disappeared")) from None
            except ScannerError as exc:
                if not exc.transient:
                    raise
                if self.e.clock.monotonic_s() - last_ok_s >= self.pool.scanner_lost_after_s:
                    raise Stop(
                        Finished(TaskStatus.FAILED, "scanner_lost", str(exc), dead_letter=True)
                    ) from None
                await self._nap(self.pool.config.poll_interval_s)
                continue
            last_ok_s = self.e.clock.monotonic_s()
            self.e.on_progress(t, d.progress_pct, len(d.hosts))
            if is_terminal(d.phase):
                return d.phase
            interval_s = self.pool.config.poll_interval_s
            await self._nap(interval_s if phased else self._first_interval_s())
            phased = True

    def _first_interval_s(self) -> float:
        return self.pool.config.poll_interval_s * (0.5 + self.sc.rng.random())

    async def _after_scan(self, phase: RemotePhase) -> Outcome:
        if self.control.cancel_requested:
            return Finished(TaskStatus.CANCELED, "canceled_by_user")
        if phase is RemotePhase.COMPLETED or phase is RemotePhase.IMPORTED:
            return await self._export_and_finish(TaskStatus.COMPLETED, "completed")
        if self.duration_stop:  # our own stop, decided on the monotonic clock in _watch
            return await self._export_and_finish(TaskStatus.TIMED_OUT, "max_scan_duration")
        if stopped_for_window(self, phase):  # a maintenance window's "stop": again after it
            self.task.attempt_base += 1  # a new scan name, but no attempt used
            return Requeued("maintenance_window", error="stopped by a maintenance window")
        if phase is RemotePhase.CANCELED:
            return Finished(
                TaskStatus.CANCELED,
                "stopped_on_scanner",
                "the scan was stopped on the scanner by someone else",
            )
        return Requeued("scan_aborted")

    async def _export(self, scan_id: int, dest: Path) -> ExportResult:
        """The scan has ended on the scanner: keep trying (with backoff) until the pool's
        export deadline, then dead-letter. A brief outage must not lose a finished scan."""
        deadline_s = self.pool.export_deadline_s
        # one deadline for the whole export, however many tries it takes (the client checks
        # it on the same clock: each retry gets what is left, never a fresh deadline). It
        # starts when the first try gets one of the scanner's export slots: a wave of
        # finished scans waiting for those is not the scanner failing to export.
        deadline_at_s = self.e.clock.monotonic_s() + deadline_s
        started = False

        def export() -> Awaitable[ExportResult]:
            nonlocal deadline_at_s, started
            if not started:
                started = True
                deadline_at_s = self.e.clock.monotonic_s() + deadline_s
            return self.sc.client.export_scan(
                scan_id,
                dest,
                deadline_s=deadline_s,
                deadline_at_s=deadline_at_s,
                max_bytes=self.e.settings.max_export_bytes,
                poll_interval_s=min(2.0, self.pool.config.poll_interval_s),
            )

        tries = 0
        full_disk: StorageError | None = None  # our side failed: say so, whatever ends it
        while True:
            tries += 1
            try:
                return await self._call(
                    export, self.policy, what="export_scan", priority=CallPriority.EXPORT
                )
            except (ScannerError, StorageError) as exc:
                # a full disk (StorageError) is as passing as a flaky scanner: the finished
                # scan waits on the scanner until space returns or the deadline passes
                if isinstance(exc, ScannerError) and not exc.transient:
                    raise
                if isinstance(exc, StorageError):
                    full_disk = exc
                if self.control.cancel_requested:
                    raise Stop(Finished(TaskStatus.CANCELED, "canceled_by_user")) from None
                if self.e.clock.monotonic_s() >= deadline_at_s:
                    reason = "export_failed" if full_disk is None else "export_storage_failed"
                    raise Stop(
                        Finished(
                            TaskStatus.FAILED,
                            reason,
                            f"{full_disk or exc} (still failing after {deadline_s:g}s)",
                            dead_letter=True,
                        )
                    ) from None
                wait_s = self.policy.wait_s(exc, tries, self.sc.rng)
                await self._nap(min(wait_s, max(0.0, deadline_at_s - self.e.clock.monotonic_s())))

    async def _export_and_finish(self, status: TaskStatus, reason: str) -> Outcome:
        t = self.task
        if t.status is not TaskStatus.EXPORTING:
            # the reason says which end it is (completed or max_scan_duration), so a
            # restart while exporting ends it the same way
            await self.e.change(t, TaskStatus.EXPORTING, "exporting", reason=reason)
            self.e.on_status(t)
        elif t.reason == "max_scan_duration":
            status, reason = TaskStatus.TIMED_OUT, "max_scan_duration"
        assert t.remote_scan_id is not None
        scan_id = t.remote_scan_id
        dest = self.e.export_path(t)
        with self.e.critical():
            return await self._export_ingest_finish(status, reason, scan_id, dest)

    async def _export_ingest_finish(
        self, status: TaskStatus, reason: str, scan_id: int, dest: Path
    ) -> Outcome:
        t = self.task
        # with the checkpoint from before a restart, findings and results are stored and
        # the remote scan may be gone already: nothing to download
        if not exported(t, dest):
            res = await self._export(scan_id, dest)
            t.export_path = str(Path(res.path))
            t.export_sha256 = res.sha256
            t.export_bytes = res.size_bytes
            await self.e.ingest_results(t)
            # the "exported" checkpoint is durable before the remote scan can be deleted: a
            # crash in between must not turn a finished scan into a 404 on restart
            await self.e.change(
                t, TaskStatus.EXPORTING, "exported", ev_detail=f"sha256={res.sha256}"
            )
            self.e.on_status(t)
        if self.e.settings.delete_remote_scans:
            # only ever the scan this task created, by the id stored when it was created
            await self._delete_remote(scan_id)
        return exported_outcome(t, status, reason)
