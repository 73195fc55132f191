"""JSON bodies of the simulated Nessus API beyond the scan lifecycle: the template editor,
session, agents and scanners (as Nessus Manager lists them), and a scan's host details and
plugin output. Shapes follow real Nessus answers and pyTenable's fixtures."""

from __future__ import annotations

from typing import Any

from nessus_pool.simulator.export import NESSUS_VERSION, PLUGIN_FEED, Finding, host_profile
from nessus_pool.simulator.reports import CSV_COLUMNS
from nessus_pool.simulator.scanner import ScannerState
from nessus_pool.simulator.state import NOT_FOUND, TEMPLATES, Scan, SimHTTPError

_SECTIONS = (
    ("basic", "Basic", ("name", "description", "folder_id", "text_targets")),
    ("discovery", "Discovery", ("portscan_range", "ping_the_remote_host")),
    ("assessment", "Assessment", ("thorough_tests", "safe_checks")),
    ("report", "Report", ("report_verbosity",)),
    ("advanced", "Advanced", ("max_hosts_per_scan", "max_checks_per_host")),
)


def template_details(template_uuid: str, owner: str) -> dict[str, Any]:
    """``GET /editor/{scan,policy}/templates/{uuid}``: the editor form of one template."""
    template = next((t for t in TEMPLATES if t[2] == template_uuid), None)
    if template is None:
        raise SimHTTPError(404, "Template not found")
    name, title, uuid_ = template
    return {
        "is_was": None,
        "user_permissions": 128,
        "owner": owner,
        "title": title,
        "is_agent": None,
        "uuid": uuid_,
        "filter_attributes": [],
        "name": name,
        "settings": {
            section: {
                "title": label,
                "groups": [],
                "inputs": [
                    {"type": "entry", "name": key.replace("_", " ").title(), "id": key}
                    for key in keys
                ],
            }
            for section, label, keys in _SECTIONS
        },
        "credentials": {
            "data": [
                {
                    "name": "Host",
                    "types": [{"name": "SSH", "max": 1000, "instances": [], "settings": []}],
                }
            ]
        },
        "compliance": {"data": []} if name == "compliance" else None,
        "plugins": {"families": {}},
    }


def session(scanner: ScannerState) -> dict[str, Any]:
    """``GET /session``: the user behind the token or API keys."""
    return {
        "id": 1,
        "username": scanner.options.username,
        "email": None,
        "name": scanner.options.username,
        "type": "local",
        "permissions": 128,
        "lastlogin": scanner.clock.now_ms() // 1000,
        "container_id": 0,
        "groups": None,
        "lockout": 0,
    }


def _agent(scanner: ScannerState, index: int) -> dict[str, Any]:
    now_s = scanner.clock.now_ms() // 1000
    return {
        "id": index,
        "uuid": f"00000000-0000-4000-8000-{scanner.seed % 10**8:08d}{index:04d}",
        "name": f"{scanner.name}-agent-{index}",
        "platform": "LINUX",
        "distro": "es8-x86-64",
        "ip": f"192.0.2.{100 + index}",
        "mac_address": f"02:00:00:00:00:{index:02x}",
        "core_version": NESSUS_VERSION,
        "groups": [1],
        "status": "on",
        "linked_on": now_s - 86_400,
        "last_connect": now_s - 60,
        "last_scanned": None,
        "unlinked_on": None,
        "plugin_feed_id": PLUGIN_FEED,
    }


#: the simulated manager has this many linked agents
AGENTS = 3


def agents(scanner: ScannerState, offset: int, limit: int) -> dict[str, Any]:
    """``GET /agents`` (Nessus Manager only): a page of ``limit`` from ``offset``."""
    if not scanner.options.scan_api:
        raise SimHTTPError(403, "You do not have permission to view this page")
    rows = [_agent(scanner, i) for i in range(1, AGENTS + 1)][offset : offset + limit]
    return {
        "agents": rows,
        "pagination": {
            "total": AGENTS,
            "limit": limit,
            "offset": offset,
            "sort": [{"name": "name", "order": "asc"}],
        },
    }


def agent(scanner: ScannerState, agent_id: int) -> dict[str, Any]:
    if not scanner.options.scan_api:
        raise SimHTTPError(403, "You do not have permission to view this page")
    if not 1 <= agent_id <= AGENTS:
        raise SimHTTPError(404, NOT_FOUND)
    return {"agents": [_agent(scanner, agent_id)]}


