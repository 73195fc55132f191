"""Generated ``.nessus`` (NessusClientData_v2) exports, deterministic per (seed, host).

:func:`write_export` streams the document to a binary file host by host, so a benchmark file
of any size never sits in memory as one string.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Protocol
from xml.sax.saxutils import escape, quoteattr

import msgspec

from nessus_pool.simulator.plugins import (
    HOST_INFO,
    HTTP_INFO,
    LOCAL_INFO,
    LOCAL_VULNS,
    NETWORK_VULNS,
    SERVICE_DETECTION,
    SYN_SCANNER,
    TLS_INFO,
    Plugin,
)

NESSUS_VERSION = "10.8.3"
NESSUS_BUILD = "20010"
PLUGIN_FEED = "202501150447"
#: when no start time is given, exports start here (2026-01-01T00:00:00Z) plus a seeded offset
_BASE_START_MS = 1_767_225_600_000
_OSES = (
    "Linux Kernel 5.15 on Ubuntu 22.04",
    "Linux Kernel 6.1 on Debian 12",
    "Linux Kernel 5.14 on Red Hat Enterprise Linux 9",
    "Linux Kernel 4.15 on Ubuntu 18.04",
)
_OPTIONAL_PORTS = ((80, "www"), (443, "www"), (3306, "mysql"), (8080, "www"))


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    plugin: Plugin
    port: int
    svc: str
    protocol: str
    output: str


class HostProfile(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    ip: str
    fqdn: str | None
    os: str
    mac: str
    ports: tuple[tuple[int, str], ...]


def host_profile(host: str, *, seed: int) -> HostProfile:
    """The simulated machine behind a target: address, OS and open ports."""
    rng = random.Random(f"profile:{seed}:{host}")
    is_name = not host.replace(".", "").isdigit() and ":" not in host
    if is_name:
        digest = hashlib.sha256(host.encode()).digest()
        ip = f"10.{digest[0]}.{digest[1]}.{max(1, digest[2] % 255)}"
    else:
        ip = host
    ports = [(22, "ssh")] + [p for p in _OPTIONAL_PORTS if rng.random() < 0.45]
    mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
    return HostProfile(
        host=host,
        ip=ip,
        fqdn=host if is_name else None,
        os=rng.choice(_OSES),
        mac=mac,
        ports=tuple(ports),
    )


def host_findings(
    host: str,
    *,
    seed: int,
    credentialed: bool | None,
    ssh_username: str | None,
    scan_name: str = "",
    start_ms: int = 0,
    duration_s: int = 0,
    items_per_host: int | None = None,
) -> list[Finding]:
    """The ReportItems of one host. ``credentialed`` is None when no SSH credentials were
    supplied, True when they were accepted, False when they were refused."""
    profile = host_profile(host, seed=seed)
    rng = random.Random(f"findings:{seed}:{host}")
    fill = {
        "host": host,
        "ip": profile.ip,
        "os": profile.os,
        "user": ssh_username or "",
        "fqdn": profile.fqdn or profile.ip,
    }

    def make(plugin: Plugin, port: int, svc: str, protocol: str = "tcp") -> Finding:
        text = plugin.output.format(port=port, svc=svc, **fill)
        return Finding(plugin=plugin, port=port, svc=svc, protocol=protocol, output=text)

    out: list[Finding] = [
        make(_scan_info(scan_name, credentialed, ssh_username, start_ms, duration_s), 0, "general")
    ]
    out += _credential_findings(credentialed, ssh_username or "", make)
    for plugin, port, svc, proto in HOST_INFO:
        out.append(make(plugin, port, svc, proto))
    for port, svc in profile.ports:
        out.append(make(SYN_SCANNER, port, svc))
        out.append(make(SERVICE_DETECTION, port, svc))
        if svc == "www":
            out += [make(p, port, svc) for p in HTTP_INFO]
        if port == 443:
            out += [make(p, port, svc) for p in TLS_INFO]
    open_ports = {port for port, _ in profile.ports}
    for plugin, chance, port, svc in NETWORK_VULNS:
        hit = rng.random() < chance
        if hit and (port == 0 or port in open_ports):
            out.append(
                make(
                    plugin,
                    port,
                    "general" if port == 0 else svc,
                    "icmp" if svc == "icmp" else "tcp",
                )
            )
    if credentialed:
        out += [make(p, 0, "general") for p in LOCAL_INFO]
        out += [make(p, 0, "general") for p, chance in LOCAL_VULNS if rng.random() < chance]
    if items_per_host is not None:
        out = _fit(out, items_per_host, rng, make)
    return out


def _fit(items: list[Finding], count: int, rng: random.Random, make: _Make) -> list[Finding]:
    """Cut or pad (with SYN-scanner hits on further ports) to exactly ``count`` items."""
    if len(items) >= count:
        return items[:count]
    used = {f.port for f in items}
    port = 1024
    while len(items) < count:
        port += rng.randrange(1, 40)
        if port not in used:
            items.append(make(SYN_SCANNER, port, "unknown"))
    return items


class _Make(Protocol):
    def __call__(self, plugin: Plugin, port: int, svc: str, protocol: str = "tcp") -> Finding: ...


def _credential_findings(credentialed: bool | None, user: str, make: _Make) -> list[Finding]:
    if credentialed is None:
        return [make(_NO_CREDS, 22, "ssh"), make(_PATCH_NA, 0, "general")]
    if credentialed:
        return [make(_VALID_CREDS, 22, "ssh"), make(_NO_ISSUES, 22, "ssh")]
    return [make(_FAILED_CREDS, 22, "ssh"), make(_ASSESSMENT_FAILED, 0, "general")]


def _settings(pid: int, name: str, synopsis: str, output: str, fname: str) -> Plugin:
    return Plugin(
        plugin_id=pid,
        name=name,
        family="Settings",
        severity=0,
        synopsis=synopsis,
        description=synopsis,
        output=output,
        fname=fname,
        plugin_type="summary",
    )


_VALID_CREDS = _settings(
    141118,
    "Target Credential Status by Authentication Protocol - Valid Credentials Provided",
    "Valid credentials were provided for an available authentication protocol.",
    "\nNessus was able to log in to the remote host via the following\nprotocol as {user}. "
    "This does not necessarily mean that all protocol\nfeatures are available :\n\n"
    "  Protocol        : SSH\n  Port            : 22\n  Credential Type : password\n"
    "  User            : '{user}'\n",
    "target_credential_status_valid.nbin",
)
_NO_ISSUES = _settings(
    110095,
    "Target Credential Issues by Authentication Protocol - No Issues Found",
    "Nessus was able to log in to the remote host using the provided credentials. No issues "
    "were reported with access, privilege, or intermittent failure.",
    "\nNessus was able to execute commands on the target host with the provided credentials "
    "via the following protocol :\n\n  Protocol : SSH\n  Port     : 22\n  User     : "
    "'{user}'\n",
    "host_credential_issues_none.nbin",
)
_FAILED_CREDS = _settings(
    104410,
    "Target Credential Status by Authentication Protocol - Failure for Provided Credentials",
    "Nessus was unable to log in to the detected authentication protocol, "
    "using the provided credentials.",
    "\nNessus was unable to log into the following host for which\ncredentials have been "
    "provided :\n\n  Protocol        : SSH\n  Port            : 22\n  User            : "
    "'{user}'\n  Message         : \nFailed to authenticate using the supplied credentials.\n",
    "target_credential_status_failed.nbin",
)
_ASSESSMENT_FAILED = _settings(
    21745,
    "OS Security Patch Assessment Failed",
    "Errors prevented OS Security Patch Assessment.",
    "\nThe following issues were reported :\n\n  - Plugin      : ssh_get_info2.nasl\n"
    "    Plugin ID   : 97993\n    Plugin Name : OS Identification and Installed Software "
    "Enumeration over SSH v2 (Using New SSH Library)\n    Protocol    : SSH\n    Message     : "
    "\nCredentials were provided for detected SSH service, however they were invalid.\n",
    "authentication_failure.nasl",
)
_NO_CREDS = _settings(
    110723,
    "Target Credential Status by Authentication Protocol - No Credentials Provided",
    "Nessus was able to find common ports used for local checks, however, no credentials "
    "were provided in the scan policy.",
    "\nSSH was detected on port 22 but no credentials were provided.\nSSH local checks were "
    "not enabled.\n",
    "target_credential_status_none.nbin",
)
_PATCH_NA = _settings(
    117886,
    "OS Security Patch Assessment Not Available",
    "OS Security Patch Assessment is not available.",
    "\nOS Security Patch Assessment is not available because of the "
    "following\nissues :\n\n  - No credentials were provided for this scan.\n",
    "os_security_patch_assessment_not_available.nasl",
)


def _scan_info(
    scan_name: str, credentialed: bool | None, user: str | None, start_ms: int, duration_s: int
) -> Plugin:
    creds = f"yes, as '{user}' via ssh" if credentialed else "no"
    start = time.strftime("%Y/%-m/%-d %H:%M UTC", time.gmtime(start_ms / 1000))
    out = (
        f"Information about this scan : \n\nNessus version : {NESSUS_VERSION}\n"
        f"Nessus build : {NESSUS_BUILD}\nPlugin feed version : {PLUGIN_FEED}\n"
        "Scanner edition used : Nessus\nScanner OS : LINUX\nScanner distribution : "
        "ubuntu1404-x86-64\nScan type : Normal\n"
        f"Scan name : {scan_name}\nScan policy used : Basic Network Scan\n"
        "Scanner IP : 10.0.0.2\nPort scanner(s) : nessus_syn_scanner \nPort range : default\n"
        "Ping RTT : 0.412 ms\nThorough tests : no\nExperimental tests : no\n"
        "Scan for Unpatched Vulnerabilities : no\nPlugin debugging enabled : no\n"
        "Paranoia level : 1\nReport verbosity : 1\nSafe checks : yes\nOptimize the test : "
        f"yes\nCredentialed checks : {creds}\nAttempt Least Privilege : no\n"
        "Patch management checks : None\nDisplay superseded patches : yes (supersedence "
        "plugin did run)\nCGI scanning : disabled\nWeb application tests : disabled\n"
        "Max hosts : 30\nMax checks : 4\nRecv timeout : 5\nBackports : None\n"
        "Allow post-scan editing : Yes\nNessus Plugin Signature Checking : Enabled\n"
        "Audit File Signature Checking : Disabled\n"
        f"Scan Start Date : {start}\nScan duration : {duration_s} sec\n"
        "Scan for malware : no\n"
    )
    return Plugin(
        plugin_id=19506,
        name="Nessus Scan Information",
        family="Settings",
        severity=0,
        synopsis="This plugin displays information about the Nessus scan.",
        description="This plugin displays, for each tested host, information about "
        "the scan itself :\n\n  - The version of the plugin set.\n  - The type of "
        "scanner (Nessus or Nessus Home).\n  - The version of the Nessus Engine.\n"
        "  - Whether credentialed or third-party patch management\n    checks are "
        "possible.\n  - The date of the scan.\n  - The duration of the scan.",
        output=out.replace("{", "{{").replace("}", "}}"),
        fname="scan_info.nasl",
        plugin_type="summary",
        publication_date="2005/08/26",
    )


def nessus_time(ms: int) -> str:
    """Nessus's HOST_START format, e.g. ``Wed Mar 23 14:31:51 2022`` (UTC here)."""
    return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(ms / 1000))


