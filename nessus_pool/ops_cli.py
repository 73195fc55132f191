"""Operator commands that talk to a running daemon's admin API: ``scan``, ``tasks``, ``pools``,
``scanners``, ``dlq`` and ``reload``.

Synchronous on purpose: one request at a time with stdlib ``urllib``, so the commands start
fast and need no event loop. Exit codes follow ``cli``: 0 ok; 1 the operation failed (HTTP
error, daemon unreachable, a waited-for scan did not complete); 2 usage or validation error
(HTTP 400/422, printed with the offending field).

One module well past ~400 lines (about 600 before ``ruff format`` spreads the argument
lists): the HTTP helper, the table helpers and the commands serve only each other and nothing
else imports them. The natural split is ``ops/{http,render,commands}.py``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nessus_pool import __version__
from nessus_pool.render import cell, diff_text, dumps_json, findings_text, plural, render_table

__all__ = ["render_table"]  # re-exported: tests and callers used to find it here

URL_ENV = "NESSUS_POOL_URL"
TOKEN_ENV = "NESSUS_POOL_TOKEN"
TOKEN_FILE_ENV = "NESSUS_POOL_TOKEN_FILE"
DEFAULT_URL = "http://127.0.0.1:8835"
TERMINAL = frozenset({"completed", "failed", "canceled", "timed_out"})
SCAN_TYPES = ("untrusted", "authenticated", "authenticated_privileged")
_CHUNK = 1 << 16


class CliError(Exception):
    """The command failed; the message is printed as ``error: ...``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Unreachable(CliError):
    """The daemon did not answer (connection refused, DNS, timeout)."""


class ApiError(CliError):
    """The daemon answered with an HTTP error. 400 and 422 are the caller's fault (exit 2)."""

    def __init__(self, status: int, body: Any, message: str, field: str | None) -> None:
        text = f"{message} (field: {field})" if field else message
        super().__init__(text, 2 if status in (400, 422) else 1)
        self.status = status
        self.body = body
        self.field = field


# --- HTTP ----------------------------------------------------------------------------------


class ApiClient:
    """The admin API over stdlib HTTP. Errors become :class:`CliError` subclasses."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float) -> None:
        self.base_url = base_url
        self.token = token
        self.timeout_s = timeout_s

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body."""
        with self._open(method, path, query=query, body=body) as resp:
            raw = resp.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise CliError(
                f"{self.base_url} answered {path} with something that is not "
                "JSON; is --url pointing at nessus-pool?"
            ) from None

    def download(self, path: str, write: Callable[[bytes], object]) -> int:
        """Stream a response body to ``write`` in chunks; returns the byte count."""
        total = 0
        with self._open("GET", path, accept="application/xml") as resp:
            while chunk := resp.read(_CHUNK):
                write(chunk)
                total += len(chunk)
        return total

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        accept: str = "application/json",
    ) -> http.client.HTTPResponse:
        url = self.base_url + path
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": accept, "User-Agent": f"nessus-pool-cli/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            resp: http.client.HTTPResponse = urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _api_error(exc.code, exc.reason, exc.read()) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return resp

    def _unreachable(self, reason: object) -> Unreachable:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused (is the daemon running? set --url or $NESSUS_POOL_URL)"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {self.timeout_s:g}s (--timeout)"
        else:
            why = str(reason) or type(reason).__name__
        return Unreachable(f"cannot reach nessus-pool at {self.base_url}: {why}")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _api_error(status: int, reason: str, raw: bytes) -> ApiError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("code") or reason)
        field = err.get("field")
        hint = ""
        if status == 401:
            hint = f" (set ${TOKEN_ENV} or --token-file)"
        return ApiError(status, body, f"{message}{hint}", str(field) if field else None)
    return ApiError(status, body, f"HTTP {status} {reason}", None)


def _seg(value: str) -> str:
    """One path segment; the daemon validates ids, we only keep them in their segment."""
    return urllib.parse.quote(value, safe="")


def resolve_url(arg: str | None) -> str:
    url = (arg or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--url {url!r} is not an http(s) URL, e.g. {DEFAULT_URL}", 2)
    return url


def resolve_token(token_file: str | None) -> str | None:
    """``--token-file`` wins, then ``$NESSUS_POOL_TOKEN``, then ``$NESSUS_POOL_TOKEN_FILE``.
    There is no ``--token``: a token on the command line shows up in ``ps`` and shell
    history."""
    path = token_file
    if path is None:
        env = os.environ.get(TOKEN_ENV)
        if env:
            return env.strip()
        path = os.environ.get(TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}", 2) from None
    if not token:
        raise CliError(f"token file {path} is empty", 2)
    return token


# --- formatting ----------------------------------------------------------------------------


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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``1d12h`` -> seconds (argparse type)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw]?)", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 15m, 12h, 7d)")
    return sum(float(n) * _DURATION_UNITS[u or "s"] for n, u in parts)


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


