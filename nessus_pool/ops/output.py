"""What the operator commands print: durations and times, fields, the progress line and
one task's details. Tables and JSON come from :mod:`nessus_pool.render`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from nessus_pool.render import cell, dumps_json


def fmt_duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def out(text: str = "") -> None:
    print(text, file=sys.stdout)


def note(text: str) -> None:
    print(text, file=sys.stderr)


def emit_json(data: Any) -> None:
    out(dumps_json(data))


def print_fields(pairs: Iterable[tuple[str, object]]) -> None:
    shown = [(k, cell(v)) for k, v in pairs if v is not None]
    width = max((len(k) for k, _ in shown), default=0)
    for k, v in shown:
        out(f"{k.ljust(width)}  {v}")


def eta_s(view: dict[str, Any], now_ms: int) -> float | None:
    """Queued: the daemon's estimate. Running: extrapolated from progress since start."""
    if view["status"] == "queued":
        est: float | None = view.get("estimated_wait_s")
        return est
    pct: int | None = view.get("progress_pct")
    started: int | None = view.get("started_at_ms")
    if view["status"] == "running" and pct and started is not None and 0 < pct < 100:
        elapsed = max(0.0, (now_ms - started) / 1000)
        return elapsed * (100 - pct) / pct
    return None


def progress_line(view: dict[str, Any], now_ms: int, width: int = 24) -> str:
    pct = 100 if view["status"] == "completed" else int(view.get("progress_pct") or 0)
    filled = width * min(max(pct, 0), 100) // 100
    parts = [
        view["task_id"],
        f"{view['status']:<10}",
        f"[{'#' * filled}{'.' * (width - filled)}]",
        f"{pct:3d}%",
    ]
    if view.get("queue_position") is not None:
        parts.append(f"position {view['queue_position']}")
    if view.get("scanner"):
        parts.append(f"on {view['scanner']}")
    eta = fmt_duration(eta_s(view, now_ms))
    if eta is not None:
        parts.append(f"eta {eta}")
    return "  ".join(parts)


class Progress:
    """A one-line bar on a terminal; on a pipe or log, one line per change."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, view: dict[str, Any]) -> None:
        line = progress_line(view, int(time.time() * 1000))
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
            sys.stderr.flush()
        else:
            key = line.split(" eta ")[0]
            if key != self.last:
                note(line)
            self.last = key

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _paused(view: dict[str, Any]) -> str | None:
    if view.get("paused_at_ms") is None:
        return None
    since = fmt_time(view["paused_at_ms"])
    return f"since {since} ({fmt_duration(view.get('paused_for_s'))}, by {view.get('paused_by')})"


def show_task(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(view)
        return
    reason = view.get("reason")
    status = view["status"] + (f" ({reason})" if reason and reason != view["status"] else "")
    print_fields(
        [
            ("task", view["task_id"]),
            ("name", view["name"]),
            ("status", status),
            ("pool", view["pool"]),
            ("scanner", view.get("scanner")),
            ("targets", ", ".join(view["targets"])),
            ("scan type", view["scan_type"]),
            ("credential", view.get("credential")),
            ("priority", view["priority"]),
            ("attempt", view["attempt"]),
            ("queue position", view.get("queue_position")),
            ("waiting for", view.get("waiting_reason")),
            ("paused", _paused(view)),
            ("estimated wait", fmt_duration(view.get("estimated_wait_s"))),
            ("progress", None if view.get("progress_pct") is None else f"{view['progress_pct']}%"),
            ("authentication", view.get("authentication_status")),
            ("dead letter", view.get("dead_letter") or None),
            ("error", view.get("error")),
            ("created", fmt_time(view["created_at_ms"])),
            ("started", fmt_time(view.get("started_at_ms"))),
            ("finished", fmt_time(view.get("finished_at_ms"))),
            ("export", "available" if view.get("export_available") else None),
        ]
    )
    results = view.get("results") or {}
    sev = (results.get("summary") or {}).get("severity_breakdown")
    if isinstance(sev, dict):
        out("findings  " + ", ".join(f"{k} {v}" for k, v in sev.items()))
    validation = results.get("validation") or {}
    for title, lines in (
        ("warnings", validation.get("warnings")),
        ("troubleshooting", validation.get("troubleshooting")),
    ):
        if lines:
            out(f"\n{title}:")
            for line in lines:
                out(f"  - {line}")
