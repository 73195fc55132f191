"""JSON bodies of the simulated Nessus API, shaped like real Nessus / Nessus Manager answers."""

from __future__ import annotations

import re
from typing import Any

from nessus_pool.simulator.export import (
    COMPLIANCE_SEVERITY,
    NESSUS_BUILD,
    NESSUS_VERSION,
    PLUGIN_FEED,
    compliance_checks,
    generate_export,
)
from nessus_pool.simulator.reports import render_csv, render_html
from nessus_pool.simulator.scanner import ScannerState
from nessus_pool.simulator.state import (
    ACTIVE,
    MY_SCANS_FOLDER_ID,
    TEMPLATES,
    TRASH_FOLDER_ID,
    Run,
    Scan,
)

_DESCRIPTIONS = {
    "basic": "A full system scan suitable for any host.",
    "advanced": "Configure a scan without using any recommendations.",
    "discovery": "A simple scan to discover live hosts and open ports.",
    "webapp": "Scan for published and unknown web vulnerabilities using Nessus Scanner.",
    "compliance": "Audit system configurations against a known baseline.",
    "malware": "Scan for malware on Windows and Unix systems.",
}


def server_properties(scanner: ScannerState) -> dict[str, Any]:
    manager = scanner.options.scan_api
    return {
        "nessus_type": "Nessus Manager" if manager else "Nessus Professional",
        "server_version": NESSUS_VERSION,
        "server_build": NESSUS_BUILD,
        "nessus_ui_version": NESSUS_VERSION,
        "nessus_ui_build": "77",
        "plugin_set": PLUGIN_FEED,
        "loaded_plugin_set": PLUGIN_FEED,
        "server_uuid": f"sim-{scanner.name}",
        "platform": "LINUX",
        "idle_timeout": "30",
        "scanner_boottime": 1767225600,
        "restart_pending": None,
        "update": None,
        "license": {
            "type": "manager" if manager else "pro",
            "name": "Nessus Manager" if manager else "Nessus Professional",
            "expiration_date": 1830297600,
            "restricted": not manager,
            "ips": 4096 if manager else "unlimited",
            "agents": 1024 if manager else 0,
            "scanners": 64 if manager else 0,
            "mode": 1,
            "features": _features(manager),
        },
        "features": _features(manager),
        "capabilities": {
            "multi_scanner": manager,
            "multi_user": "full" if manager else "none",
            "report_email_config": manager,
            "two_factor": {"smtp": False},
        },
        "enterprise": manager,
    }


def _features(manager: bool) -> dict[str, bool]:
    return {
        "api": True,
        "scan_api": manager,
        "users": manager,
        "policies": True,
        "report": True,
        "logs": True,
        "remote_link": manager,
        "plugin_rules": True,
        "local_scanners": True,
        "cluster": manager,
        "agent_updates": manager,
    }


def templates() -> dict[str, Any]:
    return {
        "templates": [
            {
                "uuid": uuid,
                "name": name,
                "title": title,
                "desc": _DESCRIPTIONS[name],
                "cloud_only": False,
                "subscription_only": False,
                "is_agent": False,
                "more_info": None,
                "unsupported": False,
                "manager_only": False,
                "icon": None,
            }
            for name, title, uuid in TEMPLATES
        ]
    }


def folders(scanner: ScannerState) -> list[dict[str, Any]]:
    unread = sum(1 for s in scanner.scans.values() if s.folder_id == MY_SCANS_FOLDER_ID)
    return [
        {
            "unread_count": 0,
            "custom": 0,
            "default_tag": 0,
            "type": "trash",
            "name": "Trash",
            "id": TRASH_FOLDER_ID,
        },
        {
            "unread_count": unread,
            "custom": 0,
            "default_tag": 1,
            "type": "main",
            "name": "My Scans",
            "id": MY_SCANS_FOLDER_ID,
        },
        *(
            {
                "unread_count": sum(1 for s in scanner.scans.values() if s.folder_id == fid),
                "custom": 1,
                "default_tag": 0,
                "type": "custom",
                "name": name,
                "id": fid,
            }
            for fid, name in scanner.custom_folders.items()
        ),
    ]


