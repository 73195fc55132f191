"""The aiohttp app of one simulated scanner: Nessus REST routes, auth and fault middlewares,
and the ``/_sim`` control routes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from aiohttp import web

from nessus_pool.simulator import views
from nessus_pool.simulator.catalog_routes import add_routes
from nessus_pool.simulator.httputil import SCANNER
from nessus_pool.simulator.httputil import error_response as _error
from nessus_pool.simulator.httputil import json_response as _json
from nessus_pool.simulator.httputil import path_int as _int
from nessus_pool.simulator.httputil import query_int as _query_int
from nessus_pool.simulator.httputil import read_body as _body
from nessus_pool.simulator.options import Faults
from nessus_pool.simulator.scanner import ScannerState
from nessus_pool.simulator.state import NOT_FOUND, SimHTTPError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC = {("POST", "/session"), ("GET", "/server/status")}
_faults_decoder = msgspec.json.Decoder(Faults)
_CHUNK = 64 * 1024
#: the thread that builds the exports of every scanner of this process, one at a time
_BUILDS = ThreadPoolExecutor(1, thread_name_prefix="sim-export")


def build_app(scanner: ScannerState) -> web.Application:
    app = web.Application(
        middlewares=[_json_error_middleware, _fault_middleware, _auth_middleware],
        client_max_size=8 * 1024 * 1024,
    )
    app[SCANNER] = scanner
    r = app.router
    r.add_post("/session", _login)
    r.add_delete("/session", _logout)
    r.add_get("/server/status", _server_status)
    r.add_get("/server/properties", _server_properties)
    r.add_get("/editor/{kind:scan|policy}/templates", _templates)
    r.add_get("/scans", _list_scans)
    r.add_post("/scans", _create_scan)
    r.add_get("/scans/{id}", _get_scan)
    r.add_delete("/scans/{id}", _delete_scan)
    r.add_put("/scans/{id}/folder", _move_scan)
    r.add_post("/scans/{id}/launch", _launch)
    for action in ("stop", "pause", "resume", "kill"):
        r.add_post(f"/scans/{{id}}/{action}", _control)
    r.add_post("/scans/{id}/export", _start_export)
    r.add_get("/scans/{id}/export/{file}/status", _export_status)
    r.add_get("/scans/{id}/export/{file}/download", _export_download)
    r.add_get("/tokens/{token}/status", _token_status)
    r.add_get("/tokens/{token}/download", _token_download)
    add_routes(r)
    r.add_post("/_sim/faults", _set_faults)
    r.add_get("/_sim/stats", _get_stats)
    return app


@web.middleware
async def _json_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (no such route, wrong method, body too large) as Nessus answers
    them: ``{"error": "..."}`` JSON with the same status, not aiohttp's ``404: Not Found`` text."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = NOT_FOUND if exc.status == 404 else exc.reason
        resp = _error(exc.status, message)
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp


@web.middleware
async def _fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    scanner = request.app[SCANNER]
    if request.path.startswith("/_sim/"):
        return await handler(request)
    faults = scanner.faults
    if faults.latency_s > 0:
        await scanner.clock.sleep(faults.latency_s)
    if scanner.chance(faults.drop_rate):
        return _drop(request)
    if scanner.chance(faults.hang_rate):
        release = scanner.release
        if release is not None:
            await release.wait()
        return _drop(request)
    if scanner.chance(faults.error_rate):
        status = scanner.rng.choice((500, 502, 503))
        if status == 500:
            return _error(500, "Internal Server Error")
        # 502/503 come from a proxy or a restarting server in real life: HTML, not JSON
        return web.Response(
            status=status,
            text=f"<html><body><h1>{status}</h1></body></html>",
            content_type="text/html",
        )
    if scanner.chance(faults.rate_limit_rate):
        resp = _error(429, "Too Many Requests")
        resp.headers["Retry-After"] = "1"
        return resp
    return await handler(request)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without answering (the response below is never sent)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    scanner = request.app[SCANNER]
    public = (request.method, request.path) in _PUBLIC or request.path.startswith("/_sim/")
    if not public and not _authenticated(request, scanner):
        return _error(401, "Invalid Credentials")
    try:
        return await handler(request)
    except SimHTTPError as exc:
        return _error(exc.status, exc.message)


def _pairs(header: str) -> dict[str, str]:
    """``a=1; b=2;`` -> {"a": "1", "b": "2"}, tolerant of spaces and a trailing ``;``."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _authenticated(request: web.Request, scanner: ScannerState) -> bool:
    keys = request.headers.get("X-ApiKeys")
    if keys is not None:
        pairs = _pairs(keys)
        return scanner.check_api_keys(pairs.get("accessKey"), pairs.get("secretKey"))
    cookie = request.headers.get("X-Cookie")
    if cookie is not None:
        return _pairs(cookie).get("token", "") in scanner.sessions
    return False


