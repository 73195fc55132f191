"""``scan`` and ``tasks``: submit, wait for, show, cancel, list scans and fetch their
results, differences and exports."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nessus_pool.models import TERMINAL_STATUSES, ScanType, status_values
from nessus_pool.ops.client import ApiClient, CliError, Unreachable, pages, seg
from nessus_pool.ops.output import Progress, emit_json, fmt_duration, fmt_time, note, out, show_task
from nessus_pool.render import diff_text, findings_text, render_table

TERMINAL = frozenset(status_values(TERMINAL_STATUSES))
SCAN_TYPES = tuple(t.value for t in ScanType)


def wait_for_task(
    client: ApiClient, task_id: str, *, poll_s: float, timeout_s: float | None
) -> dict[str, Any]:
    """Poll ``GET /api/v1/scans/{id}`` until the task ends; rides out a daemon restart of up
    to ~30 s. Raises CliError when ``timeout_s`` passes first."""
    progress = Progress()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    misses = 0
    try:
        while True:
            try:
                view: dict[str, Any] = client.call("GET", f"/api/v1/scans/{seg(task_id)}")
                misses = 0
            except Unreachable:
                misses += 1
                if misses * poll_s > 30:
                    raise
            else:
                progress.show(view)
                if view["status"] in TERMINAL:
                    return view
            if deadline is not None and time.monotonic() >= deadline:
                raise CliError(
                    f"stopped waiting after {timeout_s:g}s; task {task_id} goes on "
                    f"(nessus-pool scan status {task_id})"
                )
            time.sleep(poll_s)
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; task {task_id} goes on", 130) from None
    finally:
        progress.done()


def cmd_scan_submit(client: ApiClient, args: argparse.Namespace) -> int:
    body = {
        k: v
        for k, v in {
            "targets": args.targets,
            "name": args.name,
            "description": args.description,
            "pool": args.pool,
            "scanner": args.scanner,
            "scan_type": args.scan_type,
            "credential": args.credential,
            "policy": args.policy,
            "priority": args.priority,
            "idempotency_key": args.idempotency_key,
        }.items()
        if v is not None
    }
    res = client.call("POST", "/api/v1/scans", body=body)
    if not args.wait:
        if args.json:
            emit_json(res)
            return 0
        out(
            render_table(
                ["TASK ID", "STATUS", "POOL", "POSITION", "EST. WAIT", "DUPLICATE"],
                [
                    [
                        res["task_id"],
                        res["status"],
                        res["pool"],
                        res.get("queue_position"),
                        fmt_duration(res.get("estimated_wait_s")),
                        res.get("duplicate", False),
                    ]
                ],
            )
        )
        return 0
    view = wait_for_task(
        client, res["task_id"], poll_s=args.poll_interval, timeout_s=args.wait_timeout
    )
    show_task(view, args.json)
    return 0 if view["status"] == "completed" else 1


def cmd_scan_status(client: ApiClient, args: argparse.Namespace) -> int:
    show_task(client.call("GET", f"/api/v1/scans/{seg(args.task_id)}"), args.json)
    return 0


def cmd_scan_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    view = client.call("POST", f"/api/v1/scans/{seg(args.task_id)}/cancel")
    if args.json:
        emit_json(view)
    else:
        word = (
            "canceled"
            if view["status"] == "canceled"
            else "cancel requested; the scan is being stopped on its scanner"
        )
        out(
            render_table(
                ["TASK ID", "STATUS", "POOL", "SCANNER"],
                [[view["task_id"], view["status"], view["pool"], view.get("scanner")]],
            )
        )
        note(f"{word}: {view['task_id']}")
    return 0


def cmd_scan_pause(client: ApiClient, args: argparse.Namespace) -> int:
    show_task(client.call("POST", f"/api/v1/scans/{seg(args.task_id)}/pause"), args.json)
    return 0


def cmd_scan_resume(client: ApiClient, args: argparse.Namespace) -> int:
    show_task(client.call("POST", f"/api/v1/scans/{seg(args.task_id)}/resume"), args.json)
    return 0


def cmd_scan_results(client: ApiClient, args: argparse.Namespace) -> int:
    filters = {
        name: getattr(args, name)
        for name in (
            "min_severity",
            "min_cvss3",
            "host",
            "port",
            "protocol",
            "plugin_id",
            "plugin_family",
            "cve",
            "exploit_available",
            "text",
            "sort",
        )
    }
    query = {
        **{f"filters.{k}": v for k, v in filters.items()},
        "page": args.page,
        "page_size": args.page_size,
        "schema_profile": args.schema_profile,
        "custom_fields": args.fields,
    }
    page = client.call("GET", f"/api/v1/scans/{seg(args.task_id)}/results", query=query)
    if args.json:
        emit_json(page)
        return 0
    out(findings_text(page))
    return 0


def cmd_scan_hosts(client: ApiClient, args: argparse.Namespace) -> int:
    """One page of an ended scan's per-host results, and how to ask for the next."""
    query = {
        "auth_status": args.auth_status,
        "min_severity": args.min_severity,
        "page": args.page,
        "page_size": args.page_size,
        "cursor": args.cursor,
    }
    page = client.call("GET", f"/api/v1/scans/{seg(args.task_id)}/hosts", query=query)
    if args.json:
        emit_json(page)
        return 0
    rows = []
    for h in page["hosts"]:
        b = h.get("severity_breakdown") or {}
        counts = [b.get(k, 0) for k in ("critical", "high", "medium", "low", "info")]
        rows.append([h["name"], h.get("ip"), h.get("authentication_status"), *counts, h.get("os")])
    headers = ["HOST", "IP", "AUTH", "CRIT", "HIGH", "MED", "LOW", "INFO", "OS"]
    if rows:
        out(render_table(headers, rows))
    where = f"page {page['page']}/{page['pages']}" if page.get("page") else "from the cursor"
    more = f"; next: --cursor {page['next_cursor']}" if page.get("next_cursor") else ""
    out(f"{len(rows)} of {page['total']} hosts, {where}{more}")
    return 0


