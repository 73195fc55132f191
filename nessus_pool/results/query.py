"""Findings queries (filter, sort, page, field profiles), JSON-NL output and scan diffs:
pure functions over ``list[Finding]``."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Collection
from typing import Any, Literal

import msgspec

from nessus_pool.errors import ValidationError
from nessus_pool.results.types import SEVERITY_BY_NAME, SEVERITY_NAMES, Finding, cwe_number

Predicate = Callable[[Finding], bool]
Profile = Literal["minimal", "summary", "brief", "full", "custom"]
Sort = Literal["severity", "cvss3", "host", "plugin_id", "port"]

ALL_FIELDS: tuple[str, ...] = Finding.__struct_fields__
PROFILES: dict[str, tuple[str, ...]] = {
    "minimal": ("host", "port", "severity", "plugin_id", "plugin_name"),
    "summary": (
        "host", "port", "protocol", "severity", "plugin_id", "plugin_name", "plugin_family",
        "cvss3_base_score", "cves", "cwes", "exploit_available",
    ),
    "brief": (
        "host", "port", "protocol", "severity", "plugin_id", "plugin_name", "plugin_family",
        "cvss3_base_score", "cves", "cwes", "exploit_available", "synopsis", "solution",
    ),
    "full": ALL_FIELDS,
}  # fmt: skip
MAX_PAGE_SIZE = 500


def severity_value(value: int | str, field: str = "min_severity") -> int:
    """0..4 from an int or a name (critical, high, medium, low, info)."""
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be 0-4 or a severity name", field=field)
    if isinstance(value, int):
        if 0 <= value <= 4:
            return value
    elif value.strip().isascii() and value.strip().isdigit():
        return severity_value(int(value.strip()), field)
    elif value.strip().lower() in SEVERITY_BY_NAME:
        return SEVERITY_BY_NAME[value.strip().lower()]
    names = ", ".join(SEVERITY_NAMES.values())
    raise ValidationError(f"{field} must be 0-4 or one of {names}; got {value!r}", field=field)


class FindingsQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A findings filter; every given criterion must hold. ``host`` matches a host name or
    FQDN exactly (case-insensitive; a Web App Scanning host is a URL such as
    ``http://google.com/``), an IP exactly, or a CIDR by containment, never a substring.
    Invalid values raise :class:`nessus_pool.errors.ValidationError` with ``field`` set."""

    min_severity: int | str | None = None
    severities: list[int | str] | None = None
    min_cvss3: float | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None
    plugin_id: int | None = None
    plugin_family: str | None = None
    cve: str | None = None
    #: a CWE id: 79, "79" or "CWE-79" (matches findings whose ``cwes`` hold it)
    cwe: int | str | None = None
    exploit_available: bool | None = None
    text: str | None = None
    sort: Sort = "severity"
    page: int = 1
    page_size: int = 50
    profile: Profile = "summary"
    fields: list[str] | None = None

    def __post_init__(self) -> None:
        if self.min_severity is not None:
            self.min_severity = severity_value(self.min_severity)
        if self.severities is not None:
            self.severities = sorted({severity_value(s, "severities") for s in self.severities})
        if self.min_cvss3 is not None and not 0.0 <= self.min_cvss3 <= 10.0:
            raise ValidationError("min_cvss3 must be between 0 and 10", field="min_cvss3")
        if self.cwe is not None:
            cwe = None if isinstance(self.cwe, bool) else cwe_number(str(self.cwe))
            if cwe is None:
                raise ValidationError(
                    f"cwe must be a CWE id such as 79 or CWE-79; got {self.cwe!r}", field="cwe"
                )
            self.cwe = cwe
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValidationError("port must be 0-65535", field="port")
        if self.page < 1:
            raise ValidationError("page must be >= 1", field="page")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValidationError(f"page_size must be 1-{MAX_PAGE_SIZE}", field="page_size")
        if self.host is not None:
            _host_matcher(self.host)  # validates a CIDR early
        if self.profile == "custom":
            if not self.fields:
                raise ValidationError("profile 'custom' needs fields", field="fields")
            unknown = [f for f in self.fields if f not in ALL_FIELDS]
            if unknown:
                raise ValidationError(
                    f"unknown {'field' if len(unknown) == 1 else 'fields'} "
                    f"{', '.join(unknown)}; known: {', '.join(ALL_FIELDS)}",
                    field="fields",
                )
        elif self.fields is not None:
            raise ValidationError("fields is only allowed with profile 'custom'", field="fields")

    @property
    def field_list(self) -> tuple[str, ...]:
        return tuple(self.fields or ()) if self.profile == "custom" else PROFILES[self.profile]


