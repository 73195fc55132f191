"""``notifications``: list failed webhook deliveries and send one again."""

from __future__ import annotations

import argparse

from nessus_pool.ops.client import ApiClient, seg
from nessus_pool.ops.output import emit_json, fmt_time, out
from nessus_pool.render import plural, render_table


def _clip(text: str | None, n: int) -> str | None:
    return text if text is None or len(text) <= n else text[: n - 3] + "..."


def cmd_notifications_failed(client: ApiClient, args: argparse.Namespace) -> int:
    data = client.call(
        "GET", "/api/v1/notifications/failed", query={"limit": args.limit, "target": args.target}
    )
    if args.json:
        emit_json(data)
        return 0
    rows = data["deliveries"]
    if not rows:
        out("no failed deliveries")
        return 0
    out(
        render_table(
            ["DELIVERY ID", "TARGET", "EVENT", "TASK ID", "ATTEMPTS", "LAST TRY", "ERROR"],
            [
                [
                    r["delivery_id"],
                    r["target"],
                    r["event"],
                    r["task_id"],
                    r["attempts"],
                    fmt_time(r["updated_at_ms"]),
                    _clip(r.get("last_error"), 60),
                ]
                for r in rows
            ],
        )
    )
    out(f"{plural(len(rows), 'failed delivery', 'failed deliveries')}; retry one with "
        "`nessus-pool notifications retry DELIVERY_ID`")  # fmt: skip
    return 0


def cmd_notifications_retry(client: ApiClient, args: argparse.Namespace) -> int:
    view = client.call("POST", f"/api/v1/notifications/{seg(args.delivery_id)}/retry")
    if args.json:
        emit_json(view)
        return 0
    out(f"delivery {view['delivery_id']} ({view['event']} to {view['target']}) is {view['state']}")
    return 0
