"""MCP prompts (triage, authentication troubleshooting, comparison, planning) and
``completion/complete`` for their arguments and the resource templates' variables.

Prompts embed what they talk about as resources (the scan report, the first findings page,
the comparison), read through the same service calls as the tools. Nothing secret goes in:
credential sets appear by name only, and only to admin tokens (read-only tokens cannot use
them). Completions are bounded (``MAX_VALUES``) and scoped by the caller's role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from nessus_pool.api.mcp.compare import compare_result
from nessus_pool.api.mcp.resources import ScanResources
from nessus_pool.api.mcp.schemas import CompareArgs
from nessus_pool.api.mcp.tools import ResourceNotFoundError, ResourceParamsError
from nessus_pool.errors import NessusPoolError, ValidationError
from nessus_pool.models import ScanType
from nessus_pool.service import check_task_id

if TYPE_CHECKING:
    from nessus_pool.service import Service

_enc = msgspec.json.Encoder()
#: the spec caps one completion reply at 100 values
MAX_VALUES: Final = 100
#: how many recent tasks a task-id completion looks through
TASK_SCAN_LIMIT: Final = 500
SEVERITIES: Final = ("info", "low", "medium", "high", "critical")
SCAN_TYPES: Final = tuple(t.value for t in ScanType)


class PromptError(Exception):
    """An unknown prompt or a bad argument (JSON-RPC -32602); names the field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _arg(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "description": description, "required": required}


_TASK = "A scan task_id (completion lists recent ones, newest first)."
PROMPTS: Final[list[dict[str, Any]]] = [
    {
        "name": "triage_scan",
        "title": "Triage a scan",
        "description": "Findings worth acting on in a finished scan, worst first, with the fix "
        "for each; embeds the scan report and the first findings page.",
        "arguments": [
            _arg("task_id", _TASK, True),
            _arg("min_severity", f"Lowest severity to consider: {', '.join(SEVERITIES)}."),
        ],
    },
    {
        "name": "troubleshoot_authentication",
        "title": "Troubleshoot scan authentication",
        "description": "Why an authenticated scan could not log in (or only partly), and what to "
        "change; embeds the scan report with its authentication verdicts.",
        "arguments": [_arg("task_id", _TASK, True)],
    },
    {
        "name": "compare_with_previous",
        "title": "Compare with the previous scan",
        "description": "New, fixed and changed findings against the previous scan of the same "
        "targets (or a given base scan); embeds the comparison.",
        "arguments": [
            _arg("task_id", _TASK, True),
            _arg("base_task_id", "The scan to compare against; default: the previous one."),
        ],
    },
    {
        "name": "plan_scan",
        "title": "Plan a scan",
        "description": "Choose pool, credential set and scan type for some targets, then submit "
        "with run_untrusted_scan or run_authenticated_scan.",
        "arguments": [
            _arg("targets", "IPs, CIDRs or hostnames, comma-separated.", True),
            _arg("pool", "A pool name to prefer."),
            _arg("scan_type", f"One of {', '.join(SCAN_TYPES)}."),
            _arg("credential", "A credential set name to prefer (admin tokens)."),
        ],
    },
]
_BY_NAME: Final = {p["name"]: p for p in PROMPTS}


def _text(text: str) -> dict[str, Any]:
    return {"role": "user", "content": {"type": "text", "text": text}}