_FIELD_IN_ERROR = re.compile(r"at `\$\.([A-Za-z_]+)|unknown field `([A-Za-z_]+)`")


def parse_query(raw: dict[str, Any]) -> FindingsQuery:
    """A query from JSON-like input; type errors become ValidationError with the field."""
    try:
        return msgspec.convert(raw, FindingsQuery)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = _FIELD_IN_ERROR.search(msg)
        field = (m.group(1) or m.group(2)) if m else None
        raise ValidationError(msg, field=field) from exc


class FindingsPage(msgspec.Struct, kw_only=True):
    items: list[dict[str, Any]]
    total: int
    page: int
    page_size: int
    pages: int
    has_more: bool
    profile: str
    fields: list[str]


#: what a CIDR's address part looks like; anything else with a "/" (a Web App Scanning
#: host such as ``http://google.com/``) is a host name
_CIDR_ADDRESS = re.compile(r"^(?:[0-9.]+|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*)$")


def _host_matcher(spec: str) -> Predicate:
    """Only ``address/prefix`` with an IP address part is a CIDR (containment; an invalid
    one is an error); an IP matches exactly; anything else is a host name, matched exactly
    (case-insensitive) against the report host and its FQDN, so the URL hosts of Web App
    Scanning exports (``http://google.com/``) filter like any other name."""
    spec = spec.strip()
    name = spec.lower()

    def by_name(f: Finding) -> bool:
        return f.host.lower() == name or (f.host_fqdn or "").lower() == name

    address, slash, _prefix = spec.partition("/")
    if slash and "://" not in spec and _CIDR_ADDRESS.match(address):
        try:
            net = ipaddress.ip_network(spec, strict=False)
        except ValueError as exc:
            raise ValidationError(f"invalid CIDR {spec!r}", field="host") from exc

        def in_net(f: Finding) -> bool:
            for cand in (f.host_ip, f.host):
                try:
                    if cand and ipaddress.ip_address(cand) in net:
                        return True
                except ValueError:
                    continue
            return False

        return in_net
    try:
        ip = str(ipaddress.ip_address(spec))
    except ValueError:
        return by_name
    return lambda f: f.host_ip == ip or f.host == ip


def matches(f: Finding, q: FindingsQuery) -> bool:
    """Whether one finding satisfies every criterion of ``q``."""
    return _predicate(q)(f)


def _predicate(q: FindingsQuery) -> Predicate:
    checks: list[Predicate] = []
    if isinstance(q.min_severity, int):
        ms = q.min_severity
        checks.append(lambda f: f.severity >= ms)
    if q.severities is not None:
        sev = set(q.severities)
        checks.append(lambda f: f.severity in sev)
    if q.min_cvss3 is not None:
        mc = q.min_cvss3
        checks.append(lambda f: f.cvss3_base_score is not None and f.cvss3_base_score >= mc)
    if q.host is not None:
        checks.append(_host_matcher(q.host))
    if q.port is not None:
        checks.append(lambda f: f.port == q.port)
    if q.protocol is not None:
        proto = q.protocol.lower()
        checks.append(lambda f: f.protocol.lower() == proto)
    if q.plugin_id is not None:
        checks.append(lambda f: f.plugin_id == q.plugin_id)
    if q.plugin_family is not None:
        fam = q.plugin_family.lower()
        checks.append(lambda f: f.plugin_family.lower() == fam)
    if q.cve is not None:
        cve = q.cve.strip().upper()
        checks.append(lambda f: any(c.upper() == cve for c in f.cves))
    if isinstance(q.cwe, int):
        cwe = q.cwe
        checks.append(lambda f: cwe in f.cwes)
    if q.exploit_available is not None:
        checks.append(lambda f: f.exploit_available is q.exploit_available)
    if q.text is not None:
        text = q.text.lower()
        checks.append(lambda f: text in f.plugin_name.lower())
    return lambda f: all(c(f) for c in checks)


