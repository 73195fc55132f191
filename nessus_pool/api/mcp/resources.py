"""Finished scans as MCP resources: ``nessus-pool://scans/{task_id}/report`` (what
``get_scan_status`` says) and ``.../findings`` (``get_scan_results``' first page). Never a
whole export: the same bounds as the tools, and the same service calls."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from nessus_pool.api.mcp import schemas as s
from nessus_pool.api.mcp.findings import results_text
from nessus_pool.api.mcp.handlers import TERMINAL, check_cursor, status_out
from nessus_pool.api.mcp.tools import ResourceNotFoundError, ResourceParamsError
from nessus_pool.errors import ConflictError, NotFoundError, ValidationError
from nessus_pool.service import Service, TaskView

_JSON: Final = "application/json"
_JSONL: Final = "application/x-ndjson"
_enc = msgspec.json.Encoder()
#: finished scans per resources/list page (a module constant so tests can shrink it)
RESOURCE_PAGE_SIZE = 50
_RESOURCE_URI = re.compile(r"^nessus-pool://scans/([A-Za-z0-9_-]{1,64})/(report|findings)$")
RESOURCE_TEMPLATES: Final = [
    {
        "uriTemplate": "nessus-pool://scans/{task_id}/report",
        "name": "scan-report",
        "title": "Scan report",
        "description": "A scan task's report as JSON: the same fields as get_scan_status "
        "(status, authentication verdicts, validation warnings, results summary, "
        "troubleshooting). Findings are not inline: read them page by page with "
        "get_scan_results.",
        "mimeType": _JSON,
    },
    {
        "uriTemplate": "nessus-pool://scans/{task_id}/findings",
        "name": "scan-findings",
        "title": "Scan findings, first page",
        "description": "The first page of a finished scan's findings as JSON-NL, most severe "
        "first (get_scan_results' default page; its pagination line says whether there are "
        "more).",
        "mimeType": _JSONL,
    },
]


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _report_resource(v: TaskView) -> dict[str, Any]:
    shown = ", ".join(v.targets[:5]) + (
        f" and {len(v.targets) - 5} more" if len(v.targets) > 5 else ""
    )
    finished = _iso(v.finished_at_ms)
    res: dict[str, Any] = {
        "uri": f"nessus-pool://scans/{v.task_id}/report",
        "name": f"scan-{v.task_id}-report",
        "title": f"{v.name} ({v.status})",
        "description": f"{v.scan_type} scan of {shown} on pool {v.pool}: {v.status}"
        + (f", finished {finished}" if finished else ""),
        "mimeType": _JSON,
    }
    if finished:
        res["annotations"] = {"lastModified": finished}
    return res


class ScanResources:
    """The :class:`~nessus_pool.api.mcp.tools.ResourceCatalog` of finished scans."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def templates(self) -> list[dict[str, Any]]:
        return RESOURCE_TEMPLATES

    async def list_page(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        try:
            cursor = check_cursor(cursor)
        except ValidationError:
            raise ResourceParamsError("cursor is not valid", "cursor") from None
        page = await self.svc.list_tasks(
            status=",".join(sorted(TERMINAL)), limit=RESOURCE_PAGE_SIZE, cursor=cursor
        )
        return [_report_resource(v) for v in page.tasks], page.next_cursor

    async def read(self, uri: str) -> list[dict[str, Any]]:
        m = _RESOURCE_URI.match(uri)
        if m is None:
            raise ResourceParamsError(
                "uri must be nessus-pool://scans/{task_id}/report or .../findings", "uri"
            )
        task_id, kind = m.groups()
        try:
            if kind == "report":
                report = await status_out(self.svc, await self.svc.get_task(task_id))
                return [{"uri": uri, "mimeType": _JSON, "text": _enc.encode(report).decode()}]
            text = await results_text(self.svc, s.ResultsArgs(task_id=task_id))
        except (NotFoundError, ConflictError) as exc:
            raise ResourceNotFoundError(uri, str(exc)) from None
        return [{"uri": uri, "mimeType": _JSONL, "text": text}]
