"""Submitting a scan: the request and reply Structs, request checks (names, priority,
credentials), the pool choice and idempotency keys."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import msgspec

from nessus_pool.config import Config, credential_unavailable
from nessus_pool.engine import Engine
from nessus_pool.errors import ConflictError, ValidationError
from nessus_pool.logs import hold_task_secrets
from nessus_pool.models import (
    INLINE_CREDENTIAL,
    Escalation,
    ScanType,
    SshCredential,
    Task,
)
from nessus_pool.service.ids import new_task_id
from nessus_pool.service.policies import effective_policy
from nessus_pool.service.scoping import Scoping
from nessus_pool.targets import OFFLOAD_CHARS, parse_targets, targets_size


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
    #: a saved Nessus policy by name (else the pool's default-policy, unless template is given)
    policy: str | None = None
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


def _hash_request(req: SubmitRequest, targets: list[str]) -> str:
    """The idempotency fingerprint covers what the caller sent (never secrets)."""
    fields = msgspec.structs.asdict(req)
    for secret in ("ssh_password", "escalation_password", "idempotency_key"):
        fields.pop(secret, None)
    fields["targets"] = targets
    return hashlib.sha256(msgspec.json.encode(fields, order="sorted")).hexdigest()


class Submitter:
    """``submit`` and what it needs: requests in flight per idempotency key."""

    def __init__(self, engine: Engine, config: Callable[[], Config], scoping: Scoping) -> None:
        self.engine = engine
        self._config = config
        self._scoping = scoping
        self._idem_inflight: dict[str, asyncio.Future[Task]] = {}

    async def submit(self, req: SubmitRequest, *, schedule_id: str | None = None) -> SubmitResult:
        """``schedule_id``: the schedule whose run this is (never taken from a request)."""
        cfg = self._config()
        # a maximal request (65,536 addresses) is ~1 s of parsing and scope checks: off the loop
        big = targets_size(req.targets) > OFFLOAD_CHARS
        limit = cfg.security.max_addresses_per_task
        targets = (
            await asyncio.to_thread(parse_targets, req.targets, max_addresses=limit)
            if big
            else parse_targets(req.targets, max_addresses=limit)
        )
        pool = await self._scoping.pick_pool(req.pool, targets, big=big)
        scanners = self.engine.pools[pool].scanners
        if req.scanner is not None and req.scanner not in scanners:
            raise ValidationError(
                f"scanner {req.scanner!r} is not in pool {pool!r}; its scanners: "
                f"{', '.join(sorted(scanners))}",
                field="scanner",
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
        credential, inline = _credentials(req, cfg)
        policy = effective_policy(self.engine, pool, req.policy, req.template, req.scanner)
        key = req.idempotency_key
        if key is None:
            task = self._new_task(req, pool, name, targets, credential, None, policy)
            task.schedule_id = schedule_id
            await self.engine.submit(task, inline)
            _hold_secrets(task, inline)
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
            task = self._new_task(req, pool, name, targets, credential, request_hash, policy)
            task.schedule_id = schedule_id
            await self.engine.submit(task, inline)
            _hold_secrets(task, inline)
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
        policy: str | None,
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
            policy=policy,
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


def _credentials(req: SubmitRequest, cfg: Config) -> tuple[str | None, SshCredential | None]:
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


def _hold_secrets(task: Task, inline: SshCredential | None) -> None:
    """Inline passwords are redacted from logs while their task lives: only once the
    task is accepted (a refused request registers nothing) and no longer (the engine
    drops them at the end; the reads' change hook releases them)."""
    if inline is not None:
        hold_task_secrets(task.task_id, [inline.password, inline.escalation_password])