# --- progress ------------------------------------------------------------------------------


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
                view: dict[str, Any] = client.call("GET", f"/api/v1/scans/{_seg(task_id)}")
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


# --- commands: scans -------------------------------------------------------------------------


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


def cmd_scan_status(client: ApiClient, args: argparse.Namespace) -> int:
    show_task(client.call("GET", f"/api/v1/scans/{_seg(args.task_id)}"), args.json)
    return 0


def cmd_scan_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    view = client.call("POST", f"/api/v1/scans/{_seg(args.task_id)}/cancel")
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
    page = client.call("GET", f"/api/v1/scans/{_seg(args.task_id)}/results", query=query)
    if args.json:
        emit_json(page)
        return 0
    out(findings_text(page))
    return 0


def cmd_scan_compare(client: ApiClient, args: argparse.Namespace) -> int:
    data = client.call(
        "GET", f"/api/v1/scans/{_seg(args.task_id)}/compare", query={"base_task_id": args.base}
    )
    if args.json:
        emit_json(data)
        return 0
    out(diff_text(data["diff"], old_label=data["base_task_id"], new_label=data["task_id"]))
    return 0


def cmd_scan_download(client: ApiClient, args: argparse.Namespace) -> int:
    path = f"/api/v1/scans/{_seg(args.task_id)}/export"
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


def _pages(client: ApiClient, path: str, query: dict[str, Any], follow: bool) -> dict[str, Any]:
    page: dict[str, Any] = client.call("GET", path, query=query)
    tasks = list(page["tasks"])
    while follow and page.get("next_cursor"):
        page = client.call("GET", path, query={**query, "cursor": page["next_cursor"]})
        tasks += page["tasks"]
    return {"tasks": tasks, "next_cursor": page.get("next_cursor")}


def cmd_tasks_list(client: ApiClient, args: argparse.Namespace) -> int:
    page = _pages(
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


# --- commands: pools, scanners, reload -----------------------------------------------------------


def cmd_pools(client: ApiClient, args: argparse.Namespace) -> int:
    if args.name:
        data = client.call("GET", f"/api/v1/pools/{_seg(args.name)}")
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
        data = client.call("GET", f"/api/v1/scanners/{_seg(args.scanner_id)}")
        scanners = [data]
    else:
        data = client.call("POST", f"/api/v1/scanners/{_seg(args.scanner_id)}/{args.action}")
        scanners = [data]
    if args.json:
        emit_json(data)
        return 0
    _scanner_table(scanners)
    if args.action == "drain":
        note(f"{args.scanner_id} is draining: running scans finish, no new scans start there")
    elif args.action == "enable":
        note(f"{args.scanner_id} takes new scans again")
    return 0


def cmd_reload(client: ApiClient, args: argparse.Namespace) -> int:
    try:
        outcome = client.call("POST", "/api/v1/reload")
    except ApiError as exc:
        # a refused reload answers 400 with the outcome, not with an error body: the request
        # was fine, the daemon kept its old config, so the operation failed (1)
        if not (isinstance(exc.body, dict) and "applied" in exc.body):
            raise
        outcome = exc.body
    if args.json:
        emit_json(outcome)
    else:
        out(outcome["message"])
        for kind, names in (outcome.get("changes") or {}).items():
            out(f"  {kind.replace('_', ' ')}: {', '.join(names)}")
        for w in outcome.get("warnings") or []:
            note(f"warning: {w}")
    return 0 if outcome["applied"] else 1


# --- commands: dead-letter queue ---------------------------------------------------------------


def cmd_dlq_list(client: ApiClient, args: argparse.Namespace) -> int:
    page = _pages(
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
    data = client.call("GET", f"/api/v1/dlq/{_seg(args.task_id)}")
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
    view = client.call("POST", f"/api/v1/dlq/{_seg(args.task_id)}/retry")
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


# --- parsers -----------------------------------------------------------------------------


Command = Callable[[ApiClient, argparse.Namespace], int]


def _handler(fn: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            client = ApiClient(resolve_url(args.url), resolve_token(args.token_file), args.timeout)
            rc = fn(client, args)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return rc
        except CliError as exc:
            if args.json and isinstance(exc, ApiError) and exc.body is not None:
                emit_json(exc.body)
            note(f"error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:
            note("interrupted")
            return 130
        except BrokenPipeError:
            # the reader went away (``| head``): no traceback; stdout goes to /dev/null so
            # the interpreter's final flush does not fail again (as the Python docs advise)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 1

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
    p.add_argument("--pool", help="pool (default: the first configured)")
    p.add_argument("--scanner", help="pin to one scanner of the pool")
    p.add_argument("--scan-type", choices=SCAN_TYPES)
    p.add_argument("--credential", help="a configured credential set (authenticated scans)")
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

    leaf(sub, "reload", cmd_reload, "reload the config file (like SIGHUP)")