def scan_list(
    scanner: ScannerState, *, folder_id: int | None, modified_after: int | None
) -> dict[str, Any]:
    now = scanner.now()
    rows = []
    for scan in scanner.scans.values():
        modified_s = scan.last_modified_ms(now) // 1000
        if folder_id is not None and scan.folder_id != folder_id:
            continue
        if modified_after is not None and modified_s <= modified_after:
            continue
        run = scan.run()
        rows.append(
            {
                "folder_id": scan.folder_id,
                "type": "local",
                "read": False,
                "last_modification_date": modified_s,
                "creation_date": scan.created_ms // 1000,
                "status": scan.status(now),
                "uuid": run.uuid if run else scan.uuid,
                "shared": False,
                "user_permissions": 128,
                "owner": scan.owner,
                "timezone": None,
                "rrules": None,
                "starttime": None,
                "enabled": scan.enabled,
                "control": True,
                "live_results": 0,
                "name": scan.name,
                "id": scan.id,
            }
        )
    return {
        "folders": folders(scanner),
        "scans": rows or None,
        "timestamp": scanner.clock.now_ms() // 1000,
    }


def created_scan(scanner: ScannerState, scan: Scan) -> dict[str, Any]:
    return {
        "creation_date": scan.created_ms // 1000,
        "custom_targets": scan.text_targets,
        "default_permisssions": 0,
        "description": scan.description or None,
        "emails": None,
        "enabled": scan.enabled,
        "id": scan.id,
        "last_modification_date": scan.modified_ms // 1000,
        "name": scan.name,
        "notification_filter_type": "and",
        "notification_filters": None,
        "owner": scan.owner,
        "owner_id": 1,
        "policy_id": scan.id + 1,
        "rrules": None,
        "scanner_id": 1,
        "shared": 0,
        "starttime": None,
        "tag_id": scan.folder_id,
        "timezone": None,
        "type": "public",
        "user_permissions": 128,
        "uuid": scan.uuid,
    }


def scan_details(scanner: ScannerState, scan: Scan, history_id: int | None) -> dict[str, Any]:
    now = scanner.now()
    run = scan.run(history_id)
    status = scan.status(now, history_id)
    info: dict[str, Any] = {
        "owner": scan.owner,
        "name": scan.name,
        "no_target": False,
        "folder_id": scan.folder_id,
        "control": True,
        "user_permissions": 128,
        "schedule_uuid": scan.uuid,
        "edit_allowed": True,
        "scanner_name": "Local Scanner",
        "policy": scan.policy,
        "shared": None,
        "object_id": scan.id,
        "tag_targets": None,
        "acls": None,
        "hostcount": 0,
        "uuid": run.uuid if run else None,
        "status": status,
        "scan_type": "local",
        "targets": scan.text_targets,
        "alt_targets_used": False,
        "pci-can-upload": False,
        "scan_start": None,
        "timestamp": scanner.clock.now_ms() // 1000,
        "is_archived": False,
        "reindexing": False,
        "scan_end": None,
        "haskb": True,
        "hasaudittrail": True,
        "scanner_start": None,
        "scanner_end": None,
    }
    hosts: list[dict[str, Any]] = []
    vulns: dict[int, dict[str, Any]] = {}
    if run is not None:
        _, elapsed_s, end = run.replay(now)
        info["scan_start"] = run.launched_ms // 1000
        info["scanner_start"] = run.launched_ms // 1000
        if end is not None:
            info["scan_end"] = info["scanner_end"] = run.wall_ms(end) // 1000
        if elapsed_s >= run.edge_s or status not in ACTIVE:
            hosts = _hosts(scanner, scan, run, elapsed_s / run.scan_s, vulns)
        info["hostcount"] = len(hosts)
    elif scan.fixed_status is not None:
        info["hostcount"] = len(scan.hosts)
    return {
        "info": info,
        "hosts": hosts,
        "comphosts": hosts if scan.compliance else [],
        "compliance": _compliance_rows(scanner, scan, hosts),
        "notes": None,
        "vulnerabilities": sorted(vulns.values(), key=lambda v: (-v["severity"], v["plugin_id"])),
        "history": [_history(scan, r, now) for r in scan.runs] or None,
        "remediations": {
            "remediations": None,
            "num_hosts": len(hosts),
            "num_cves": 0,
            "num_impacted_hosts": 0,
            "num_remediated_cves": 0,
        },
        "filters": [],
    }