def _sort_key(sort: str) -> Callable[[Finding], tuple[Any, ...]]:
    def tail(f: Finding) -> tuple[str, int, int, str]:
        return (f.host, f.plugin_id, f.port, f.protocol)

    def cvss(f: Finding) -> float:
        return -(f.cvss3_base_score if f.cvss3_base_score is not None else -1.0)

    keys: dict[str, Callable[[Finding], tuple[Any, ...]]] = {
        "severity": lambda f: (-f.severity, cvss(f), *tail(f)),
        "cvss3": lambda f: (cvss(f), -f.severity, *tail(f)),
        "host": lambda f: (f.host, -f.severity, f.plugin_id, f.port, f.protocol),
        "plugin_id": lambda f: (f.plugin_id, *tail(f)),
        "port": lambda f: (f.port, f.protocol, -f.severity, f.host, f.plugin_id),
    }
    return keys[sort]


def project(f: Finding, fields: tuple[str, ...]) -> dict[str, Any]:
    """The finding as a dict of ``fields`` (lists copied, so callers may mutate them)."""
    out = {name: getattr(f, name) for name in fields}
    for name in ("cves", "cwes"):
        if name in out:
            out[name] = list(out[name])
    return out


def query_findings(findings: list[Finding], q: FindingsQuery) -> FindingsPage:
    """Filter, sort (default: severity desc, cvss3 desc, then host, plugin_id) and page."""
    pred = _predicate(q)
    selected = sorted((f for f in findings if pred(f)), key=_sort_key(q.sort))
    total = len(selected)
    pages = max(1, math.ceil(total / q.page_size))
    start = (q.page - 1) * q.page_size
    fields = q.field_list
    items = [project(f, fields) for f in selected[start : start + q.page_size]]
    return FindingsPage(
        items=items,
        total=total,
        page=q.page,
        page_size=q.page_size,
        pages=pages,
        has_more=start + q.page_size < total,
        profile=q.profile,
        fields=list(fields),
    )


_json = msgspec.json.Encoder()


def to_jsonl(page: FindingsPage, *, task_id: str, metadata: dict[str, Any]) -> str:
    """JSON-NL: a schema line, a metadata line, one line per finding, a pagination line."""
    lines = [
        {"type": "schema", "profile": page.profile, "fields": page.fields},
        {"type": "metadata", "task_id": task_id, **metadata},
        *({"type": "finding", **item} for item in page.items),
        {
            "type": "pagination",
            "page": page.page,
            "page_size": page.page_size,
            "total": page.total,
            "pages": page.pages,
            "has_more": page.has_more,
        },
    ]
    return "\n".join(_json.encode(line).decode() for line in lines) + "\n"


# --- scan diff -----------------------------------------------------------------------------

DiffKey = tuple[str, int, int, str]


class SeverityChange(msgspec.Struct, kw_only=True):
    host: str
    plugin_id: int
    port: int
    protocol: str
    plugin_name: str
    old_severity: int
    new_severity: int


