"""Plain data of the results layer: findings, per-host results, the scan summary and the
authentication verdict. Imports nothing of ours but the shared error types' neighbours.

Severity is the raw ``severity`` attribute of each ``ReportItem`` (4 critical, 3 high,
2 medium, 1 low, 0 info): the value the scanner assigned, the one the Nessus UI shows.
It is *not* re-derived from CVSS. DefectDojo, for one, overrides it from ``cvss3_base_score``
(>= 9 critical, >= 7 high, ...), so its counts differ from ours on the same file: a
``severity="2"`` item with ``cvss3_base_score=7.5`` is Medium here and High there. Both
scores are kept on every :class:`Finding` for callers who want the CVSS view.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

import msgspec

#: severity value -> name, as the Nessus UI names them
SEVERITY_NAMES: dict[int, str] = {4: "critical", 3: "high", 2: "medium", 1: "low", 0: "info"}
#: name (and common aliases) -> severity value
SEVERITY_BY_NAME: dict[str, int] = {
    "critical": 4,
    "high": 3,
    "medium": 2,
    "low": 1,
    "info": 0,
    "informational": 0,
    "none": 0,
}

CredentialedChecks = Literal["yes", "no"]


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """``1 host``, ``2 hosts``, ``0 dead letters``; ``plural_form`` for irregular words."""
    return f"{n} {singular if n == 1 else (plural_form or singular + 's')}"


_CWE = re.compile(r"(?:CWE[-: ]?)?([0-9]{1,9})", re.I)


def cwe_number(text: str | None) -> int | None:
    """The CWE id of ``"79"``, ``"CWE-79"`` or ``"cwe 79"``; None for anything else."""
    m = _CWE.fullmatch((text or "").strip())
    return int(m.group(1)) if m else None


class Finding(msgspec.Struct, kw_only=True, gc=False):
    """One ``ReportItem`` of one ``ReportHost``."""

    host: str
    host_ip: str | None = None
    host_fqdn: str | None = None
    port: int
    protocol: str
    svc_name: str
    #: raw ``severity`` attribute, 0 (info) .. 4 (critical); not derived from CVSS
    severity: int
    plugin_id: int
    plugin_name: str
    plugin_family: str
    risk_factor: str | None = None
    cvss3_base_score: float | None = None
    cvss_base_score: float | None = None
    cves: list[str] = msgspec.field(default_factory=list)
    #: CWE ids of the weakness classes (``<cwe>79</cwe>``), in export order
    cwes: list[int] = msgspec.field(default_factory=list)
    exploit_available: bool = False
    synopsis: str | None = None
    description: str | None = None
    solution: str | None = None
    plugin_output: str | None = None
    see_also: str | None = None


class SeverityBreakdown(msgspec.Struct, kw_only=True):
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    info: int = 0

    def add(self, severity: int, n: int = 1) -> None:
        name = SEVERITY_NAMES.get(severity, "info")
        setattr(self, name, getattr(self, name) + n)

    @property
    def total(self) -> int:
        return self.critical + self.high + self.medium + self.low + self.info


class ComplianceBreakdown(msgspec.Struct, kw_only=True):
    """Results of compliance checks (``cm:compliance-result`` of an audit policy's items)."""

    passed: int = 0
    failed: int = 0
    warning: int = 0
    #: ERROR and anything else Nessus may write there
    error: int = 0

    def add(self, result: str) -> None:
        key = _COMPLIANCE_KEYS.get(result.strip().upper(), "error")
        setattr(self, key, getattr(self, key) + 1)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.warning + self.error


_COMPLIANCE_KEYS = {"PASSED": "passed", "FAILED": "failed", "WARNING": "warning"}


class AuthStatus(enum.StrEnum):
    """Whether the scanner logged in to a host with the supplied credentials."""

    SUCCESS = "success"
    FAILED = "failed"
    #: logged in, but with insufficient privilege or only on some protocols
    PARTIAL = "partial"
    #: untrusted scan: no credentials were meant to be used
    NOT_APPLICABLE = "not_applicable"
    UNKNOWN = "unknown"


class HostResult(msgspec.Struct, kw_only=True):
    name: str
    ip: str | None = None
    fqdn: str | None = None
    os: str | None = None
    #: ``HOST_START`` / ``HOST_END`` as written in the export
    start: str | None = None
    end: str | None = None
    findings_total: int = 0
    severity_breakdown: SeverityBreakdown = msgspec.field(default_factory=SeverityBreakdown)
    #: plugin 19506 "Credentialed checks", else the ``Credentialed_Scan`` tag, normalised
    credentialed_checks: CredentialedChecks | None = None
    authentication_status: AuthStatus = AuthStatus.UNKNOWN
    #: plugin ids the verdict rests on
    evidence: list[int] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)


class ResultsSummary(msgspec.Struct, kw_only=True):
    hosts_scanned: int = 0
    severity_breakdown: SeverityBreakdown = msgspec.field(default_factory=SeverityBreakdown)
    findings_total: int = 0
    #: findings with severity >= 1 (low and above)
    vulnerabilities_total: int = 0
    max_cvss3: float | None = None
    exploitable_total: int = 0
    scan_start: str | None = None
    scan_end: str | None = None
    #: compliance checks by result, next to the severity breakdown; None without any
    compliance: ComplianceBreakdown | None = None


class Validation(msgspec.Struct, kw_only=True):
    authentication_status: AuthStatus
    hosts_by_status: dict[str, int] = msgspec.field(default_factory=dict)
    warnings: list[str] = msgspec.field(default_factory=list)
    troubleshooting: list[str] = msgspec.field(default_factory=list)


class ScanResults(msgspec.Struct, kw_only=True):
    summary: ResultsSummary
    #: empty when the parser handed the hosts on in batches (``on_hosts``)
    hosts: list[HostResult]
    validation: Validation
    #: evidence plugin ids over all hosts (the MCP status's ``auth_plugins_found``)
    auth_plugins_found: int = 0


class StoredResults(msgspec.Struct, kw_only=True):
    """What a task's results row holds: the same size whatever the host count (the hosts
    are rows of their own, read in pages)."""

    summary: ResultsSummary
    validation: Validation
    hosts_total: int = 0
    auth_plugins_found: int = 0