def write_export(
    fp: BinaryIO,
    *,
    hosts: list[str],
    scan_name: str,
    credentialed: bool | None,
    ssh_username: str | None,
    seed: int,
    items_per_host: int | None = None,
    start_ms: int | None = None,
    duration_s: int = 600,
    policy_name: str = "Basic Network Scan",
    compliance: bool = False,
) -> None:
    """Write a NessusClientData_v2 document for ``hosts`` to ``fp``, host by host.

    Byte-identical for the same arguments. ``start_ms`` (epoch ms of the scan start) defaults
    to a time derived from ``seed``; hosts finish one after another within ``duration_s``."""
    if start_ms is None:
        start_ms = _BASE_START_MS + (seed % 86_400) * 1000
    write = fp.write
    write(b'<?xml version="1.0" ?>\n<NessusClientData_v2>\n')
    write(_policy(policy_name, scan_name, hosts).encode())
    write(f'<Report name={quoteattr(scan_name)} xmlns:cm="http://www.nessus.org/cm">\n'.encode())
    per_host_ms = duration_s * 1000 // max(1, len(hosts))
    for index, host in enumerate(hosts):
        host_start = start_ms + index * per_host_ms // 2
        host_end = host_start + per_host_ms
        findings = host_findings(
            host,
            seed=seed,
            credentialed=credentialed,
            ssh_username=ssh_username,
            scan_name=scan_name,
            start_ms=start_ms,
            duration_s=duration_s,
            items_per_host=items_per_host,
        )
        audit = compliance_checks(host, seed=seed) if compliance else []
        for chunk in _report_host(
            host, seed, credentialed, policy_name, host_start, host_end, findings, audit
        ):
            write(chunk.encode())
    write(b"</Report>\n</NessusClientData_v2>\n")