# --- session and server -------------------------------------------------------------------


async def _login(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body, dict):
        raise SimHTTPError(400, "Invalid JSON body")
    token = request.app[SCANNER].login(body.get("username"), body.get("password"))
    return _json({"token": token})


async def _logout(request: web.Request) -> web.Response:
    token = _pairs(request.headers.get("X-Cookie", "")).get("token")
    if token is not None:
        request.app[SCANNER].sessions.pop(token, None)
    return web.Response(status=200)


async def _server_status(request: web.Request) -> web.Response:
    return _json({"code": 200, "progress": None, "status": "ready"})


async def _server_properties(request: web.Request) -> web.Response:
    return _json(views.server_properties(request.app[SCANNER]))


async def _templates(request: web.Request) -> web.Response:
    return _json(views.templates())


# --- scans --------------------------------------------------------------------------------


async def _list_scans(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    return _json(
        views.scan_list(
            scanner,
            folder_id=_query_int(request, "folder_id"),
            modified_after=_query_int(request, "last_modification_date"),
        )
    )


async def _create_scan(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    scan = scanner.create_scan(await _body(request))
    return _json({"scan": views.created_scan(scanner, scan)})


async def _get_scan(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    scan = scanner.scan(_int(request, "id"))
    history_id = _query_int(request, "history_id")
    if history_id is not None and scan.run(history_id) is None:
        raise SimHTTPError(404, NOT_FOUND)
    return _json(views.scan_details(scanner, scan, history_id))


async def _delete_scan(request: web.Request) -> web.Response:
    request.app[SCANNER].delete(_int(request, "id"))
    return web.Response(status=200)


async def _move_scan(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SCANNER].move(
        _int(request, "id"), body.get("folder_id") if isinstance(body, dict) else None
    )
    return web.Response(status=200)


async def _launch(request: web.Request) -> web.Response:
    run = request.app[SCANNER].launch(_int(request, "id"))
    return _json({"scan_uuid": run.uuid})


async def _control(request: web.Request) -> web.Response:
    action = request.path.rsplit("/", 1)[1]
    request.app[SCANNER].control(_int(request, "id"), action)
    return web.Response(status=200)


# --- exports ------------------------------------------------------------------------------


async def _start_export(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    export = scanner.start_export(
        _int(request, "id"), await _body(request), _query_int(request, "history_id")
    )
    return _json({"file": export.file_id, "token": export.token})


async def _export_status(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    export = scanner.export(_int(request, "id"), file_id=_int(request, "file"))
    return _json({"status": scanner.export_status(export)})


async def _token_status(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    export = scanner.export(None, token=request.match_info["token"])
    status = scanner.export_status(export)
    return _json(
        {
            "status": status,
            "message": "The download is ready."
            if status == "ready"
            else "Report is being generated",
        }
    )


async def _export_download(request: web.Request) -> web.StreamResponse:
    scanner = request.app[SCANNER]
    export = scanner.export(_int(request, "id"), file_id=_int(request, "file"))
    return await _download(request, scanner, export)


async def _token_download(request: web.Request) -> web.StreamResponse:
    scanner = request.app[SCANNER]
    export = scanner.export(None, token=request.match_info["token"])
    return await _download(request, scanner, export)


async def _download(request: web.Request, scanner: ScannerState, export: Any) -> web.StreamResponse:
    if export.error:
        raise SimHTTPError(404, NOT_FOUND)
    if export.polls < 2 and scanner.now() - export.created_mono_s < 0.5:
        raise SimHTTPError(409, "Report is still being generated")
    scan = scanner.scan(export.scan_id)
    if export.data is None:
        # generating a few MiB of XML would stall every other simulated call; one thread
        # for all the scanners of the process: each build running in parallel made every
        # turn of the loop wait for its GIL (see nessus_pool.engine.core.INGEST_CONCURRENCY)
        export.data = await asyncio.get_running_loop().run_in_executor(
            _BUILDS,
            functools.partial(views.export_bytes, scanner, scan, export.history_id, export.format),
        )
    data = export.data
    filename = views.export_filename(scan, export.format)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
    )
    resp.content_length = len(data)
    await resp.prepare(request)
    for offset in range(0, len(data), _CHUNK):
        await resp.write(data[offset : offset + _CHUNK])
    await resp.write_eof()
    return resp


# --- simulator control --------------------------------------------------------------------


async def _set_faults(request: web.Request) -> web.Response:
    try:
        faults = _faults_decoder.decode(await request.read() or b"{}")
    except msgspec.ValidationError as exc:
        return _error(400, str(exc))
    except msgspec.DecodeError as exc:
        return _error(400, f"Invalid JSON body: {exc}")
    request.app[SCANNER].set_faults(faults)
    return _json(msgspec.to_builtins(faults))


async def _get_stats(request: web.Request) -> web.Response:
    return _json(msgspec.to_builtins(request.app[SCANNER].stats()))