def scanners(scanner: ScannerState) -> dict[str, Any]:
    """``GET /scanners``: the local scanner (its linking key is never shown)."""
    now_s = scanner.clock.now_ms() // 1000
    running = scanner.stats().running
    return {
        "scanners": [
            {
                "id": 1,
                "uuid": f"00000000-0000-0000-0000-{scanner.seed % 10**12:012d}",
                "name": "Local Scanner",
                "type": "local",
                "status": "on",
                "scan_count": running,
                "engine_version": NESSUS_VERSION,
                "platform": "LINUX",
                "loaded_plugin_set": PLUGIN_FEED,
                "owner": "system",
                "owner_id": 1,
                "owner_name": "system",
                "linked": 1,
                "pool": False,
                "shared": 1,
                "user_permissions": 128,
                "timestamp": now_s,
                "creation_date": now_s - 86_400,
                "last_modification_date": now_s,
                "last_connect": now_s,
                "license": {"type": "manager" if scanner.options.scan_api else "pro"},
            }
        ]
    }


def export_formats() -> dict[str, Any]:
    """``GET /scans/{id}/export/formats``: what ``POST /scans/{id}/export`` accepts here."""
    return {
        "nessus": None,
        "csv": {"columns": [{"id": c.lower().replace(" ", "_"), "name": c} for c in CSV_COLUMNS]},
        "html": {"templates": [{"id": 1, "name": "Detailed Vulnerabilities By Host"}]},
    }


def _host(scan: Scan, host_id: int) -> str:
    index = host_id - 2  # host ids start at 2, as in GET /scans/{id}
    if not 0 <= index < len(scan.hosts):
        raise SimHTTPError(404, "Host not found")
    return scan.hosts[index]


def _findings(
    scanner: ScannerState, scan: Scan, host: str, history_id: int | None
) -> list[Finding]:
    run = scan.run(history_id)
    if run is None:
        raise SimHTTPError(404, "Host not found")
    return scan.findings(run, host, scanner.seed)


def host_details(
    scanner: ScannerState, scan: Scan, host_id: int, history_id: int | None
) -> dict[str, Any]:
    """``GET /scans/{id}/hosts/{host_id}``: the host's properties and findings by plugin."""
    host = _host(scan, host_id)
    findings = _findings(scanner, scan, host, history_id)
    profile = host_profile(host, seed=scanner.seed)
    rows: dict[int, dict[str, Any]] = {}
    for f in findings:
        row = rows.setdefault(
            f.plugin.plugin_id,
            {
                "count": 0,
                "host_id": host_id,
                "hostname": host,
                "plugin_id": f.plugin.plugin_id,
                "plugin_name": f.plugin.name,
                "plugin_family": f.plugin.family,
                "severity": f.plugin.severity,
                "severity_index": len(rows),
                "vuln_index": len(rows) + 1,
            },
        )
        row["count"] += 1
    info: dict[str, Any] = {
        "host-ip": profile.ip,
        "operating-system": profile.os,
        "mac-address": profile.mac,
    }
    if profile.fqdn:
        info["host-fqdn"] = profile.fqdn
    return {
        "info": info,
        "vulnerabilities": sorted(rows.values(), key=lambda r: (-r["severity"], r["plugin_id"])),
        "compliance": [],
    }


def plugin_output(
    scanner: ScannerState, scan: Scan, host_id: int, plugin_id: int, history_id: int | None
) -> dict[str, Any]:
    """``GET /scans/{id}/hosts/{host_id}/plugins/{plugin_id}``: the plugin's description and
    one output per distinct text, with the ports it was seen on."""
    host = _host(scan, host_id)
    hits = [
        f for f in _findings(scanner, scan, host, history_id) if f.plugin.plugin_id == plugin_id
    ]
    if not hits:
        raise SimHTTPError(404, NOT_FOUND)
    p = hits[0].plugin
    outputs: dict[str, dict[str, Any]] = {}
    for f in hits:
        out = outputs.setdefault(
            f.output,
            {
                "plugin_output": f.output or None,
                "hosts": None,
                "severity": p.severity,
                "ports": {},
                "has_attachment": 0,
                "custom_description": None,
            },
        )
        out["ports"][f"{f.port} / {f.protocol} / {f.svc}"] = [{"hostname": host}]
    return {
        "info": {
            "plugindescription": {
                "severity": p.severity,
                "pluginname": p.name,
                "pluginfamily": p.family,
                "pluginid": str(p.plugin_id),
                "pluginattributes": {
                    "risk_information": {"risk_factor": p.risk_factor},
                    "plugin_name": p.name,
                    "plugin_information": {
                        "plugin_id": p.plugin_id,
                        "plugin_type": p.plugin_type,
                        "plugin_family": p.family,
                        "plugin_modification_date": p.modification_date,
                        "plugin_publication_date": p.publication_date,
                    },
                    "synopsis": p.synopsis,
                    "description": p.description,
                    "solution": p.solution,
                    "see_also": [p.see_also] if p.see_also else None,
                },
            }
        },
        "outputs": list(outputs.values()),
    }