def generate_export(
    *,
    hosts: list[str],
    scan_name: str,
    credentialed: bool | None,
    ssh_username: str | None,
    seed: int,
    items_per_host: int | None = None,
    start_ms: int | None = None,
    duration_s: int = 600,
    policy_name: str = "Basic Network Scan",
    compliance: bool = False,
) -> bytes:
    """:func:`write_export` into memory."""
    buf = io.BytesIO()
    write_export(
        buf,
        hosts=hosts,
        scan_name=scan_name,
        credentialed=credentialed,
        ssh_username=ssh_username,
        seed=seed,
        items_per_host=items_per_host,
        start_ms=start_ms,
        duration_s=duration_s,
        policy_name=policy_name,
        compliance=compliance,
    )
    return buf.getvalue()


def _pref(name: str, value: str) -> str:
    return f"<preference><name>{escape(name)}</name><value>{escape(value)}</value></preference>\n"


def _policy(policy_name: str, scan_name: str, hosts: list[str]) -> str:
    plugin_set = ";".join(str(p.plugin_id) for p, *_ in NETWORK_VULNS)
    prefs = "".join(
        _pref(k, v)
        for k, v in (
            ("max_hosts", "30"),
            ("max_checks", "4"),
            ("safe_checks", "yes"),
            ("port_range", "default"),
            ("name", scan_name),
            ("TARGET", ",".join(hosts)),
            ("plugin_set", f"{plugin_set};19506;11219;22964;10287;11936"),
        )
    )
    return (
        f"<Policy><policyName>{escape(policy_name)}</policyName>\n<Preferences>"
        f"<ServerPreferences>\n{prefs}</ServerPreferences>\n<PluginsPreferences>"
        "</PluginsPreferences></Preferences>\n</Policy>\n"
    )