def _embedded(contents: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": {"type": "resource", "resource": contents}}


class Prompts:
    """``prompts/list``, ``prompts/get`` and ``completion/complete``; calls the service only."""

    def __init__(self, svc: Service, resources: ScanResources) -> None:
        self.svc = svc
        self.resources = resources

    def definitions(self) -> list[dict[str, Any]]:
        return PROMPTS

    async def get(self, name: Any, arguments: Any, role: str) -> dict[str, Any]:
        if not isinstance(name, str) or name not in _BY_NAME:
            shown = name[:60] if isinstance(name, str) else name
            raise PromptError(f"unknown prompt {shown!r}; available: {', '.join(_BY_NAME)}", "name")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict) or not all(
            isinstance(v, str) for v in arguments.values()
        ):
            raise PromptError("params.arguments must be an object of strings", "arguments")
        spec = _BY_NAME[name]
        known = {a["name"] for a in spec["arguments"]}
        for key in arguments:
            if key not in known:
                raise PromptError(
                    f"{name}: unknown argument {key[:60]!r}; accepted: {', '.join(sorted(known))}",
                    f"arguments.{key[:60]}",
                )
        for a in spec["arguments"]:
            if a["required"] and not arguments.get(a["name"]):
                raise PromptError(f"{name}: argument {a['name']} is required", a["name"])
        args = {k: v.strip()[:4096] for k, v in arguments.items()}
        build = getattr(self, f"_{name}")
        messages: list[dict[str, Any]] = await build(args, role)
        return {"description": spec["description"], "messages": messages}

    async def _read(self, uri: str, field: str) -> dict[str, Any]:
        task_id = uri.split("/")[3]
        try:
            check_task_id(task_id, field)
        except ValidationError as exc:
            raise PromptError(str(exc), field) from None
        try:
            return (await self.resources.read(uri))[0]
        except (ResourceNotFoundError, ResourceParamsError) as exc:
            raise PromptError(f"{field}: {exc}", field) from None

    async def _triage_scan(self, a: dict[str, str], role: str) -> list[dict[str, Any]]:
        tid = a["task_id"]
        floor = a.get("min_severity") or "low"
        if floor not in SEVERITIES:
            raise PromptError(
                f"min_severity must be one of {', '.join(SEVERITIES)}", "min_severity"
            )
        report = await self._read(f"nessus-pool://scans/{tid}/report", "task_id")
        findings = await self._read(f"nessus-pool://scans/{tid}/findings", "task_id")
        return [
            _text(
                f"Triage Nessus scan {tid}. From the embedded report and findings, list the "
                f"findings at severity {floor} or above that are worth acting on, worst first. "
                "For each: host, plugin and name, why it matters here, and the concrete fix "
                "(the solution field). Group hosts that share a fix. If the findings page says "
                f"there are more, fetch them with get_scan_results(task_id={tid!r}, "
                f'schema_profile="brief"). Say which results the authentication status makes '
                "incomplete."
            ),
            _embedded(report),
            _embedded(findings),
        ]

    async def _troubleshoot_authentication(
        self, a: dict[str, str], role: str
    ) -> list[dict[str, Any]]:
        tid = a["task_id"]
        report = await self._read(f"nessus-pool://scans/{tid}/report", "task_id")
        return [
            _text(
                f"Scan {tid} was meant to log in to its targets. Using the embedded report "
                "(authentication_status, hosts_by_authentication_status, troubleshooting and "
                "validation_warnings), explain per host whether the login worked, the most "
                "likely cause when it did not (wrong credential set, account locked or expired, "
                "sudo/escalation refused, SSH not reachable, host key), and the one change to "
                "make before resubmitting. Do not ask for passwords: credential sets are "
                "configured on the server by name."
            ),
            _embedded(report),
        ]

    async def _compare_with_previous(self, a: dict[str, str], role: str) -> list[dict[str, Any]]:
        tid = a["task_id"]
        base = a.get("base_task_id") or None
        try:
            diff = await compare_result(self.svc, CompareArgs(task_id=tid, base_task_id=base))
        except NessusPoolError as exc:
            field = getattr(exc, "field", None) or "task_id"
            raise PromptError(f"{field}: {exc}", field) from None
        uri = f"nessus-pool://scans/{tid}/report"
        comparison = {
            "uri": uri.replace("/report", "/comparison"),
            "mimeType": "application/json",
            "text": _enc.encode(diff).decode(),
        }
        return [
            _text(
                f"Compare scan {tid} with "
                + (f"scan {base}" if base else "the previous scan of the same targets")
                + ". From the embedded comparison, summarise what is new (worst first), what was "
                "fixed, and what changed severity; call out new high or critical findings and "
                "hosts that appeared or disappeared. It lists the worst few of each section "
                "(its note says how many were left out); compare_scans with page or "
                "min_severity gives the rest."
            ),
            _embedded(comparison),
        ]

    async def _plan_scan(self, a: dict[str, str], role: str) -> list[dict[str, Any]]:
        scan_type = a.get("scan_type") or ""
        if scan_type and scan_type not in SCAN_TYPES:
            raise PromptError(f"scan_type must be one of {', '.join(SCAN_TYPES)}", "scan_type")
        pools = []
        for v in await self.svc.pool_views():
            pools.append(
                {
                    "pool": v.name,
                    "capacity": v.capacity,
                    "active": v.active,
                    "queue_depth": v.queue_depth,
                }
            )
        wanted = a.get("pool")
        if wanted and wanted not in {p["pool"] for p in pools}:
            raise PromptError(f"pool {wanted[:60]!r} is not configured", "pool")
        plan: dict[str, Any] = {"targets": a["targets"], "pools": pools, "scan_types": SCAN_TYPES}
        credential = a.get("credential")
        if role == "admin":
            plan["credential_sets"] = sorted(self.svc.config.credentials)
            if credential and credential not in self.svc.config.credentials:
                raise PromptError(f"credential {credential[:60]!r} is not configured", "credential")
        elif credential:
            raise PromptError("credential sets are for admin tokens", "credential")
        context = {
            "uri": "nessus-pool://plan/context",
            "mimeType": "application/json",
            "text": _enc.encode(plan).decode(),
        }
        submit = (
            "This token is read-only: describe the plan; an operator with an admin token submits."
            if role != "admin"
            else "Then submit it with run_untrusted_scan or run_authenticated_scan (credential="
            "the set's name; never inline passwords when a set fits)."
        )
        return [
            _text(
                f"Plan a Nessus scan of: {a['targets']}. Using the embedded pools (capacity, "
                "load, queue) and credential sets, pick the pool whose scope covers the targets "
                f"({'prefer ' + wanted if wanted else 'least loaded first'}), the scan type "
                f"({scan_type or 'untrusted unless a credential set fits the targets'}) and the "
                f"credential set ({credential or 'if any'}), and say why. {submit}"
            ),
            _embedded(context),
        ]

    # --- completion/complete -------------------------------------------------------------------

    async def complete(self, ref: Any, argument: Any, role: str) -> dict[str, Any]:
        if not isinstance(ref, dict) or ref.get("type") not in ("ref/prompt", "ref/resource"):
            raise PromptError("params.ref must be a ref/prompt or ref/resource object", "ref")
        if not (
            isinstance(argument, dict)
            and isinstance(argument.get("name"), str)
            and isinstance(argument.get("value"), str)
        ):
            raise PromptError("params.argument needs string name and value", "argument")
        name, prefix = argument["name"], argument["value"][:256]
        if ref["type"] == "ref/prompt":
            prompt = _BY_NAME.get(str(ref.get("name")))
            if prompt is None:
                raise PromptError("params.ref.name is not a prompt of this server", "ref.name")
            if name not in {a["name"] for a in prompt["arguments"]}:
                raise PromptError(f"{prompt['name']} has no argument {name[:60]!r}", "argument")
        else:
            uri = ref.get("uri")
            templates = {t["uriTemplate"] for t in self.resources.templates()}
            if uri not in templates:
                raise PromptError("params.ref.uri is not a resource template here", "ref.uri")
            if name != "task_id":
                raise PromptError(f"the template has no variable {name[:60]!r}", "argument")
        values = await self._values(name, prefix, role)
        shown = values[:MAX_VALUES]
        return {
            "completion": {
                "values": shown,
                "total": len(values),
                "hasMore": len(values) > MAX_VALUES,
            }
        }

    async def _values(self, name: str, prefix: str, role: str) -> list[str]:
        if name in ("task_id", "base_task_id"):
            return await self._task_ids(prefix)
        if name == "pool":
            options: list[str] = [p.name for p in self.svc.config.pools]
        elif name == "credential":
            options = sorted(self.svc.config.credentials) if role == "admin" else []
        elif name == "scan_type":
            options = list(SCAN_TYPES)
        elif name == "min_severity":
            options = list(SEVERITIES)
        else:
            options = []
        return [o for o in options if o.startswith(prefix)]

    async def _task_ids(self, prefix: str) -> list[str]:
        """Task ids starting with ``prefix``, newest first, from the latest
        ``TASK_SCAN_LIMIT`` tasks (one bounded walk of the store's pages)."""
        out: list[str] = []
        cursor = None
        seen = 0
        while seen < TASK_SCAN_LIMIT:
            page = await self.svc.list_tasks(page_size=100, cursor=cursor)
            seen += len(page.tasks)
            out.extend(v.task_id for v in page.tasks if v.task_id.startswith(prefix))
            if page.next_cursor is None or len(out) > MAX_VALUES:
                break
            cursor = page.next_cursor
        return out
