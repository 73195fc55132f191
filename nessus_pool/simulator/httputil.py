"""What every route of a simulated scanner shares: the app key of its state, JSON answers
and errors shaped as Nessus sends them, and request parsing that fails as Nessus does."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from aiohttp import web

from nessus_pool.simulator.scanner import ScannerState
from nessus_pool.simulator.state import NOT_FOUND, SimHTTPError

SCANNER: web.AppKey[ScannerState] = web.AppKey("scanner")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


async def read_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SimHTTPError(400, "Invalid JSON body") from exc


def path_int(request: web.Request, key: str) -> int:
    try:
        return int(request.match_info[key])
    except ValueError as exc:
        raise SimHTTPError(404, NOT_FOUND) from exc


def query_int(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise SimHTTPError(400, f"Invalid '{key}' field: expecting int") from exc