def _tag(name: str, value: str) -> str:
    return f"<tag name={quoteattr(name)}>{escape(value)}</tag>\n"


def _report_host(
    host: str,
    seed: int,
    credentialed: bool | None,
    policy_name: str,
    start_ms: int,
    end_ms: int,
    findings: list[Finding],
    audit: Sequence[tuple[str, str]] = (),
) -> Iterator[str]:
    profile = host_profile(host, seed=seed)
    tags = [
        ("HOST_END_TIMESTAMP", str(end_ms // 1000)),
        ("HOST_END", nessus_time(end_ms)),
        ("Credentialed_Scan", "true" if credentialed else "false"),
        (
            "LastAuthenticatedResults" if credentialed else "LastUnauthenticatedResults",
            str(end_ms // 1000),
        ),
        ("policy-used", policy_name),
        ("os", "linux"),
        ("operating-system", profile.os),
        ("system-type", "general-purpose"),
        ("mac-address", profile.mac),
        ("host-ip", profile.ip),
    ]
    if profile.fqdn:
        tags += [("host-fqdn", profile.fqdn), ("hostname", profile.fqdn.split(".")[0])]
    tags += [("HOST_START_TIMESTAMP", str(start_ms // 1000)), ("HOST_START", nessus_time(start_ms))]
    yield f"<ReportHost name={quoteattr(host)}><HostProperties>\n"
    yield "".join(_tag(k, v) for k, v in tags)
    yield "</HostProperties>\n"
    for finding in findings:
        yield _report_item(finding)
    for check, result in audit:
        yield _compliance_item(check, result)
    yield "</ReportHost>\n"


def _report_item(f: Finding) -> str:
    p = f.plugin
    parts = [
        f'<ReportItem port="{f.port}" svc_name={quoteattr(f.svc)} protocol="{f.protocol}" '
        f'severity="{p.severity}" pluginID="{p.plugin_id}" pluginName={quoteattr(p.name)} '
        f"pluginFamily={quoteattr(p.family)}>\n"
    ]

    def child(name: str, value: str | None) -> None:
        if value is not None:
            parts.append(f"<{name}>{escape(value)}</{name}>\n")

    for cve in p.cves:
        child("cve", cve)
    child("cvss3_base_score", p.cvss3_base_score)
    child("cvss3_vector", p.cvss3_vector)
    child("cvss_base_score", p.cvss_base_score)
    child("cvss_vector", p.cvss_vector)
    child("description", p.description)
    if p.exploit_available is not None:
        child("exploit_available", "true" if p.exploit_available else "false")
    child("fname", p.fname or None)
    child("plugin_modification_date", p.modification_date)
    child("plugin_name", p.name)
    child("plugin_publication_date", p.publication_date)
    child("plugin_type", p.plugin_type)
    child("risk_factor", p.risk_factor)
    child("see_also", p.see_also)
    child("solution", p.solution)
    child("synopsis", p.synopsis)
    child("plugin_output", f.output or None)
    parts.append("</ReportItem>\n")
    return "".join(parts)


#: CIS-style checks of the simulated "Linux CIS audit" policy
_CIS_CHECKS = (
    "1.1.1.1 Ensure mounting of cramfs filesystems is disabled",
    "1.4.1 Ensure permissions on bootloader config are configured",
    "1.5.3 Ensure address space layout randomization (ASLR) is enabled",
    "3.3.1 Ensure source routed packets are not accepted",
    "4.2.3 Ensure permissions on all logfiles are configured",
    "5.2.10 Ensure SSH root login is disabled",
    "5.3.1 Ensure password creation requirements are configured",
    "6.1.2 Ensure permissions on /etc/passwd are configured",
)
_AUDIT_FILE = "CIS_Ubuntu_22.04_LTS_v1.0.0_L1_Server.audit"
COMPLIANCE_SEVERITY = {"PASSED": 0, "WARNING": 2, "FAILED": 3}


def compliance_checks(host: str, *, seed: int) -> list[tuple[str, str]]:
    """(check name, PASSED/FAILED/WARNING) of each audit check on ``host``, deterministic."""
    rng = random.Random(f"compliance:{seed}:{host}")
    return [
        (check, rng.choices(("PASSED", "FAILED", "WARNING"), weights=(6, 3, 1))[0])
        for check in _CIS_CHECKS
    ]


def _compliance_item(check: str, result: str) -> str:
    """A compliance ReportItem as Nessus writes audit results (``cm:`` children)."""
    severity = COMPLIANCE_SEVERITY[result]
    return (
        f'<ReportItem port="0" svc_name="general" protocol="tcp" severity="{severity}" '
        'pluginID="21157" pluginName="Unix Compliance Checks" '
        'pluginFamily="Policy Compliance">\n'
        f"<cm:compliance-check-name>{escape(check)}</cm:compliance-check-name>\n"
        f"<cm:compliance-result>{result}</cm:compliance-result>\n"
        f"<cm:compliance-audit-file>{_AUDIT_FILE}</cm:compliance-audit-file>\n"
        "<cm:compliance-policy-value>as the benchmark requires</cm:compliance-policy-value>\n"
        f"<description>{escape(check)}: [{result}]</description>\n"
        "<plugin_name>Unix Compliance Checks</plugin_name>\n"
        "<plugin_type>local</plugin_type>\n"
        "<risk_factor>None</risk_factor>\n"
        "</ReportItem>\n"
    )
