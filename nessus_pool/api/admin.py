"""Admin HTTP API (``/api/v1``), health probes and ``/metrics``. Handlers decode, call the
service, encode: no logic here."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from nessus_pool.api.errors import error_body, http_status
from nessus_pool.api.guard import Forbidden as _Forbidden
from nessus_pool.api.guard import TokenAuth
from nessus_pool.errors import NessusPoolError, ValidationError
from nessus_pool.results.query import FindingsQuery
from nessus_pool.service import Service, SubmitRequest, check_task_id

log = logging.getLogger("nessus_pool.api")

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
AUTH: web.AppKey[TokenAuth] = web.AppKey("auth", object)  # type: ignore[arg-type]
READY: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("ready", object)  # type: ignore[arg-type]
METRICS: web.AppKey[Callable[[], bytes]] = web.AppKey("metrics", object)  # type: ignore[arg-type]

T = TypeVar("T")
_enc = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_enc.encode(data), status=status, content_type="application/json")


def error_response(exc: NessusPoolError) -> web.Response:
    status = 403 if isinstance(exc, _Forbidden) else http_status(exc)
    resp = json_response(error_body(exc), status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="nessus-pool"'
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NessusPoolError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return json_response(
            {"error": {"code": "body_too_large", "message": "request body is too large"}}, 413
        )
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith(("/api/", "/healthz", "/readyz")):
            return json_response(
                {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": exc.reason}},
                exc.status,
            )
        raise


async def decode_body(request: web.Request, typ: type[T]) -> T:
    body = await request.read()
    try:
        return msgspec.json.decode(body or b"{}", type=typ)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = re.search(r"at `\$\.?([^`]*)`", msg)
        raise ValidationError(msg, field=m.group(1) if m and m.group(1) else None) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}") from None


def _query_to(
    typ: type[T],
    query: Any,
    ints: tuple[str, ...] = (),
    floats: tuple[str, ...] = (),
    bools: tuple[str, ...] = (),
) -> T:
    data: dict[str, Any] = {}
    for key, value in query.items():
        if key in ints:
            if not re.fullmatch(r"-?\d{1,12}", value):
                raise ValidationError(f"{key} must be a whole number", field=key)
            data[key] = int(value)
        elif key in floats:
            try:
                data[key] = float(value)
            except ValueError:
                raise ValidationError(f"{key} must be a number", field=key) from None
        elif key in bools:
            data[key] = value.lower() in ("1", "true", "yes")
        else:
            data[key] = value
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as exc:
        raise ValidationError(str(exc)) from None


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,15}", raw):
        raise ValidationError(f"{name} must be a whole number", field=name)
    return int(raw)


# --- handlers ----------------------------------------------------------------------------


async def submit_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    req = await decode_body(request, SubmitRequest)
    result = await request.app[SERVICE].submit(req)
    return json_response(result, 200 if result.duplicate else 202)


async def list_scans(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    q = request.query
    page = await request.app[SERVICE].list_tasks(
        status=q.get("status"),
        pool=q.get("pool"),
        target=q.get("target"),
        created_from_ms=_int_param(request, "created_from_ms"),
        created_to_ms=_int_param(request, "created_to_ms"),
        limit=_int_param(request, "limit", 50) or 50,
        cursor=q.get("cursor"),
    )
    return json_response(page)


async def get_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    return json_response(await request.app[SERVICE].get_task(request.match_info["task_id"]))


async def cancel_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    return json_response(await request.app[SERVICE].cancel(request.match_info["task_id"]))


async def scan_results(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    query = _query_to(
        FindingsQuery,
        request.query,
        ints=("page", "page_size", "port", "plugin_id"),
        floats=("min_cvss3",),
        bools=("exploit_available",),
    )
    data = await request.app[SERVICE].results(request.match_info["task_id"], query)
    return json_response(data)


async def scan_export(request: web.Request) -> web.StreamResponse:
    request.app[AUTH].require(request, "read")
    task_id = check_task_id(request.match_info["task_id"])
    path = Path(await request.app[SERVICE].export_path(task_id))
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/xml",
            "Content-Disposition": f'attachment; filename="{task_id}.nessus"',
        },
    )


async def scan_compare(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    base = request.query.get("base")
    if base is not None:
        check_task_id(base, "base")
    return json_response(await request.app[SERVICE].compare(request.match_info["task_id"], base))


async def list_pools(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    return json_response({"pools": await request.app[SERVICE].pool_views()})


async def get_pool(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    return json_response(await request.app[SERVICE].pool_view(request.match_info["name"]))


async def list_scanners(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    return json_response(
        {"scanners": request.app[SERVICE].scanner_views(request.query.get("pool"))}
    )


async def get_scanner(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    sid = request.match_info["scanner_id"]
    for v in request.app[SERVICE].scanner_views():
        if v.id == sid:
            return json_response(v)
    return json_response(
        {"error": {"code": "not_found", "message": f"scanner {sid!r} not found"}}, 404
    )


async def drain_scanner(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    return json_response(
        request.app[SERVICE].set_scanner_enabled(request.match_info["scanner_id"], False)
    )


async def enable_scanner(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    return json_response(
        request.app[SERVICE].set_scanner_enabled(request.match_info["scanner_id"], True)
    )


async def reload_config(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    outcome = await request.app[SERVICE].reload()
    return json_response(outcome, 200 if outcome.applied else 400)


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    task_ids: list[str] | None = None
    pool: str | None = None
    older_than_s: float | None = None
    confirm: bool = False


async def dlq_list(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    return json_response(
        await request.app[SERVICE].dlq_list(
            pool=request.query.get("pool"),
            limit=_int_param(request, "limit", 50) or 50,
            cursor=request.query.get("cursor"),
        )
    )


async def dlq_get(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    return json_response(await request.app[SERVICE].dlq_get(request.match_info["task_id"]))


async def dlq_retry(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    return json_response(await request.app[SERVICE].dlq_retry(request.match_info["task_id"]))


async def dlq_purge(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    req = await decode_body(request, PurgeRequest)
    return json_response(
        await request.app[SERVICE].dlq_purge(
            task_ids=req.task_ids, pool=req.pool, older_than_s=req.older_than_s, confirm=req.confirm
        )
    )


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    body = await request.app[READY]()
    return json_response(body, 200 if body.get("ready") else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS](),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def openapi(request: web.Request) -> web.Response:
    from nessus_pool.api.openapi import openapi_document

    return json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_post("/api/v1/scans", submit_scan)
    r.add_get("/api/v1/scans", list_scans)
    r.add_get("/api/v1/scans/{task_id}", get_scan)
    r.add_post("/api/v1/scans/{task_id}/cancel", cancel_scan)
    r.add_get("/api/v1/scans/{task_id}/results", scan_results)
    r.add_get("/api/v1/scans/{task_id}/export", scan_export)
    r.add_get("/api/v1/scans/{task_id}/compare", scan_compare)
    r.add_get("/api/v1/pools", list_pools)
    r.add_get("/api/v1/pools/{name}", get_pool)
    r.add_get("/api/v1/scanners", list_scanners)
    r.add_get("/api/v1/scanners/{scanner_id}", get_scanner)
    r.add_post("/api/v1/scanners/{scanner_id}/drain", drain_scanner)
    r.add_post("/api/v1/scanners/{scanner_id}/enable", enable_scanner)
    r.add_get("/api/v1/dlq", dlq_list)
    r.add_post("/api/v1/dlq/purge", dlq_purge)
    r.add_get("/api/v1/dlq/{task_id}", dlq_get)
    r.add_post("/api/v1/dlq/{task_id}/retry", dlq_retry)
    r.add_post("/api/v1/reload", reload_config)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