def cmd_scan_compare(client: ApiClient, args: argparse.Namespace) -> int:
    data = client.call(
        "GET", f"/api/v1/scans/{seg(args.task_id)}/compare", query={"base_task_id": args.base}
    )
    if args.json:
        emit_json(data)
        return 0
    out(diff_text(data["diff"], old_label=data["base_task_id"], new_label=data["task_id"]))
    return 0


def cmd_scan_download(client: ApiClient, args: argparse.Namespace) -> int:
    path = f"/api/v1/scans/{seg(args.task_id)}/export"
    if args.output == "-":
        client.download(path, sys.stdout.buffer.write)
        sys.stdout.flush()
        return 0
    dest = Path(args.output or f"{args.task_id}.nessus")
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with tmp.open("wb") as fh:
            size = client.download(path, fh.write)
        tmp.replace(dest)
    except OSError as exc:
        raise CliError(f"cannot write {dest}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    if args.json:
        emit_json({"task_id": args.task_id, "path": str(dest), "bytes": size})
    else:
        out(f"wrote {dest} ({size} bytes)")
    return 0


TASK_HEADERS = ["TASK ID", "STATUS", "POOL", "SCANNER", "PROGRESS", "CREATED", "NAME"]


def _task_row(t: dict[str, Any]) -> list[object]:
    pct = t.get("progress_pct")
    return [
        t["task_id"],
        t["status"],
        t["pool"],
        t.get("scanner"),
        None if pct is None else f"{pct}%",
        fmt_time(t["created_at_ms"]),
        t["name"],
    ]


def cmd_tasks_list(client: ApiClient, args: argparse.Namespace) -> int:
    page = pages(
        client,
        "/api/v1/scans",
        {
            "status": args.status,
            "pool": args.pool,
            "target": args.target,
            "page_size": args.page_size,
            "cursor": args.cursor,
        },
        args.all,
    )
    if args.json:
        emit_json(page)
        return 0
    out(
        render_table(TASK_HEADERS, [_task_row(t) for t in page["tasks"]])
        if page["tasks"]
        else "no tasks"
    )
    if page["next_cursor"]:
        note(f"more tasks: --cursor {page['next_cursor']} (or --all)")
    return 0