def _hosts(
    scanner: ScannerState,
    scan: Scan,
    run: Run,
    fraction: float,
    vulns: dict[int, dict[str, Any]],
) -> list[dict[str, Any]]:
    out = []
    for index, host in enumerate(scan.hosts):
        # hosts progress at different rates; each reaches 100 by the end of the run
        rate = 1.0 + (int.from_bytes(host.encode()[-2:].rjust(2, b"\0"), "big") % 60) / 100
        done = 1.0 if run.status(scanner.now()) == "completed" else min(1.0, fraction * rate)
        findings = scan.findings(run, host, scanner.seed)
        visible = findings[: int(len(findings) * done)]
        counts = [0, 0, 0, 0, 0]
        for f in visible:
            counts[f.plugin.severity] += 1
            row = vulns.setdefault(
                f.plugin.plugin_id,
                {
                    "count": 0,
                    "plugin_id": f.plugin.plugin_id,
                    "plugin_name": f.plugin.name,
                    "severity": f.plugin.severity,
                    "plugin_family": f.plugin.family,
                    "vuln_index": len(vulns) + 1,
                },
            )
            row["count"] += 1
        current = round(100 * done)
        out.append(
            {
                "asset_id": index + 2,
                "host_id": index + 2,
                "uuid": None,
                "hostname": host,
                "progress": f"{current}-{current}/100-100",
                "scanprogresscurrent": current,
                "scanprogresstotal": 100,
                "numchecksconsidered": current,
                "totalchecksconsidered": 100,
                "severitycount": {
                    "item": [{"count": c, "severitylevel": i} for i, c in enumerate(counts)]
                },
                "severity": sum(counts),
                "score": sum(c * 10**i for i, c in enumerate(counts)),
                "info": counts[0],
                "low": counts[1],
                "medium": counts[2],
                "high": counts[3],
                "critical": counts[4],
                "host_index": index,
            }
        )
    return out


def _compliance_rows(
    scanner: ScannerState, scan: Scan, hosts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The audit checks of a compliance scan, one row per check (counted over the hosts
    shown), as ``GET /scans/{id}`` lists them beside ``vulnerabilities``."""
    if not scan.compliance:
        return []
    rows: dict[str, dict[str, Any]] = {}
    for h in hosts:
        for check, result in compliance_checks(h["hostname"], seed=scanner.seed):
            row = rows.setdefault(
                check,
                {
                    "count": 0,
                    "plugin_id": 21157,
                    "plugin_name": check,
                    "plugin_family": "Policy Compliance",
                    "severity": 0,
                    "severity_index": len(rows),
                },
            )
            row["count"] += 1
            row["severity"] = max(row["severity"], COMPLIANCE_SEVERITY[result])
    return list(rows.values())


def _history(scan: Scan, run: Run, now_s: float) -> dict[str, Any]:
    status, _, end = run.replay(now_s)
    return {
        "history_id": run.history_id,
        "uuid": run.uuid,
        "owner_id": 1,
        "status": status,
        "creation_date": run.launched_ms // 1000,
        "last_modification_date": run.wall_ms(end if end is not None else now_s) // 1000,
        "type": "local",
        "scheduler": 0,
        "alt_targets_used": False,
        "is_archived": False,
        "owner": scan.owner,
    }


def export_bytes(
    scanner: ScannerState, scan: Scan, history_id: int | None, fmt: str = "nessus"
) -> bytes:
    """The export in ``fmt``; CSV and HTML are rendered from the ``.nessus`` document."""
    nessus = _nessus_bytes(scanner, scan, history_id)
    if fmt == "csv":
        return render_csv(nessus)
    if fmt == "html":
        return render_html(nessus, scan.name)
    return nessus


def _nessus_bytes(scanner: ScannerState, scan: Scan, history_id: int | None) -> bytes:
    run = scan.run(history_id)
    start_ms = run.launched_ms if run else scan.created_ms
    duration_s = int(run.scan_s) if run else 0
    return generate_export(
        hosts=scan.hosts,
        scan_name=scan.name,
        credentialed=scan.credentialed,
        ssh_username=scan.ssh_username,
        seed=scanner.seed,
        start_ms=start_ms,
        duration_s=duration_s,
        policy_name=scan.policy,
        compliance=scan.compliance,
    )


def export_filename(scan: Scan, fmt: str = "nessus") -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", scan.name).strip("_") or "scan"
    return f"{safe}_{scan.id}.{fmt}"
