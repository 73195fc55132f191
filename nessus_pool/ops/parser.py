"""The ``argparse`` tree of the operator commands, and the wrapper that turns a
:class:`CliError` into its message and exit code."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from nessus_pool.ops.client import (
    DEFAULT_URL,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    URL_ENV,
    ApiClient,
    ApiError,
    CliError,
    resolve_token,
    resolve_url,
)
from nessus_pool.ops.cluster import cmd_cluster
from nessus_pool.ops.deadletters import cmd_dlq_list, cmd_dlq_purge, cmd_dlq_retry, cmd_dlq_show
from nessus_pool.ops.fleet import cmd_policies, cmd_pools, cmd_reload, cmd_scanners
from nessus_pool.ops.notifications import cmd_notifications_failed, cmd_notifications_retry
from nessus_pool.ops.output import emit_json, note
from nessus_pool.ops.scan import (
    SCAN_TYPES,
    cmd_scan_cancel,
    cmd_scan_compare,
    cmd_scan_download,
    cmd_scan_hosts,
    cmd_scan_pause,
    cmd_scan_results,
    cmd_scan_resume,
    cmd_scan_status,
    cmd_scan_submit,
    cmd_tasks_list,
)
from nessus_pool.ops.schedules import add_schedules_parsers

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``1d12h`` -> seconds (argparse type)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw]?)", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 15m, 12h, 7d)")
    return sum(float(n) * _DURATION_UNITS[u or "s"] for n, u in parts)


Command = Callable[[ApiClient, argparse.Namespace], int]


def _handler(fn: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            client = ApiClient(resolve_url(args.url), resolve_token(args.token_file), args.timeout)
            return fn(client, args)
        except CliError as exc:
            if args.json and isinstance(exc, ApiError) and exc.body is not None:
                emit_json(exc.body)
            note(f"error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:
            note("interrupted")
            return 130

    return run


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument("--url", help=f"daemon URL (default: ${URL_ENV} or {DEFAULT_URL})")
    g.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding the bearer token (default: ${TOKEN_ENV}, then ${TOKEN_FILE_ENV})",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for each answer (default: 30)",
    )
    g.add_argument("--json", action="store_true", help="print the API's JSON")
    return p


def _page_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--page-size",
        "--limit",
        dest="page_size",
        type=int,
        default=50,
        metavar="N",
        help="rows per page, 1-500 (default: 50; --limit is an alias)",
    )
    p.add_argument("--cursor", help="the next_cursor of the previous page")
    p.add_argument("--all", action="store_true", help="follow cursors to the end")


def _add_notifications(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], leaf: Callable[..., Any]
) -> None:
    p = leaf(sub, "failed", cmd_notifications_failed, "list deliveries that used up their attempts")
    p.add_argument("--target", help="only this [[notifications]] target")
    p.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    p = leaf(sub, "retry", cmd_notifications_retry, "send a failed delivery again")
    p.add_argument("delivery_id", metavar="DELIVERY_ID")


def add_ops_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``scan``, ``tasks``, ``pools``, ``scanners``, ``dlq`` and ``reload``."""
    common = _common()

    def leaf(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        fn: Command,
        help: str,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(handler=_handler(fn))
        return p

    def group(name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        p = sub.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    scan = group("scan", "submit, watch, cancel and fetch scans on a running daemon")
    p = leaf(scan, "submit", cmd_scan_submit, "queue a scan")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="IPs, CIDRs, ranges, names")
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument(
        "--pool",
        help="pool (default: the pool whose allowed-targets cover the targets most narrowly, "
        "among pools with an enabled scanner)",
    )
    p.add_argument("--scanner", help="pin to one scanner of the pool")
    p.add_argument("--scan-type", choices=SCAN_TYPES)
    p.add_argument("--credential", help="a configured credential set (authenticated scans)")
    p.add_argument("--policy", help="a saved Nessus policy by name (see: nessus-pool policies)")
    p.add_argument("--priority", type=int, help="-100..100, higher runs first")
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the task")
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the scan with a progress bar on stderr until it ends "
        "(exit 1 unless it completes)",
    )
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--wait-timeout", type=float, metavar="S", help="give up waiting after S s")
    for name, fn, text in (
        ("status", cmd_scan_status, "show one task"),
        ("cancel", cmd_scan_cancel, "cancel a queued or running scan"),
        ("pause", cmd_scan_pause, "pause a running scan on its scanner (it keeps its slot)"),
        ("resume", cmd_scan_resume, "resume a paused scan"),
    ):
        leaf(scan, name, fn, text).add_argument("task_id", metavar="TASK_ID")
    p = leaf(scan, "results", cmd_scan_results, "list findings of an ended scan")
    p.add_argument("task_id", metavar="TASK_ID")
    # the same options as the offline `results findings`, sent as the API's filters.*
    p.add_argument("--min-severity", help="0-4 or info, low, medium, high, critical")
    p.add_argument("--min-cvss3", type=float)
    p.add_argument("--host", help="IP, CIDR or exact hostname/FQDN")
    p.add_argument("--port", type=int)
    p.add_argument("--protocol")
    p.add_argument("--plugin-id", type=int)
    p.add_argument("--plugin-family")
    p.add_argument("--cve")
    p.add_argument("--exploit-available", action="store_true", default=None)
    p.add_argument("--text", help="case-insensitive substring of the plugin name")
    p.add_argument("--sort", choices=("severity", "cvss3", "host", "plugin_id", "port"))
    p.add_argument("--page", type=int)
    p.add_argument("--page-size", type=int)
    p.add_argument(
        "--schema-profile",
        "--profile",
        dest="schema_profile",
        choices=("minimal", "summary", "brief", "full", "custom"),
        help="fields per finding (--profile is an alias)",
    )
    p.add_argument("--fields", help="comma-separated fields (implies --profile custom)")
    p = leaf(scan, "hosts", cmd_scan_hosts, "list per-host results of an ended scan, a page")
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument(
        "--auth-status", choices=("success", "failed", "partial", "unknown", "not_applicable")
    )
    p.add_argument("--min-severity", help="hosts with a finding this severe: 0-4 or a name")
    p.add_argument("--page", type=int)
    p.add_argument("--page-size", type=int, help="1-500 (default 50)")
    p.add_argument("--cursor", help="the next_cursor the previous page printed")
    p = leaf(scan, "compare", cmd_scan_compare, "what changed since an earlier scan")
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument(
        "--base",
        metavar="TASK_ID",
        help="the earlier scan (default: the last completed scan of the same targets)",
    )
    p = leaf(scan, "download", cmd_scan_download, "save the raw .nessus export")
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument("-o", "--output", metavar="FILE", help="default TASK_ID.nessus; - for stdout")

    # "scan list" is what users type first; "tasks list" is the same command
    for parent in (scan, group("tasks", "list tasks (the same as scan list)")):
        p = leaf(parent, "list", cmd_tasks_list, "list tasks, newest first")
        p.add_argument("--status", help="comma-separated: queued,running,completed,...")
        p.add_argument("--pool")
        p.add_argument("--target", help="an address, CIDR or name the task's targets overlap")
        _page_args(p)

    p = leaf(sub, "pools", cmd_pools, "show pools (queue depth, capacity, DLQ)")
    p.add_argument("name", nargs="?", help="one pool, with its scanners")

    p = leaf(sub, "scanners", cmd_scanners, "list scanners, or show, drain or enable one")
    p.add_argument("action", nargs="?", default="list", choices=("list", "show", "drain", "enable"))
    p.add_argument("scanner_id", nargs="?", metavar="ID")
    p.add_argument("--pool", help="only this pool's scanners (list)")

    p = leaf(sub, "policies", cmd_policies, "saved Nessus policies per pool and scanner")
    p.add_argument("--pool", help="only this pool")

    dlq = group("dlq", "the dead-letter queue: scans that ran out of attempts")
    p = leaf(dlq, "list", cmd_dlq_list, "list dead letters, newest first")
    p.add_argument("--pool")
    _page_args(p)
    for name, fn, text in (
        ("show", cmd_dlq_show, "show a dead letter and its events"),
        ("retry", cmd_dlq_retry, "queue a dead letter again"),
    ):
        leaf(dlq, name, fn, text).add_argument("task_id", metavar="TASK_ID")
    p = leaf(
        dlq,
        "purge",
        cmd_dlq_purge,
        "delete dead letters by id, or by --pool/--older-than (a dry run without --yes)",
    )
    p.add_argument("task_ids", nargs="*", metavar="TASK_ID")
    p.add_argument("--pool")
    p.add_argument("--older-than", type=parse_duration, metavar="AGE", help="e.g. 7d, 12h")
    p.add_argument("--yes", action="store_true", help="really delete a --pool/--older-than set")

    _add_notifications(group("notifications", "webhook deliveries that failed"), leaf)

    leaf(sub, "reload", cmd_reload, "reload the config file (like SIGHUP)")
    add_schedules_parsers(group, leaf)
    leaf(sub, "cluster", cmd_cluster, "daemons, scanner leases and config differences")
