"""``schedules``: list, show, create, delete and run-now, online through the admin API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from nessus_pool.ops.client import ApiClient, seg
from nessus_pool.ops.output import emit_json, fmt_time, out, print_fields
from nessus_pool.render import render_table

_BASE = "/api/v1/schedules"


def _when(s: dict[str, Any]) -> str:
    if s.get("cron"):
        return f"cron {s['cron']} ({s['timezone']})"
    return f"every {s['every_s']} s"


def cmd_schedules_list(client: ApiClient, args: argparse.Namespace) -> int:
    data = client.call("GET", _BASE)
    if args.json:
        emit_json(data)
        return 0
    rows = data["schedules"]
    if not rows:
        out("no schedules (define [[schedules]] in the config or: nessus-pool schedules create)")
        return 0
    out(
        render_table(
            ["NAME", "WHEN", "TARGETS", "POOL", "NEXT RUN", "ENABLED", "SOURCE", "RUNNING"],
            [
                [
                    s["name"],
                    _when(s),
                    s["targets"] if isinstance(s["targets"], str) else ",".join(s["targets"]),
                    s.get("pool"),
                    s.get("next_run_at"),
                    "yes" if s["enabled"] else "no",
                    s["source"],
                    s.get("active_task_id"),
                ]
                for s in rows
            ],
        )
    )
    return 0


def cmd_schedules_show(client: ApiClient, args: argparse.Namespace) -> int:
    s = client.call("GET", f"{_BASE}/{seg(args.name)}")
    if args.json:
        emit_json(s)
        return 0
    print_fields(
        [
            ("name", s["name"]),
            ("when", _when(s)),
            ("targets", s["targets"]),
            ("pool", s.get("pool")),
            ("scan type", s["scan_type"]),
            ("credential", s.get("credential")),
            ("policy", s.get("policy")),
            ("overlap", s["overlap"]),
            ("catch-up-s", s["catch_up_s"]),
            ("enabled", s["enabled"]),
            ("source", s["source"] + (" (read-only)" if s["read_only"] else "")),
            ("next run", s.get("next_run_at")),
            ("running", s.get("active_task_id")),
        ]
    )
    runs = s.get("runs") or []
    out()
    out(
        render_table(
            ["SLOT", "KIND", "OUTCOME", "TASK ID", "REASON"],
            [
                [fmt_time(r["slot_ms"]), r["kind"], r["outcome"], r.get("task_id"), r.get("reason")]
                for r in runs
            ],
        )
        if runs
        else "no runs yet"
    )
    return 0


def cmd_schedules_create(client: ApiClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "name": args.name,
        "targets": args.targets if len(args.targets) > 1 else args.targets[0],
        "cron": args.cron,
        "every_s": args.every,
        "timezone": args.timezone,
        "pool": args.pool,
        "credential": args.credential,
        "policy": args.policy,
        "priority": args.priority,
        "overlap": args.overlap,
        "catch_up_s": args.catch_up,
        "description": args.description,
    }
    if args.credential is not None:
        body["scan_type"] = "authenticated"
    if args.disabled:
        body["enabled"] = False
    s = client.call("POST", _BASE, body={k: v for k, v in body.items() if v is not None})
    if args.json:
        emit_json(s)
        return 0
    out(f"created schedule {s['name']}: {_when(s)}, next run {s.get('next_run_at') or 'none'}")
    return 0


def cmd_schedules_delete(client: ApiClient, args: argparse.Namespace) -> int:
    res = client.call("DELETE", f"{_BASE}/{seg(args.name)}")
    if args.json:
        emit_json(res)
        return 0
    out(f"deleted schedule {args.name} and its run history")
    return 0


def cmd_schedules_run_now(client: ApiClient, args: argparse.Namespace) -> int:
    res = client.call("POST", f"{_BASE}/{seg(args.name)}/run-now")
    if args.json:
        emit_json(res)
        return 0
    out(f"schedule {args.name} runs now: task {res['run']['task_id']}")
    return 0


Leaf = Callable[..., argparse.ArgumentParser]


def add_schedules_parsers(group: Callable[[str, str], Any], leaf: Leaf) -> None:
    """``schedules list|show|create|delete|run-now`` (``group``/``leaf`` of ops.parser)."""
    sch = group("schedules", "recurring scans: list, show, create, delete, run now")
    leaf(sch, "list", cmd_schedules_list, "list schedules with their next run")
    for name, fn, text in (
        ("show", cmd_schedules_show, "show a schedule and its recent runs"),
        ("delete", cmd_schedules_delete, "delete a schedule created through the API"),
        ("run-now", cmd_schedules_run_now, "run a schedule now, outside its slots"),
    ):
        leaf(sch, name, fn, text).add_argument("name", metavar="NAME")
    p = leaf(sch, "create", cmd_schedules_create, "create a schedule (cron or --every)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="IPs, CIDRs, ranges, names")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5 fields, e.g. '0 2 * * 1' (Mondays 02:00)")
    when.add_argument("--every", type=int, metavar="S", help="an interval in seconds")
    p.add_argument("--timezone", help="IANA zone for --cron (default UTC)")
    p.add_argument("--pool")
    p.add_argument("--credential", help="a configured credential set (authenticated scans)")
    p.add_argument("--policy", help="a saved Nessus policy by name")
    p.add_argument("--priority", type=int, help="-100..100, higher runs first")
    p.add_argument("--overlap", choices=("skip", "queue"), help="default skip")
    p.add_argument("--catch-up", type=int, metavar="S", help="catch-up-s (default 3600)")
    p.add_argument("--description")
    p.add_argument("--disabled", action="store_true", help="create it disabled")
