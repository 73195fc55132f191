"""``dlq``: list, show, retry and purge dead letters."""

from __future__ import annotations

import argparse
from typing import Any

from nessus_pool.ops.client import ApiClient, CliError, pages, seg
from nessus_pool.ops.output import emit_json, fmt_duration, fmt_time, note, out, show_task
from nessus_pool.render import plural, render_table


def cmd_dlq_list(client: ApiClient, args: argparse.Namespace) -> int:
    page = pages(
        client,
        "/api/v1/dlq",
        {"pool": args.pool, "page_size": args.page_size, "cursor": args.cursor},
        args.all,
    )
    if args.json:
        emit_json(page)
        return 0
    out(
        render_table(
            ["TASK ID", "POOL", "ATTEMPTS", "REASON", "FINISHED", "NAME", "ERROR"],
            [
                [
                    t["task_id"],
                    t["pool"],
                    t["attempt"],
                    t.get("reason"),
                    fmt_time(t.get("finished_at_ms")),
                    t["name"],
                    _clip(t.get("error"), 60),
                ]
                for t in page["tasks"]
            ],
        )
        if page["tasks"]
        else "the dead-letter queue is empty"
    )
    if page["next_cursor"]:
        note(f"more dead letters: --cursor {page['next_cursor']} (or --all)")
    return 0


def _clip(text: str | None, n: int) -> str | None:
    return text if text is None or len(text) <= n else text[: n - 3] + "..."


def cmd_dlq_show(client: ApiClient, args: argparse.Namespace) -> int:
    data = client.call("GET", f"/api/v1/dlq/{seg(args.task_id)}")
    if args.json:
        emit_json(data)
        return 0
    show_task(data, False)
    events = data.get("events") or []
    if events:
        out()
        out(
            render_table(
                ["AT", "STATUS", "REASON", "DETAIL"],
                [
                    [fmt_time(e.get("at_ms")), e.get("status"), e.get("reason"), e.get("detail")]
                    for e in events
                ],
            )
        )
    return 0


def cmd_dlq_retry(client: ApiClient, args: argparse.Namespace) -> int:
    view = client.call("POST", f"/api/v1/dlq/{seg(args.task_id)}/retry")
    if args.json:
        emit_json(view)
        return 0
    out(
        render_table(
            ["TASK ID", "STATUS", "POOL", "POSITION", "EST. WAIT"],
            [
                [
                    view["task_id"],
                    view["status"],
                    view["pool"],
                    view.get("queue_position"),
                    fmt_duration(view.get("estimated_wait_s")),
                ]
            ],
        )
    )
    return 0


def cmd_dlq_purge(client: ApiClient, args: argparse.Namespace) -> int:
    bulk = args.pool is not None or args.older_than is not None
    if args.task_ids and bulk:
        raise CliError("give task ids or --pool/--older-than, not both", 2)
    if not args.task_ids and not bulk:
        raise CliError("give task ids, --pool or --older-than", 2)
    body: dict[str, Any] = (
        {"task_ids": args.task_ids}
        if args.task_ids
        else {"pool": args.pool, "older_than_s": args.older_than, "confirm": args.yes}
    )
    res = client.call(
        "POST", "/api/v1/dlq/purge", body={k: v for k, v in body.items() if v is not None}
    )
    if args.json:
        emit_json(res)
        return 0
    ids: list[str] = res["task_ids"]
    if res["dry_run"]:
        out(f"dry run: would purge {plural(len(ids), 'dead letter')}")
        for tid in ids:
            out(f"  {tid}")
        if ids:
            note("re-run with --yes to delete them")
    else:
        out(f"purged {plural(res['purged'], 'dead letter')}")
        for tid in ids:
            out(f"  {tid}")
    return 0
