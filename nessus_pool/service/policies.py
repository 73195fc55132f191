"""Saved Nessus policies: which scanners have which (as their last probe listed them), the
policy a request gets (its own, else its pool's ``default-policy``) and the refusal of a policy
no scanner of the pool has."""

from __future__ import annotations

import msgspec

from nessus_pool.engine import Engine
from nessus_pool.errors import NotFoundError, ValidationError

_MAX_POLICY_CHARS = 200
#: a refusal names at most this many policies per scanner (a scanner may have hundreds)
_MAX_NAMED = 20


def _names(policies: frozenset[str] | None) -> str:
    if not policies:
        return "none"
    names = sorted(policies)
    shown = ", ".join(repr(n[:_MAX_POLICY_CHARS]) for n in names[:_MAX_NAMED])
    more = len(names) - _MAX_NAMED
    return shown + (f" and {more} more (see GET /api/v1/policies)" if more > 0 else "")


class ScannerPolicies(msgspec.Struct, kw_only=True):
    scanner: str
    #: None until a probe could list them (unreachable, or no right to read policies)
    policies: list[str] | None


class PoolPolicies(msgspec.Struct, kw_only=True):
    pool: str
    default_policy: str | None
    scanners: list[ScannerPolicies]


def list_policies(engine: Engine, pool: str | None = None) -> list[PoolPolicies]:
    """Per pool and scanner, the saved policies its last probe saw (sorted by name)."""
    if pool is not None and pool not in engine.pools:
        raise NotFoundError(f"no pool named {pool!r}", field="pool")
    out = []
    for name, state in engine.pools.items():
        if pool is not None and name != pool:
            continue
        out.append(
            PoolPolicies(
                pool=name,
                default_policy=state.config.default_policy,
                scanners=[
                    ScannerPolicies(
                        scanner=sid,
                        policies=None if h.slots.policies is None else sorted(h.slots.policies),
                    )
                    for sid, h in sorted(state.scanners.items())
                ],
            )
        )
    return out


def effective_policy(
    engine: Engine,
    pool: str,
    policy: str | None,
    template: str | None,
    scanner: str | None,
) -> str | None:
    """The saved policy a request scans with: its own ``policy``, else (when it names no
    template either) the pool's ``default-policy``. Refused (ValidationError, field
    ``policy``) when both policy and template are given, or when every scanner that could
    take the task has listed its policies and none has this one: the error names each
    scanner and the policies it does have. Scanners not probed yet give the benefit of the
    doubt; the task then waits for one that has the policy."""
    if policy is not None and template is not None:
        raise ValidationError(
            "give either policy (a saved policy) or template (a built-in template), not both",
            field="policy",
        )
    state = engine.pools[pool]
    if policy is None:
        policy = None if template is not None else state.config.default_policy
        if policy is None:
            return None
    elif not 1 <= len(policy) <= _MAX_POLICY_CHARS or not policy.strip():
        raise ValidationError(
            f"policy must be 1..{_MAX_POLICY_CHARS} characters, not blank", field="policy"
        )
    handles = [h for sid, h in sorted(state.scanners.items()) if scanner in (None, sid)]
    known = [(h.scanner_id, h.slots.policies) for h in handles]
    if any(p is None or policy in p for _, p in known):
        return policy
    have = "; ".join(f"{sid} has {_names(p)}" for sid, p in known)
    if scanner is not None:
        message = f"scanner {scanner!r} does not have the saved policy {policy!r}: {have}"
    elif not known:
        message = f"pool {pool!r} has no scanners, so none has the saved policy {policy!r}"
    else:
        message = f"no scanner of pool {pool!r} has the saved policy {policy!r}: {have}"
    raise ValidationError(message, field="policy")
