"""Saved scan policies of one simulated scanner (``/policies``): what teams scan with instead
of a bare template. A saved policy is shown with the "custom" template uuid; a scan created from
it gives that uuid plus ``settings.policy_id``, as the Nessus UI does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from nessus_pool.simulator.state import NOT_FOUND, TEMPLATES, SimHTTPError

#: the template uuid Nessus lists for user-defined policies ("Custom Scan")
CUSTOM_POLICY_UUID = "ab4bacd2-05f6-425c-9d79-3ba3940ad1c24e51e1f403febe40"
COMPLIANCE_TEMPLATE = "compliance"


@dataclass
class Policy:
    id: int
    name: str
    #: the built-in template the policy was made from (basic, compliance, ...)
    base: str
    description: str
    created_ms: int
    settings: dict[str, Any] = field(default_factory=dict)
    owner: str = "nessus"

    @property
    def compliance(self) -> bool:
        return self.base == COMPLIANCE_TEMPLATE

    def summary(self) -> dict[str, Any]:
        """One row of ``GET /policies``."""
        return {
            "is_scap": 0,
            "has_credentials": 0,
            "no_target": "false",
            "plugin_filters": None,
            "template_uuid": CUSTOM_POLICY_UUID,
            "description": self.description or None,
            "name": self.name,
            "owner": self.owner,
            "visibility": "private",
            "shared": 0,
            "user_permissions": 128,
            "last_modification_date": self.created_ms // 1000,
            "creation_date": self.created_ms // 1000,
            "owner_id": 1,
            "id": self.id,
        }

    def details(self) -> dict[str, Any]:
        """``GET /policies/{id}``: the editor object a policy is edited through."""
        base_uuid = next(t[2] for t in TEMPLATES if t[0] == self.base)
        return {
            "uuid": base_uuid,
            "settings": {"name": self.name, "description": self.description, **self.settings},
            "audits": {"custom": {"add": []}, "feed": {"add": []}} if self.compliance else {},
            "credentials": {"add": {}, "edit": {}, "delete": []},
            "plugins": {},
            "scap": {},
        }


#: every simulated scanner starts with these (name, base template, description)
DEFAULT_POLICIES: tuple[tuple[str, str, str], ...] = (
    ("Tuned TCP ports", "advanced", "Full port range, no web application checks"),
    ("Linux CIS audit", "compliance", "CIS Ubuntu Linux benchmark, level 1"),
)


class PolicyBook:
    """Saved policies, keyed by id; ids continue the scanner's id sequence."""

    def __init__(self, ids: itertools.count[int], now_ms: int) -> None:
        self._ids = ids
        self.policies: dict[int, Policy] = {}
        for name, base, description in DEFAULT_POLICIES:
            self.add(name, base, description, now_ms)

    def add(self, name: str, base: str, description: str, now_ms: int) -> Policy:
        policy = Policy(
            id=next(self._ids), name=name, base=base, description=description, created_ms=now_ms
        )
        self.policies[policy.id] = policy
        return policy

    def get(self, policy_id: int) -> Policy:
        policy = self.policies.get(policy_id)
        if policy is None:
            raise SimHTTPError(404, NOT_FOUND)
        return policy

    def create(self, body: Any, now_ms: int) -> Policy:
        """``POST /policies``: ``{"uuid": <template uuid>, "settings": {"name": ...}}``."""
        if not isinstance(body, dict):
            raise SimHTTPError(400, "Invalid JSON body")
        template = next((t for t in TEMPLATES if t[2] == body.get("uuid")), None)
        if template is None:
            raise SimHTTPError(400, "Invalid 'uuid' field: template not found")
        settings = body.get("settings")
        if not isinstance(settings, dict):
            raise SimHTTPError(400, "Invalid 'settings' field: missing")
        name = settings.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SimHTTPError(400, "Invalid 'name' field: must not be empty")
        if any(p.name == name for p in self.policies.values()):
            raise SimHTTPError(409, f"A policy named '{name}' already exists")
        policy = self.add(name, template[0], str(settings.get("description") or ""), now_ms)
        policy.settings = {k: v for k, v in settings.items() if k not in ("name", "description")}
        return policy

    def copy(self, policy_id: int, now_ms: int) -> Policy:
        """``POST /policies/{id}/copy``: "Copy of <name>" (then "Copy of <name> (2)", ...)."""
        source = self.get(policy_id)
        taken = {p.name for p in self.policies.values()}
        name = f"Copy of {source.name}"
        for n in itertools.count(2):
            if name not in taken:
                break
            name = f"Copy of {source.name} ({n})"
        copied = self.add(name, source.base, source.description, now_ms)
        copied.settings = dict(source.settings)
        return copied

    def delete(self, policy_id: int) -> None:
        self.get(policy_id)
        del self.policies[policy_id]
