"""``pools``, ``scanners`` and ``reload``: the daemon's fleet as an operator sees it."""

from __future__ import annotations

import argparse
from typing import Any

from nessus_pool.ops.client import ApiClient, ApiError, CliError, seg
from nessus_pool.ops.output import emit_json, fmt_duration, note, out
from nessus_pool.render import render_table


def cmd_pools(client: ApiClient, args: argparse.Namespace) -> int:
    if args.name:
        data = client.call("GET", f"/api/v1/pools/{seg(args.name)}")
        pools = [data]
    else:
        data = client.call("GET", "/api/v1/pools")
        pools = data["pools"]
    if args.json:
        emit_json(data)
        return 0
    out(
        render_table(
            [
                "POOL",
                "SCANNERS",
                "ACTIVE/CAP",
                "UTIL",
                "QUEUED",
                "MAX",
                "OLDEST",
                "DLQ",
                "MEAN SCAN",
            ],
            [
                [
                    p["name"],
                    len(p["scanners"]),
                    f"{p['active']}/{p['capacity']}",
                    f"{p['utilisation'] * 100:.0f}%",
                    p["queue_depth"],
                    p["max_queued"],
                    fmt_duration(p.get("oldest_queued_age_s")),
                    p["dlq_depth"],
                    fmt_duration(p.get("mean_scan_duration_s")),
                ]
                for p in pools
            ],
        )
        if pools
        else "no pools"
    )
    if args.name:
        out()
        _scanner_table(pools[0]["scanners"])
    return 0


def scanner_state(s: dict[str, Any]) -> str:
    """The daemon's ``state`` when it sends one; derived the same way for older daemons:
    an operator's decision (draining, disabled) first, then health."""
    state = s.get("state")
    if isinstance(state, str):
        return state
    if s["draining"]:
        return "draining"
    if not s["enabled"]:
        return "disabled"
    if not s["reachable"]:
        return "down"
    return "export-only" if s["export_only"] else "up"


def _scanner_table(scanners: list[dict[str, Any]]) -> None:
    out(
        render_table(
            ["SCANNER", "POOL", "STATE", "ACTIVE/CAP", "CIRCUIT", "VERSION", "URL", "MESSAGE"],
            [
                [
                    s["id"],
                    s["pool"],
                    scanner_state(s),
                    f"{s['active_scans']}/{s['capacity']}",
                    s["circuit_state"],
                    s.get("version"),
                    s["url"],
                    s.get("message") or None,
                ]
                for s in scanners
            ],
        )
        if scanners
        else "no scanners"
    )


def cmd_scanners(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action != "list" and not args.scanner_id:
        raise CliError(f"scanners {args.action} needs a scanner id", 2)
    if args.action == "list":
        data = client.call("GET", "/api/v1/scanners", query={"pool": args.pool})
        scanners = data["scanners"]
    elif args.action == "show":
        data = client.call("GET", f"/api/v1/scanners/{seg(args.scanner_id)}")
        scanners = [data]
    else:
        data = client.call("POST", f"/api/v1/scanners/{seg(args.scanner_id)}/{args.action}")
        scanners = [data]
    if args.json:
        emit_json(data)
        return 0
    _scanner_table(scanners)
    if args.action == "drain":
        note(f"{args.scanner_id} is draining: running scans finish, no new scans start there")
        if data.get("note"):
            note(str(data["note"]))
    elif args.action == "enable":
        note(f"{args.scanner_id} takes new scans again")
    return 0


def cmd_policies(client: ApiClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/api/v1/policies", query={"pool": args.pool})
    if args.json:
        emit_json(data)
        return 0
    rows = [
        [
            p["pool"],
            s["scanner"],
            "(not listed yet)" if s["policies"] is None else ", ".join(s["policies"]) or "-",
        ]
        for p in data["pools"]
        for s in p["scanners"]
    ]
    out(render_table(["POOL", "SCANNER", "SAVED POLICIES"], rows))
    for p in data["pools"]:
        if p["default_policy"]:
            note(f"pool {p['pool']}: default policy {p['default_policy']!r}")
    return 0


def cmd_reload(client: ApiClient, args: argparse.Namespace) -> int:
    try:
        outcome = client.call("POST", "/api/v1/reload")
    except ApiError as exc:
        # a refused reload is an error (400 reload_refused); the request was fine, the
        # daemon kept its old config, so the operation failed (1) and says why as before
        err = exc.body.get("error") if isinstance(exc.body, dict) else None
        if not (isinstance(err, dict) and err.get("code") == "reload_refused"):
            raise
        outcome = {"applied": False, "message": str(err.get("message", ""))}
    if args.json:
        emit_json(outcome)
    else:
        out(outcome["message"])
        for kind, names in (outcome.get("changes") or {}).items():
            out(f"  {kind.replace('_', ' ')}: {', '.join(names)}")
        for w in outcome.get("warnings") or []:
            note(f"warning: {w}")
    return 0 if outcome["applied"] else 1
