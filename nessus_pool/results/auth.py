"""Did the scanner log in? Per-host verdicts and the scan verdict, as pure functions over the
facts the parser collects (:class:`HostFacts`).

Per host (authenticated scans):

* ``success``: 19506 says ``Credentialed checks : yes`` (or the ``Credentialed_Scan`` tag
  says ``true`` when 19506 is absent), or a confirmation plugin is present: 141118 (valid
  credentials provided), 110095 (no credential issues), 12634 / 97993 / 117887 (local
  enumeration ran); and no failure or privilege plugin.
* ``partial``: logged in, but 110385 (insufficient privilege) or 24786 (Windows scan not run
  with admin privileges) is present, or a failure plugin reports another protocol/credential.
* ``failed``: not logged in, and 104410 (failure for provided credentials), 21745 (OS Security
  Patch Assessment Failed / Authentication Failure - Local Checks Not Run), 24786 (credentials
  supplied, ADMIN$ refused) is present or 19506 says ``no``.
* ``unknown``: nothing tells: no 19506, no tag, no credential plugin; or 19506 says ``no``
  under Paranoid settings with nothing confirming either way.

Untrusted scans give ``not_applicable`` for every host. 19506 may say ``no`` under Paranoid
report settings although the login worked: the confirmation plugins then decide, with a
warning. The scan verdict is the worst meaningful host status: failed > partial > unknown >
success.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

import msgspec

from nessus_pool.models import ScanType
from nessus_pool.results import troubleshoot as ts
from nessus_pool.results.scaninfo import (
    ScanInfo,
    credentialed_from_tag,
    parse_credentialed_checks,
    parse_scan_info,
)
from nessus_pool.results.types import AuthStatus, CredentialedChecks, Validation, plural

SCAN_INFO = 19506
#: "Microsoft Windows SMB Log In Possible": says which account the SMB tests use, or only
#: that NULL sessions work (the supplied SMB credentials were not accepted)
SMB_LOGIN_POSSIBLE = 10394
CONFIRMATIONS = (141118, 110095)
LOCAL_CHECKS_RAN = (12634, 97993, 117887)
LOGIN_FAILURES = (104410, 21745)
PRIVILEGE = (110385, 24786)
#: plugins whose output the parser keeps for validation
AUTH_PLUGIN_IDS = frozenset(
    {
        SCAN_INFO,
        *CONFIRMATIONS,
        *LOCAL_CHECKS_RAN,
        *LOGIN_FAILURES,
        *PRIVILEGE,
        26917,
        117886,
        SMB_LOGIN_POSSIBLE,
    }
)
#: presence means credentials were supplied (used to infer the scan type offline)
CREDENTIAL_SUPPLIED = frozenset({*CONFIRMATIONS, *LOGIN_FAILURES, *PRIVILEGE})
_SEVERITY_ORDER = {
    AuthStatus.FAILED: 4,
    AuthStatus.PARTIAL: 3,
    AuthStatus.UNKNOWN: 2,
    AuthStatus.SUCCESS: 1,
    AuthStatus.NOT_APPLICABLE: 0,
}
_MAX_LISTED = 20


class HostFacts(msgspec.Struct, kw_only=True):
    """What the parser keeps of one host for validation."""

    name: str
    ip: str | None = None
    fqdn: str | None = None
    credentialed_scan_tag: str | None = None
    #: outputs of the :data:`AUTH_PLUGIN_IDS` plugins present (None: no ``plugin_output``)
    outputs: dict[int, list[str | None]] = msgspec.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"Host {self.name}" + (f" ({self.ip})" if self.ip and self.ip != self.name else "")

    def first(self, plugin_id: int) -> str | None:
        outs = self.outputs.get(plugin_id)
        return next((o for o in outs if o), None) if outs else None


class HostAuth(msgspec.Struct, kw_only=True):
    status: AuthStatus
    credentialed_checks: CredentialedChecks | None
    evidence: list[int]
    notes: list[str]
    troubleshooting: list[str]
    scan_info: ScanInfo | None


def assess_host(facts: HostFacts, scan_type: ScanType) -> HostAuth:
    """The authentication verdict for one host, with the plugin ids it rests on."""
    has = facts.outputs.__contains__
    info = parse_scan_info(facts.first(SCAN_INFO)) if has(SCAN_INFO) else None
    cc = info.credentialed_checks if info else None
    if cc is None:
        cc = credentialed_from_tag(facts.credentialed_scan_tag)
    evidence = sorted(p for p in facts.outputs if p in AUTH_PLUGIN_IDS and p != SMB_LOGIN_POSSIBLE)
    notes: list[str] = []
    if not scan_type.is_authenticated:
        if cc == "yes":
            notes.append("credentialed checks ran although the scan was requested untrusted")
        return HostAuth(
            status=AuthStatus.NOT_APPLICABLE,
            credentialed_checks=cc,
            evidence=[p for p in evidence if p == SCAN_INFO],
            notes=notes,
            troubleshooting=[],
            scan_info=info,
        )
    confirmed = [p for p in (*CONFIRMATIONS, *LOCAL_CHECKS_RAN) if has(p)]
    failures = [p for p in LOGIN_FAILURES if has(p)]
    privilege = [p for p in PRIVILEGE if has(p)]
    logged_in = cc == "yes" or bool(confirmed)
    # a NULL-session-only 10394 says the supplied SMB credentials were refused; it is noise
    # on a host reached by another protocol (Samba on a Linux host logged in via SSH)
    if (
        not logged_in
        and has(SMB_LOGIN_POSSIBLE)
        and _smb_null_only(facts.first(SMB_LOGIN_POSSIBLE))
    ):
        failures.append(SMB_LOGIN_POSSIBLE)
    if cc == "no" and confirmed:
        notes.append(
            f"plugin 19506 says 'Credentialed checks : no' but "
            f"{'plugin' if len(confirmed) == 1 else 'plugins'} "
            f"{', '.join(map(str, confirmed))} {'confirms' if len(confirmed) == 1 else 'confirm'} "
            "a login and decided the verdict"
            + (
                " (Paranoid report settings, under which 19506 may say 'no' although the "
                "login worked)"
                if info and info.paranoid
                else ""
            )
        )
    if SMB_LOGIN_POSSIBLE in failures:
        evidence = sorted({*evidence, SMB_LOGIN_POSSIBLE})
    trouble = _troubleshooting(facts, failures, privilege)
    if logged_in:
        status = AuthStatus.PARTIAL if failures or privilege else AuthStatus.SUCCESS
    elif failures or privilege:
        status = AuthStatus.FAILED
    elif cc == "no" and info is not None and info.paranoid:
        status = AuthStatus.UNKNOWN
        notes.append("19506 says 'no' under Paranoid settings and no plugin confirms either way")
    elif cc == "no":
        status = AuthStatus.FAILED
        trouble.append(
            f"{facts.label}: plugin 19506 reports 'Credentialed checks : no' and no credential "
            "plugin reported a login: check that credentials are attached to the scan and "
            "that SSH/SMB on the host is reachable from the scanner."
        )
    else:
        status = AuthStatus.UNKNOWN
    if has(117886) and status is not AuthStatus.SUCCESS:
        trouble.extend(ts.not_available(facts.label, facts.first(117886)))
    return HostAuth(
        status=status,
        credentialed_checks=cc,
        evidence=evidence,
        notes=notes,
        troubleshooting=trouble,
        scan_info=info,
    )


def _troubleshooting(facts: HostFacts, failures: list[int], privilege: list[int]) -> list[str]:
    out: list[str] = []
    label = facts.label
    for pid in failures:
        for output in facts.outputs[pid] or [None]:
            if pid == 104410:
                out.extend(ts.login_failures(label, output))
            elif pid == SMB_LOGIN_POSSIBLE:
                out.append(
                    f"{label}: SMB: plugin 10394 found only NULL-session access "
                    f"({' '.join((output or '').split()).lstrip('- ')}): the supplied SMB "
                    "credentials were not accepted."
                )
            else:
                out.extend(ts.patch_assessment_failures(label, output))
    if 110385 in privilege:
        for output in facts.outputs[110385]:
            out.extend(ts.privilege_issues(label, output))
    for pid in (24786, 26917):
        if pid in facts.outputs:
            out.append(ts.smb_admin_issue(label, pid, facts.first(pid)))
    return list(dict.fromkeys(out))


def _smb_null_only(output: str | None) -> bool:
    text = (output or "").lower()
    return "null session" in text and "will be done as" not in text


def worst_status(statuses: list[AuthStatus], scan_type: ScanType) -> AuthStatus:
    """The scan verdict: the worst meaningful host status; not_applicable if untrusted."""
    if not scan_type.is_authenticated:
        return AuthStatus.NOT_APPLICABLE
    if not statuses:
        return AuthStatus.UNKNOWN
    return max(statuses, key=_SEVERITY_ORDER.__getitem__)


def infer_scan_type(hosts: list[HostFacts]) -> ScanType:
    """``authenticated`` if any host's 19506 / ``Credentialed_Scan`` says credentials were
    used or a credential plugin is present, else ``untrusted`` (the offline CLI default)."""
    for h in hosts:
        cc = parse_credentialed_checks(h.first(SCAN_INFO))
        if cc == "yes" or credentialed_from_tag(h.credentialed_scan_tag) == "yes":
            return ScanType.AUTHENTICATED
        if any(p in h.outputs for p in CREDENTIAL_SUPPLIED):
            return ScanType.AUTHENTICATED
    return ScanType.UNTRUSTED


#: per-host warning and troubleshooting lines kept in a scan's validation; past this many a
#: line says how many more there were (the hosts themselves are paged: the validation stays
#: the same size whatever the host count)
MAX_HOST_LINES = 100


def validate(
    hosts: list[HostFacts],
    verdicts: list[HostAuth],
    *,
    scan_type: ScanType,
    targets: list[str] | None = None,
) -> Validation:
    """The scan-level verdict, counts by status, warnings and troubleshooting lines."""
    v = Validator(scan_type=scan_type, targets=targets)
    for h, verdict in zip(hosts, verdicts, strict=True):
        v.add(h, verdict)
    return v.result()


class _Names:
    """A count of hosts and the first :data:`_MAX_LISTED` of their names."""

    __slots__ = ("n", "names")

    def __init__(self) -> None:
        self.n = 0
        self.names: list[str] = []

    def add(self, name: str) -> None:
        self.n += 1
        if len(self.names) < _MAX_LISTED:
            self.names.append(name)

    def shown(self) -> str:
        more = f" (+{self.n - _MAX_LISTED} more)" if self.n > _MAX_LISTED else ""
        return ", ".join(self.names) + more


class _Capped:
    """Distinct lines in first-seen order, at most :data:`MAX_HOST_LINES` of them, and how
    many more there were."""

    __slots__ = ("dropped", "lines")

    def __init__(self) -> None:
        self.lines: dict[str, None] = {}
        self.dropped = 0

    def add(self, line: str) -> None:
        if line in self.lines:
            return
        if len(self.lines) < MAX_HOST_LINES:
            self.lines[line] = None
        else:
            self.dropped += 1

    def result(self, what: str) -> list[str]:
        out = list(self.lines)
        if self.dropped:
            out.append(f"(+{self.dropped} more {what}: each host's notes have its own)")
        return out


class Validator:
    """:func:`validate` one host at a time: memory bounded by the targets and a constant,
    not by the host count (per-host lines are capped at :data:`MAX_HOST_LINES`)."""

    def __init__(self, *, scan_type: ScanType, targets: list[str] | None = None) -> None:
        self.scan_type = scan_type
        self.targets = TargetMatcher(targets) if targets else None
        self.hosts = 0
        self.by_status: Counter[str] = Counter()
        self.worst: AuthStatus | None = None
        self.absent = _Names()
        self.empty = _Names()
        self.unreadable = _Names()
        self.no_scanner = _Names()
        self.notes = _Capped()
        self.trouble = _Capped()

    def add(self, h: HostFacts, v: HostAuth) -> None:
        self.hosts += 1
        self.by_status[v.status.value] += 1
        if self.worst is None or _SEVERITY_ORDER[v.status] > _SEVERITY_ORDER[self.worst]:
            self.worst = v.status
        if self.targets is not None:
            self.targets.see(h)
        if SCAN_INFO not in h.outputs:
            self.absent.add(h.name)
        elif not (h.first(SCAN_INFO) or "").strip():
            self.empty.add(h.name)
        elif v.scan_info is None or v.scan_info.credentialed_raw is None:
            self.unreadable.add(h.name)
        if v.scan_info is not None and v.scan_info.port_scanner_missing:
            self.no_scanner.add(h.name)
        for n in v.notes:
            self.notes.add(f"Host {h.name}: {n}")
        for t in v.troubleshooting:
            self.trouble.add(t)

    def result(self) -> Validation:
        warnings: list[str] = []
        if not self.hosts:
            warnings.append("the export holds no hosts: nothing was scanned or every host was down")
        missing = self.targets.missing() if self.targets is not None else []
        if missing:
            shown = ", ".join(missing[:_MAX_LISTED])
            more = f" (+{len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
            warnings.append(
                f"{plural(len(missing), 'target')} {'has' if len(missing) == 1 else 'have'} "
                "no results (down, filtered or excluded): "
                f"{shown}{more}"
            )
        for names, what, unknown in (
            (self.absent, "is absent", "scan settings unknown there"),
            (self.empty, "has an empty output", "scan settings unknown there"),
            (
                self.unreadable,
                "has no 'Credentialed checks' line",
                "whether credentialed checks ran is unknown there",
            ),
        ):
            if names.n:
                warnings.append(
                    f"plugin 19506 (Nessus Scan Information) {what} on "
                    f"{plural(names.n, 'host')}: {names.shown()}; {unknown}"
                )
        if self.no_scanner.n:
            warnings.append(
                f"no port scanner was enabled for {plural(self.no_scanner.n, 'host')}: "
                "results may be incomplete"
            )
        warnings.extend(self.notes.result("host notes"))
        status = (
            (self.worst or AuthStatus.UNKNOWN)
            if self.scan_type.is_authenticated
            else AuthStatus.NOT_APPLICABLE
        )
        return Validation(
            authentication_status=status,
            hosts_by_status=dict(sorted(self.by_status.items())),
            warnings=warnings,
            troubleshooting=self.trouble.result("troubleshooting lines"),
        )


# --- targets -------------------------------------------------------------------------------

_RANGE_SHORT = re.compile(r"^(\d+\.\d+\.\d+\.)(\d+)-(\d+)$")
_EXPAND_LIMIT = 65536

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def expand_target(spec: str) -> list[str] | None:
    """Individual addresses of one target spec (IP, CIDR, ``a-b`` or ``1.2.3.4-20``);
    ``[spec]`` for a hostname; None when the spec is too large to list."""
    spec = spec.strip()
    if m := _RANGE_SHORT.match(spec):
        spec = f"{m.group(1)}{m.group(2)}-{m.group(1)}{m.group(3)}"
    if "-" in spec:
        lo_s, _, hi_s = spec.partition("-")
        try:
            lo, hi = ipaddress.ip_address(lo_s.strip()), ipaddress.ip_address(hi_s.strip())
        except ValueError:
            return [spec]
        if lo.version != hi.version or int(hi) < int(lo):
            return [spec]
        if int(hi) - int(lo) >= _EXPAND_LIMIT:
            return None
        return [str(ipaddress.ip_address(i)) for i in range(int(lo), int(hi) + 1)]
    if "/" in spec:
        try:
            net = ipaddress.ip_network(spec, strict=False)
        except ValueError:
            return [spec]
        if net.num_addresses > _EXPAND_LIMIT:
            return None
        hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
        return [str(a) for a in hosts]
    try:
        return [str(ipaddress.ip_address(spec))]
    except ValueError:
        return [spec.lower()]


def split_targets(targets: list[str]) -> list[str]:
    """Target specs from a list whose items may hold several, comma or space separated."""
    return [t for item in targets for t in re.split(r"[,\s]+", item) if t]


def missing_targets(targets: list[str], hosts: list[HostFacts]) -> list[str]:
    """Targets (expanded) that match no reported host by name, host-ip or FQDN."""
    m = TargetMatcher(targets)
    for h in hosts:
        m.see(h)
    return m.missing()


class TargetMatcher:
    """:func:`missing_targets` one host at a time: memory bounded by the targets, not by
    the hosts. A target matches a host's name, host-ip or FQDN (case-insensitive); a bare
    hostname also matches the first label of one, and a host name the first label of a
    target FQDN; a network too large to expand matches any address inside it."""

    def __init__(self, targets: list[str]) -> None:
        #: each target spec, expanded (None: a network too large to list)
        self.specs: list[tuple[str, list[str] | None]] = [
            (spec, expand_target(spec)) for spec in split_targets(targets)
        ]
        self.exact: set[str] = set()
        #: non-IP targets without a dot (they match a host's first label)
        self.bare: set[str] = set()
        #: first label -> non-IP targets with that first label
        self.by_label: dict[str, list[str]] = {}
        for _spec, expanded in self.specs:
            for t in expanded or ():
                self.exact.add(t)
                if not _is_ip(t):
                    if "." not in t:
                        self.bare.add(t)
                    self.by_label.setdefault(t.split(".")[0], []).append(t)
        self.networks = {spec for spec, expanded in self.specs if expanded is None}
        self.matched: set[str] = set()

    def see(self, h: HostFacts) -> None:
        for n in (h.name, h.ip, h.fqdn):
            if not n:
                continue
            n = n.lower()
            if n in self.exact:
                self.matched.add(n)
            short = n.split(".")[0]
            if short in self.bare:
                self.matched.add(short)
            if n in self.by_label:
                self.matched.update(self.by_label[n])
            if self.networks:
                self.matched.update(s for s in self.networks if _in_network(s, n))
                self.networks -= self.matched

    def missing(self) -> list[str]:
        out: list[str] = []
        for spec, expanded in self.specs:
            if expanded is None:
                if spec not in self.matched:
                    out.append(spec)
                continue
            out.extend(t for t in expanded if t not in self.matched)
        return out


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _in_network(spec: str, name: str) -> bool:
    try:
        return ipaddress.ip_address(name) in ipaddress.ip_network(spec, strict=False)
    except ValueError:
        return False