class ScanDiff(msgspec.Struct, kw_only=True):
    """What changed between two scans, keyed by (host, plugin_id, port, protocol). Lists are
    bounded by ``limit`` (worst first); the counts are always complete. A finding of the old
    scan on a host that the new scan did not scan is ``not_rescanned``, never ``fixed``;
    ``hosts_not_rescanned`` and ``hosts_new`` say how the two scans' host sets differ."""

    new_total: int
    fixed_total: int
    unchanged_total: int
    changed_severity_total: int
    new: list[dict[str, Any]]
    fixed: list[dict[str, Any]]
    changed_severity: list[SeverityChange]
    truncated: bool
    not_rescanned_total: int = 0
    not_rescanned: list[dict[str, Any]] = msgspec.field(default_factory=list)
    #: hosts the old scan scanned and the new one did not (sorted, bounded by ``limit``)
    hosts_not_rescanned: list[str] = msgspec.field(default_factory=list)
    #: hosts the new scan scanned and the old one did not (sorted, bounded by ``limit``)
    hosts_new: list[str] = msgspec.field(default_factory=list)


def diff_key(f: Finding) -> DiffKey:
    return (f.host, f.plugin_id, f.port, f.protocol)


def _index(findings: list[Finding]) -> dict[DiffKey, Finding]:
    """One finding per key; the most severe wins when an export repeats a key."""
    out: dict[DiffKey, Finding] = {}
    for f in findings:
        k = diff_key(f)
        prev = out.get(k)
        if prev is None or f.severity > prev.severity:
            out[k] = f
    return out


def diff_findings(
    old: list[Finding],
    new: list[Finding],
    *,
    limit: int = 100,
    fields: tuple[str, ...] = PROFILES["summary"],
    old_hosts: Collection[str] | None = None,
    new_hosts: Collection[str] | None = None,
    hosts_gone: list[str] | None = None,
    hosts_added: list[str] | None = None,
) -> ScanDiff:
    """New, fixed, not rescanned, unchanged and severity-changed findings between two
    scans. ``old_hosts`` / ``new_hosts``: the hosts each scan scanned (its export's
    ``ReportHost`` names, with or without findings); without them, the hosts of its
    findings. Only a finding on a host the new scan scanned can be ``fixed``.

    With many hosts a caller passes, instead of every name, ``new_hosts`` as the scanned
    hosts among the old findings' hosts (and ``old_hosts`` among the new findings'), and
    the sorted differences of the two host sets as ``hosts_gone`` / ``hosts_added``
    (more than ``limit`` names marks the diff truncated)."""
    a, b = _index(old), _index(new)
    scanned_old = {f.host for f in old} if old_hosts is None else set(old_hosts)
    scanned_new = {f.host for f in new} if new_hosts is None else set(new_hosts)
    if hosts_gone is None:
        hosts_gone = sorted(scanned_old - scanned_new)
    if hosts_added is None:
        hosts_added = sorted(scanned_new - scanned_old)
    by_sev = _sort_key("severity")
    added = sorted((b[k] for k in b.keys() - a.keys()), key=by_sev)
    gone = [a[k] for k in a.keys() - b.keys()]
    fixed = sorted((f for f in gone if f.host in scanned_new), key=by_sev)
    unseen = sorted((f for f in gone if f.host not in scanned_new), key=by_sev)
    changed: list[SeverityChange] = []
    unchanged = 0
    for k in a.keys() & b.keys():
        o, n = a[k], b[k]
        if o.severity == n.severity:
            unchanged += 1
        else:
            changed.append(
                SeverityChange(
                    host=n.host,
                    plugin_id=n.plugin_id,
                    port=n.port,
                    protocol=n.protocol,
                    plugin_name=n.plugin_name,
                    old_severity=o.severity,
                    new_severity=n.severity,
                )
            )
    changed.sort(key=lambda c: (-max(c.old_severity, c.new_severity), c.host, c.plugin_id))
    return ScanDiff(
        new_total=len(added),
        fixed_total=len(fixed),
        unchanged_total=unchanged,
        changed_severity_total=len(changed),
        new=[project(f, fields) for f in added[:limit]],
        fixed=[project(f, fields) for f in fixed[:limit]],
        changed_severity=changed[:limit],
        truncated=max(len(added), len(fixed), len(changed), len(unseen), len(hosts_gone)) > limit,
        not_rescanned_total=len(unseen),
        not_rescanned=[project(f, fields) for f in unseen[:limit]],
        hosts_not_rescanned=hosts_gone[:limit],
        hosts_new=hosts_added[:limit],
    )
