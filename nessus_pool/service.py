"""The one application API. The admin HTTP API and the MCP server both call these functions,
so a feature is written once and shows up in both. No HTTP or JSON-RPC here."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ipaddress
import random
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from nessus_pool.config import Config, PoolConfig, credential_unavailable
from nessus_pool.engine import Engine
from nessus_pool.errors import ConflictError, NotFoundError, ScopeError, ValidationError
from nessus_pool.logs import hold_task_secrets, release_task_secrets
from nessus_pool.models import (
    INLINE_CREDENTIAL,
    Escalation,
    ScanType,
    SshCredential,
    Task,
    TaskStatus,
)
from nessus_pool.queues import ScannerSlots
from nessus_pool.resolve import Resolver, resolve_hosts
from nessus_pool.results.parser import Finding
from nessus_pool.results.query import FindingsQuery, diff_findings, query_findings
from nessus_pool.scope import Scope
from nessus_pool.store import TaskFilter
from nessus_pool.targets import OFFLOAD_CHARS, parse_targets, targets_size

T = TypeVar("T")
TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
FINISHED_CACHE = 4096
MAX_PAGE_SIZE = 500
#: cursors are task sequence numbers: SQLite integers
_CURSOR = re.compile(r"[0-9]{1,19}")
_MAX_CURSOR = 2**63 - 1
#: a purge age beyond this (100 years) is a typo, not a policy
MAX_PURGE_AGE_S = 100 * 365 * 86400.0
#: what a scanner's message says until its first probe answers (see ScannerSlots)
_NOT_PROBED = ScannerSlots.message
_TASK_ID = re.compile(TASK_ID_PATTERN)
_finding_dec = msgspec.msgpack.Decoder(Finding)
_json_dec = msgspec.json.Decoder()


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    targets: str | list[str]
    name: str | None = None
    description: str = ""
    pool: str | None = None
    scanner: str | None = None
    scan_type: ScanType = ScanType.UNTRUSTED
    credential: str | None = None
    ssh_username: str | None = None
    ssh_password: str | None = None
    elevate_privileges_with: Escalation | None = None
    escalation_account: str | None = None
    escalation_password: str | None = None
    template: str | None = None
    priority: int = 0
    idempotency_key: str | None = None


class SubmitResult(msgspec.Struct, kw_only=True):
    task_id: str
    status: str
    pool: str
    scanner: str | None
    queue_position: int | None
    estimated_wait_s: float | None
    eta_basis: str
    created_at_ms: int
    duplicate: bool = False


class TaskView(msgspec.Struct, kw_only=True):
    task_id: str
    name: str
    status: str
    pool: str
    scanner: str | None
    scan_type: str
    targets: list[str]
    priority: int
    attempt: int
    credential: str | None
    queue_position: int | None = None
    estimated_wait_s: float | None = None
    eta_basis: str | None = None
    #: why a queued scan is not dispatched now (capacity_full, export_only, ...), else None
    waiting_reason: str | None = None
    progress_pct: int | None = None
    remote_scan_id: int | None = None
    remote_scan_name: str | None = None
    reason: str | None = None
    error: str | None = None
    dead_letter: bool = False
    authentication_status: str | None = None
    created_at_ms: int
    updated_at_ms: int
    dispatched_at_ms: int | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    export_available: bool = False
    results: dict[str, Any] | None = None


class TaskPage(msgspec.Struct, kw_only=True):
    tasks: list[TaskView]
    next_cursor: str | None


class ScannerView(msgspec.Struct, kw_only=True):
    id: str
    pool: str
    #: one word for tables: draining, disabled, probing (no probe answered yet), down,
    #: export-only or up; an operator's decision wins over health
    state: str
    url: str
    capacity: int
    active_scans: int
    enabled: bool
    draining: bool
    reachable: bool
    scan_api: bool
    export_only: bool
    version: str | None
    nessus_type: str | None
    message: str
    circuit_state: str


class PoolView(msgspec.Struct, kw_only=True):
    name: str
    capacity: int
    active: int
    utilisation: float
    queue_depth: int
    max_queued: int
    oldest_queued_age_s: float | None
    dlq_depth: int
    mean_scan_duration_s: float | None
    eta_basis: str
    scanners: list[ScannerView]
    #: why its queued scans are not dispatched now (see TaskView.waiting_reason), else None
    waiting_reason: str | None = None


class ReloadOutcome(msgspec.Struct, kw_only=True):
    applied: bool
    message: str
    changes: dict[str, list[str]] = {}
    warnings: list[str] = []


def _hash_request(req: SubmitRequest, targets: list[str]) -> str:
    """The idempotency fingerprint covers what the caller sent (never secrets)."""
    fields = msgspec.structs.asdict(req)
    for secret in ("ssh_password", "escalation_password", "idempotency_key"):
        fields.pop(secret, None)
    fields["targets"] = targets
    return hashlib.sha256(msgspec.json.encode(fields, order="sorted")).hexdigest()


_ids = random.Random(secrets.randbits(128))


def new_task_id() -> str:
    """64 random bits, hex. Task ids name things, they grant nothing (tokens do), so a
    generator seeded once from the OS is enough and avoids a syscall per submit."""
    return f"{_ids.getrandbits(64):016x}"


def check_task_id(task_id: str, field: str = "task_id") -> str:
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise ValidationError(f"{field} must match {TASK_ID_PATTERN}", field=field)
    return task_id


class Service:
    def __init__(
        self,
        engine: Engine,
        config: Callable[[], Config],
        reload: Callable[[], Awaitable[ReloadOutcome]] | None = None,
    ) -> None:
        self.engine = engine
        self._config = config
        self._reload = reload
        self._idem_inflight: dict[str, asyncio.Future[Task]] = {}
        self._scopes: dict[str, tuple[PoolConfig, bool, Scope]] = {}
        #: finished tasks with their results summary, most recently read last: status
        #: polling of finished scans (agents do a lot of it) never touches SQLite
        self._finished: collections.OrderedDict[str, tuple[Task, dict[str, Any] | None]] = (
            collections.OrderedDict()
        )
        engine.on_change.append(self._forget)
        self.resolver: Resolver = resolve_hosts
        engine.scope_check = self._scope_recheck

    async def _scope_recheck(self, t: Task) -> str | None:
        """At launch: hostnames are resolved again (DNS can change) and checked."""
        if t.pool not in self.engine.pools:
            return None
        scope = self.scope_for(t.pool)
        big = targets_size(t.targets) > OFFLOAD_CHARS
        hosts = await _off_loop(big, scope.needs_resolution, t.targets)
        resolved = await self.resolver(hosts) if hosts else {}
        return await _off_loop(big, _first_out_of_scope, scope, t.targets, resolved)

    @property
    def config(self) -> Config:
        return self._config()

    # --- scans ---------------------------------------------------------------------------

    async def submit(self, req: SubmitRequest) -> SubmitResult:
        cfg = self.config
        # a maximal request (65,536 addresses) is ~1 s of parsing and scope checks: off the loop
        big = targets_size(req.targets) > OFFLOAD_CHARS
        limit = cfg.security.max_addresses_per_task
        targets = (
            await asyncio.to_thread(parse_targets, req.targets, max_addresses=limit)
            if big
            else parse_targets(req.targets, max_addresses=limit)
        )
        pool = await self._pick_pool(req.pool, targets, big=big)
        if req.scanner is not None and req.scanner not in self.engine.pools[pool].scanners:
            raise ValidationError(
                f"scanner {req.scanner!r} is not in pool {pool!r}", field="scanner"
            )
        if not -100 <= req.priority <= 100:
            raise ValidationError("priority must be between -100 and 100", field="priority")
        name = (
            req.name or f"scan of {', '.join(targets[:3])}" + ("..." if len(targets) > 3 else "")
        ).strip()
        if len(name) > 200:
            raise ValidationError("name is longer than 200 characters", field="name")
        if len(req.description) > 2000:
            raise ValidationError("description is longer than 2000 characters", field="description")
        if req.idempotency_key is not None and not 1 <= len(req.idempotency_key) <= 200:
            raise ValidationError(
                "idempotency_key must be 1..200 characters", field="idempotency_key"
            )
        credential, inline = self._credentials(req, cfg)
        key = req.idempotency_key
        if key is None:
            task = self._new_task(req, pool, name, targets, credential, None)
            await self.engine.submit(task, inline)
            self._hold_secrets(task, inline)
            return self._submit_result(task)
        request_hash = _hash_request(req, targets)
        inflight = self._idem_inflight.get(key)
        if inflight is not None:
            return self._same_or_conflict(await asyncio.shield(inflight), request_hash)
        # registered before any await, so concurrent requests with this key wait for us
        fut: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._idem_inflight[key] = fut
        try:
            existing = await self._by_key(key)
            if existing is not None:
                fut.set_result(existing)
                return self._same_or_conflict(existing, request_hash)
            task = self._new_task(req, pool, name, targets, credential, request_hash)
            await self.engine.submit(task, inline)
            self._hold_secrets(task, inline)
            fut.set_result(task)
            return self._submit_result(task)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._idem_inflight.pop(key, None)

    def _new_task(
        self,
        req: SubmitRequest,
        pool: str,
        name: str,
        targets: list[str],
        credential: str | None,
        request_hash: str | None,
    ) -> Task:
        now = self.engine.clock.now_ms()
        return Task(
            task_id=new_task_id(),
            seq=self.engine.next_seq(),
            pool=pool,
            priority=req.priority,
            name=name,
            description=req.description,
            targets=targets,
            scan_type=req.scan_type,
            credential=credential,
            template=req.template,
            requested_scanner=req.scanner,
            idempotency_key=req.idempotency_key,
            request_hash=request_hash,
            created_at_ms=now,
            updated_at_ms=now,
        )

    async def _by_key(self, key: str) -> Task | None:
        for t in self.engine.tasks.values():
            if t.idempotency_key == key:
                return t
        return await self.engine.store.get_by_idempotency_key(key)

    def _same_or_conflict(self, existing: Task, request_hash: str) -> SubmitResult:
        if existing.request_hash != request_hash:
            raise ConflictError(
                f"idempotency_key was already used for task {existing.task_id} with a "
                "different request; use a new key or send the same request",
                field="idempotency_key",
            )
        result = self._submit_result(existing)
        result.duplicate = True
        return result

    def scope_for(self, pool: str) -> Scope:
        """The pool's scope, built once per pool config (a reload makes a new one)."""
        state = self.engine.pools[pool]
        real = any(not sc.spec.simulated for sc in state.scanners.values())
        mandatory = self.config.security.require_scope and real
        cached = self._scopes.get(pool)
        if cached is not None and cached[0] is state.config and cached[1] == mandatory:
            return cached[2]
        scope = Scope(
            state.config.allowed_targets, state.config.denied_targets, mandatory=mandatory
        )
        self._scopes[pool] = (state.config, mandatory, scope)
        return scope

    async def _pick_pool(
        self, requested: str | None, targets: list[str], *, big: bool = False
    ) -> str:
        """The requested pool if its scope allows every target; without one, the pool whose
        scope covers all targets most narrowly (config order breaks ties). ``big``: check
        in a thread, the work grows with the targets."""
        pools = list(self.engine.pools)
        if requested is not None and requested not in self.engine.pools:
            raise ValidationError(
                f"pool {requested!r} does not exist (pools: {', '.join(pools) or 'none'})",
                field="pool",
            )
        if not pools:
            raise ValidationError("no pool is configured", field="pool")
        names = [requested] if requested is not None else pools
        scopes = {name: self.scope_for(name) for name in names}
        if all(sc.open for sc in scopes.values()):
            return names[0]  # no pool restricts anything: nothing to check or rank
        hosts = await _off_loop(big, _hosts_to_resolve, list(scopes.values()), targets)
        resolved = await self.resolver(hosts) if hosts else {}
        return await _off_loop(big, _rank_pools, requested, names, scopes, targets, resolved)

    def _credentials(
        self, req: SubmitRequest, cfg: Config
    ) -> tuple[str | None, SshCredential | None]:
        inline_given = any(
            v is not None
            for v in (
                req.ssh_username,
                req.ssh_password,
                req.escalation_account,
                req.escalation_password,
            )
        )
        if not req.scan_type.is_authenticated:
            if inline_given or req.credential is not None:
                raise ValidationError(
                    "credentials were given for an untrusted scan; use scan_type 'authenticated'",
                    field="scan_type",
                )
            return None, None
        if req.credential is not None:
            if inline_given:
                raise ValidationError(
                    "give either credential or ssh_username/ssh_password, not both",
                    field="credential",
                )
            if req.credential not in cfg.credentials:
                raise ValidationError(
                    f"credential {req.credential!r} is not configured (configured: "
                    f"{', '.join(sorted(cfg.credentials)) or 'none'})",
                    field="credential",
                )
            # known now, so refused now: not a dead letter when the scan is dispatched
            unavailable = credential_unavailable(cfg, req.credential)
            if unavailable is not None:
                raise ValidationError(
                    f"credential {req.credential!r} cannot be used: {unavailable.message} "
                    f"(at {unavailable.path} in the daemon's config)",
                    field="credential",
                )
            return req.credential, None
        if not inline_given:
            raise ValidationError(
                "an authenticated scan needs credential (a configured "
                "credential set) or ssh_username and ssh_password",
                field="credential",
            )
        if not cfg.security.allow_inline_credentials:
            raise ValidationError(
                "inline credentials are disabled by configuration; use a named credential set",
                field="ssh_password",
            )
        if not req.ssh_username or not req.ssh_password:
            raise ValidationError(
                "ssh_username and ssh_password are both required",
                field="ssh_password" if req.ssh_username else "ssh_username",
            )
        escalation = req.elevate_privileges_with or Escalation.NOTHING
        if req.scan_type is ScanType.AUTHENTICATED_PRIVILEGED and escalation is Escalation.NOTHING:
            escalation = Escalation.SUDO
        return INLINE_CREDENTIAL, SshCredential(
            username=req.ssh_username,
            password=req.ssh_password,
            elevate_privileges_with=escalation,
            escalation_account=req.escalation_account,
            escalation_password=req.escalation_password,
        )

    def _submit_result(self, t: Task) -> SubmitResult:
        eta, basis = self.engine.estimated_wait_s(t)
        return SubmitResult(
            task_id=t.task_id,
            status=t.status.value,
            pool=t.pool,
            scanner=t.scanner_id,
            queue_position=self.engine.queue_position(t),
            estimated_wait_s=eta,
            eta_basis=basis,
            created_at_ms=t.created_at_ms,
        )

    async def _task(self, task_id: str) -> Task:
        check_task_id(task_id)
        t = self.engine.tasks.get(task_id)
        if t is not None:
            return t
        cached = self._finished.get(task_id)
        if cached is not None:
            self._finished.move_to_end(task_id)
            return cached[0]
        t = await self.engine.store.get_task(task_id)
        if t is None:
            raise NotFoundError(f"task {task_id!r} not found", field="task_id")
        return t

    def _forget(self, task_id: str) -> None:
        self._finished.pop(task_id, None)
        if task_id not in self.engine.tasks:  # it has ended
            release_task_secrets(task_id)

    @staticmethod
    def _hold_secrets(task: Task, inline: SshCredential | None) -> None:
        """Inline passwords are redacted from logs while their task lives: only once the
        task is accepted (a refused request registers nothing) and no longer (the engine
        drops them at the end; the change hook above releases them)."""
        if inline is not None:
            hold_task_secrets(task.task_id, [inline.password, inline.escalation_password])

    def view(self, t: Task, results: dict[str, Any] | None = None) -> TaskView:
        eta, basis = (
            self.engine.estimated_wait_s(t) if t.status is TaskStatus.QUEUED else (None, None)
        )
        return TaskView(
            task_id=t.task_id,
            name=t.name,
            status=t.status.value,
            pool=t.pool,
            scanner=t.scanner_id,
            scan_type=t.scan_type.value,
            targets=t.targets,
            priority=t.priority,
            attempt=t.attempt,
            credential=t.credential,
            queue_position=self.engine.queue_position(t),
            estimated_wait_s=eta,
            eta_basis=basis,
            waiting_reason=self.engine.waiting_reason(t),
            progress_pct=t.progress_pct,
            remote_scan_id=t.remote_scan_id,
            remote_scan_name=t.remote_scan_name,
            reason=t.reason,
            error=t.error,
            dead_letter=t.dead_letter,
            authentication_status=t.authentication_status,
            created_at_ms=t.created_at_ms,
            updated_at_ms=t.updated_at_ms,
            dispatched_at_ms=t.dispatched_at_ms,
            started_at_ms=t.started_at_ms,
            finished_at_ms=t.finished_at_ms,
            export_available=t.export_path is not None,
            results=results,
        )

    async def get_task(self, task_id: str, *, with_results: bool = True) -> TaskView:
        t = await self._task(task_id)
        if not (with_results and t.status.is_terminal):
            return self.view(t)
        cached = self._finished.get(task_id)
        if cached is not None:
            return self.view(cached[0], cached[1])
        results = None
        blob = await self.engine.store.get_results(task_id)
        if blob is not None:
            full = _json_dec.decode(blob)
            hosts = full.get("hosts", [])
            results = {
                "summary": full.get("summary"),
                "validation": full.get("validation"),
                "hosts": hosts[:50],
                "hosts_total": len(hosts),
            }
        if task_id not in self.engine.tasks:
            # a finished task changes only through the engine, which tells us (_forget)
            self._finished[task_id] = (t, results)
            if len(self._finished) > FINISHED_CACHE:
                self._finished.popitem(last=False)
        return self.view(t, results)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        pool: str | None = None,
        target: str | None = None,
        created_from_ms: int | None = None,
        created_to_ms: int | None = None,
        dead_letter: bool | None = None,
        page_size: int = 50,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first. ``limit`` is the older name of ``page_size``
        (MCP's ``list_tasks`` still says ``limit``)."""
        field = "page_size" if limit is None else "limit"
        limit = page_size if limit is None else limit
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValidationError(f"{field} must be 1..{MAX_PAGE_SIZE}", field=field)
        statuses = None
        if status:
            statuses = [s.strip() for s in status.split(",") if s.strip()]
            bad = [s for s in statuses if s not in TaskStatus.__members__.values()]
            if bad:
                raise ValidationError(
                    f"unknown status {bad[0]!r} (one of {', '.join(s.value for s in TaskStatus)})",
                    field="status",
                )
        before = _cursor(cursor)
        match = _target_matcher(target)
        out: list[Task] = []
        while len(out) < limit:
            batch = await self.engine.store.list_tasks(
                TaskFilter(
                    statuses=statuses,
                    pool=pool,
                    dead_letter=dead_letter,
                    created_from_ms=created_from_ms,
                    created_to_ms=created_to_ms,
                    before_seq=before,
                ),
                limit=limit if match is None else 500,
            )
            if not batch:
                break
            for t in batch:
                live = self.engine.tasks.get(t.task_id, t)
                if match is None or match(live):
                    out.append(live)
                    if len(out) == limit:
                        break
            before = batch[-1].seq if len(out) < limit else out[-1].seq
            if len(batch) < (limit if match is None else 500):
                break
        more = len(out) == limit
        return TaskPage(
            tasks=[self.view(t) for t in out],
            next_cursor=str(out[-1].seq) if more and out else None,
        )

    async def cancel(self, task_id: str) -> TaskView:
        """A queued task ends ``canceled`` at once; a dispatched one is stopped on its
        scanner, so the reply says ``cancelling`` until the engine has done so."""
        t = await self._task(task_id)
        if t.status.is_terminal:
            raise ConflictError(f"task {task_id} already ended ({t.status.value})", field="task_id")
        view = self.view(await self.engine.cancel(task_id))
        if view.status not in TERMINAL_STATUSES:
            view.status = "cancelling"
        return view

    def on_task_change(self, hook: Callable[[str], None]) -> Callable[[], None]:
        """Call ``hook(task_id)`` on every task change (submit, status, progress), on the
        loop, without awaiting: it must only record the id. Returns the function that
        removes the hook (MCP subscriptions use this instead of polling)."""
        hooks = self.engine.on_change
        hooks.append(hook)

        def stop() -> None:
            if hook in hooks:
                hooks.remove(hook)

        return stop

    async def wait_for(
        self,
        task_id: str,
        timeout_s: float,
        on_progress: Callable[[TaskView], Awaitable[None]] | None = None,
    ) -> TaskView:
        """Wait (bounded) for the task to end, reporting each change."""
        t = await self._task(task_id)
        deadline = self.engine.clock.monotonic_s() + max(0.0, timeout_s)
        while not t.status.is_terminal:
            left = deadline - self.engine.clock.monotonic_s()
            if left <= 0:
                break
            await self.engine.wait_change(task_id, left)
            t = await self._task(task_id)
            if on_progress is not None and not t.status.is_terminal:
                await on_progress(self.view(t))
        return await self.get_task(task_id)

    # --- results -------------------------------------------------------------------------

    async def findings(self, task_id: str) -> list[Finding]:
        t = await self._task(task_id)
        if not t.status.is_terminal:
            raise ConflictError(
                f"task {task_id} is {t.status.value}; results exist once it has ended"
            )
        blobs = await self.engine.store.get_findings_blobs(task_id)
        return [_finding_dec.decode(b) for b in blobs]

    async def results(self, task_id: str, query: FindingsQuery) -> dict[str, Any]:
        page = query_findings(await self.findings(task_id), query)
        return msgspec.to_builtins(page)  # type: ignore[no-any-return]

    async def export_path(self, task_id: str) -> str:
        t = await self._task(task_id)
        if t.export_path is None:
            raise NotFoundError(
                f"task {task_id} has no export (status {t.status.value})", field="task_id"
            )
        return t.export_path

    async def compare(self, task_id: str, base_task_id: str | None = None) -> dict[str, Any]:
        t = await self._task(task_id)
        if base_task_id is None:
            base = await self._previous_same_targets(t)
            if base is None:
                raise NotFoundError(
                    f"no earlier completed scan of the same targets as {task_id}; pass "
                    "base_task_id (CLI: --base)",
                    field="base_task_id",
                )
            base_task_id = base.task_id
        new = await self.findings(task_id)
        old = await self.findings(base_task_id)
        diff = msgspec.to_builtins(diff_findings(old, new))
        return {"task_id": task_id, "base_task_id": base_task_id, "diff": diff}

    async def _previous_same_targets(self, t: Task) -> Task | None:
        before = t.seq
        for _ in range(20):
            batch = await self.engine.store.list_tasks(
                TaskFilter(
                    statuses=["completed", "failed", "timed_out"], pool=t.pool, before_seq=before
                ),
                limit=200,
            )
            for cand in batch:
                if sorted(cand.targets) == sorted(t.targets) and cand.export_path:
                    return cand
            if len(batch) < 200:
                return None
            before = batch[-1].seq
        return None

    # --- pools and scanners --------------------------------------------------------------

    def scanner_views(self, pool: str | None = None) -> list[ScannerView]:
        out = []
        for sc in self.engine.scanners.values():
            if pool is not None and sc.spec.pool != pool:
                continue
            s = sc.slots
            out.append(
                ScannerView(
                    id=sc.scanner_id,
                    pool=sc.spec.pool,
                    state=scanner_state(s),
                    url=sc.spec.url,
                    capacity=s.capacity,
                    active_scans=len(s.active),
                    enabled=s.enabled,
                    draining=s.draining or s.removed,
                    reachable=s.reachable,
                    scan_api=s.scan_api,
                    export_only=s.reachable and not s.scan_api,
                    version=s.version,
                    nessus_type=s.nessus_type,
                    message=s.message,
                    circuit_state=sc.circuit_state,
                )
            )
        return out

    async def pool_views(self) -> list[PoolView]:
        return [await self.pool_view(name) for name in self.engine.pools]

    async def pool_view(self, name: str) -> PoolView:
        pool = self.engine.pools.get(name)
        if pool is None:
            raise NotFoundError(f"pool {name!r} not found", field="pool")
        oldest = None
        seq = pool.queue.oldest_seq()
        if seq is not None:
            head = next((t for t in self.engine.tasks.values() if t.seq == seq), None)
            if head is not None:
                oldest = max(0.0, (self.engine.clock.now_ms() - head.created_at_ms) / 1000)
        mean = pool.mean_duration_s()
        cap = pool.capacity
        return PoolView(
            name=name,
            capacity=cap,
            active=pool.active,
            utilisation=round(pool.active / cap, 3) if cap else 0.0,
            queue_depth=len(pool.queue),
            max_queued=pool.config.max_queued,
            oldest_queued_age_s=oldest,
            dlq_depth=self.engine.dlq_counts.get(name, 0),
            mean_scan_duration_s=mean,
            eta_basis=(
                f"mean of the last {len(pool.durations_s)} completed scans"
                if mean is not None
                else "default duration (no completed scan yet)"
            ),
            scanners=self.scanner_views(name),
            waiting_reason=self.engine.pool_waiting_reason(name),
        )

    def set_scanner_enabled(self, scanner_id: str, enabled: bool) -> ScannerView:
        self.engine.set_scanner_enabled(scanner_id, enabled)
        return next(v for v in self.scanner_views() if v.id == scanner_id)

    # --- dead-letter queue ---------------------------------------------------------------

    async def dlq_list(
        self, *, pool: str | None = None, page_size: int = 50, cursor: str | None = None
    ) -> TaskPage:
        return await self.list_tasks(
            pool=pool, dead_letter=True, page_size=page_size, cursor=cursor
        )

    async def dlq_get(self, task_id: str) -> dict[str, Any]:
        t = await self._task(task_id)
        if not t.dead_letter:
            raise NotFoundError(f"task {task_id} is not in the dead-letter queue", field="task_id")
        events = await self.engine.store.events(task_id)
        return {**msgspec.to_builtins(self.view(t)), "events": msgspec.to_builtins(events)}

    async def dlq_retry(self, task_id: str) -> TaskView:
        """A fresh attempt that really runs: the task goes back to its pool's queue with its
        attempt count reset and its dead-letter mark cleared."""
        t = await self._task(task_id)
        if not t.dead_letter:
            raise ConflictError(
                f"task {task_id} is not in the dead-letter queue (status {t.status.value})",
                field="task_id",
            )
        if t.pool not in self.engine.pools:
            raise ConflictError(f"pool {t.pool!r} no longer exists")
        await self.engine.revive(t)
        return self.view(t)

    async def dlq_purge(
        self,
        *,
        task_ids: list[str] | None = None,
        pool: str | None = None,
        older_than_s: float | None = None,
        confirm: bool = False,
    ) -> dict[str, Any]:
        """Delete dead letters by id, or in bulk by pool and/or age. A bulk purge without
        ``confirm`` is a dry run that lists what it would delete."""
        if task_ids:
            for tid in task_ids:
                check_task_id(tid, "task_ids")
            victims = [
                t
                for t in [await self.engine.store.get_task(i) for i in task_ids]
                if t is not None and t.dead_letter
            ]
            dry = False
        else:
            if pool is None and older_than_s is None:
                raise ValidationError("give task_ids, pool or older_than_s", field="task_ids")
            if older_than_s is not None and not 0 <= older_than_s <= MAX_PURGE_AGE_S:
                raise ValidationError(
                    f"older_than_s must be 0..{MAX_PURGE_AGE_S:.0f} seconds",
                    field="older_than_s",
                )
            cutoff = (
                None
                if older_than_s is None
                else (self.engine.clock.now_ms() - int(older_than_s * 1000))
            )
            victims = await self.engine.store.list_tasks(
                TaskFilter(pool=pool, dead_letter=True, finished_before_ms=cutoff), limit=100_000
            )
            dry = not confirm
        ids = [t.task_id for t in victims]
        if not dry:
            await self.engine.purge(victims)
        return {"purged": 0 if dry else len(ids), "task_ids": ids, "dry_run": dry}

    async def reload(self) -> ReloadOutcome:
        if self._reload is None:
            raise ConflictError("reload is not available here")
        return await self._reload()


TERMINAL_STATUSES = frozenset(s.value for s in TaskStatus if s.is_terminal)


def _cursor(cursor: str | None) -> int | None:
    """A list cursor is the ``next_cursor`` of the previous page: a task sequence number."""
    if not cursor:
        return None
    if not _CURSOR.fullmatch(cursor) or int(cursor) > _MAX_CURSOR:
        raise ValidationError(
            "cursor is not valid: pass the next_cursor of the previous page", field="cursor"
        )
    return int(cursor)


def scanner_state(s: ScannerSlots) -> str:
    """One word for a scanner: an operator's decision first (``draining``, ``disabled``),
    then health: ``probing`` until its first probe answers, ``down``, ``export-only``
    (the licence forbids the scan API) or ``up``."""
    if s.draining or s.removed:
        return "draining"
    if not s.enabled:
        return "disabled"
    if not s.reachable:
        return "probing" if s.message == _NOT_PROBED and s.version is None else "down"
    return "up" if s.scan_api else "export-only"


def _target_matcher(target: str | None) -> Callable[[Task], bool] | None:
    if not target:
        return None
    try:
        net = ipaddress.ip_network(target, strict=False)
    except ValueError:
        needle = target.lower()
        return lambda t: any(needle in x.lower() for x in t.targets)

    def match(t: Task) -> bool:
        for x in t.targets:
            try:
                if ipaddress.ip_network(x.split("-")[0], strict=False).overlaps(net):
                    return True
            except (ValueError, TypeError):
                continue
        return False

    return match


def _rank_pools(
    requested: str | None,
    names: list[str],
    scopes: dict[str, Scope],
    targets: list[str],
    resolved: dict[str, list[str]],
) -> str:
    """The narrowest pool of ``names`` whose scope allows every target (pure CPU work that
    grows with the targets: a thread may run it)."""
    best: tuple[float, int, str] | None = None
    first_error: ScopeError | None = None
    for i, name in enumerate(names):
        try:
            scopes[name].check(targets, resolved)
        except ScopeError as exc:
            first_error = first_error or exc
            continue
        key = (scopes[name].breadth(targets, resolved), i, name)
        best = key if best is None or key < best else best
    if best is None:
        assert first_error is not None
        if requested is not None:
            raise first_error
        raise ScopeError(f"no pool may scan these targets: {first_error}", field=first_error.field)
    return best[2]


async def _off_loop(big: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, in a thread when ``big`` (work that grows with a request's targets
    must not stall the event loop: 65,536 addresses take about a second)."""
    return await asyncio.to_thread(fn, *args) if big else fn(*args)


def _hosts_to_resolve(scopes: list[Scope], targets: list[str]) -> list[str]:
    return sorted({h for sc in scopes for h in sc.needs_resolution(targets)})


def _first_out_of_scope(
    scope: Scope, targets: list[str], resolved: dict[str, list[str]]
) -> str | None:
    for target in targets:
        reason = scope.why_not(target, resolved)
        if reason is not None:
            return reason
    return None
