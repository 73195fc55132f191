"""Admin HTTP API (``/api/v1``), health probes and ``/metrics``. Handlers decode, call the
service, encode: no logic here."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from nessus_pool.api.errors import error_body, http_status, retry_after_s, validation_error
from nessus_pool.api.guard import Forbidden as _Forbidden
from nessus_pool.api.guard import FrontDoor, TokenAuth
from nessus_pool.api.openapi import openapi_document
from nessus_pool.api.query import (
    COMPARE,
    HOSTS,
    LIST_DLQ,
    LIST_SCANNERS,
    LIST_SCANS,
    NO_QUERY,
    RESULTS,
    parse_query,
    results_query,
)
from nessus_pool.errors import NessusPoolError, NotFoundError, ValidationError
from nessus_pool.service import Service, SubmitRequest, check_task_id

log = logging.getLogger("nessus_pool.api")

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
AUTH: web.AppKey[TokenAuth] = web.AppKey("auth", object)  # type: ignore[arg-type]
READY: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("ready", object)  # type: ignore[arg-type]
METRICS: web.AppKey[Callable[[], bytes]] = web.AppKey("metrics", object)  # type: ignore[arg-type]

T = TypeVar("T")
_enc = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RouteHandler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_enc.encode(data), status=status, content_type="application/json")


def error_response(exc: NessusPoolError) -> web.Response:
    status = 403 if isinstance(exc, _Forbidden) else http_status(exc)
    resp = json_response(error_body(exc), status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="nessus-pool"'
    after = retry_after_s(exc)
    if after is not None:
        resp.headers["Retry-After"] = str(after)
    return resp


def front(door: FrontDoor, handler: Handler) -> RouteHandler:
    """``handler`` behind the front door (Host, Origin, type, body read under a deadline),
    its errors mapped to JSON: what two aiohttp middlewares did, in one coroutine and without
    aiohttp's middleware chain (2.5% of a submit's instructions)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = await door.admit(request)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except NessusPoolError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            return _http_error(request, exc)

    return guarded


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (404, 405, 413, ...) as our JSON errors on the API's paths."""
    if exc.status == 413:
        return json_response(
            {"error": {"code": "body_too_large", "message": "request body is too large"}}, 413
        )
    if exc.status >= 400 and request.path.startswith(("/api/", "/healthz", "/readyz")):
        resp = json_response(
            {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": exc.reason}},
            exc.status,
        )
        allow = exc.headers.get("Allow")
        if allow is not None:
            resp.headers["Allow"] = allow
        return resp
    raise exc


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """The last route: 405 (with Allow) for a path another route serves with other methods,
    else 404, as aiohttp's router would say them."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def guard_routes(app: web.Application, door: FrontDoor) -> None:
    """Put every route of ``app`` (and a last one for paths nobody serves) behind
    :func:`front`. Call it once all routes are added."""
    app.router.add_route("*", "/{tail:.*}", _unmatched)
    for route in app.router.routes():
        # aiohttp has no public way to wrap a handler once its route is added
        route._handler = front(door, route.handler)


async def decode_body(request: web.Request, typ: type[T]) -> T:
    body = await request.read()
    try:
        return msgspec.json.decode(body or b"{}", type=typ)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, typ) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}") from None


# --- handlers ----------------------------------------------------------------------------


async def submit_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    req = await decode_body(request, SubmitRequest)
    result = await request.app[SERVICE].submit(req)
    return json_response(result, 200 if result.duplicate else 202)


async def list_scans(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    q = parse_query(request, LIST_SCANS)
    return json_response(await request.app[SERVICE].list_tasks(**q))


async def get_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].get_task(request.match_info["task_id"]))


async def cancel_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].cancel(request.match_info["task_id"]))


async def pause_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].pause(request.match_info["task_id"]))


async def resume_scan(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].resume(request.match_info["task_id"]))


async def scan_results(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    typed: dict[str, str] = {}
    query = results_query(parse_query(request, RESULTS, typed), typed)
    data = await request.app[SERVICE].results(request.match_info["task_id"], query)
    return json_response(data)


async def scan_hosts(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    params = parse_query(request, HOSTS)
    data = await request.app[SERVICE].hosts(request.match_info["task_id"], **params)
    return json_response(data)


async def scan_export(request: web.Request) -> web.StreamResponse:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    task_id = check_task_id(request.match_info["task_id"])
    path = Path(await request.app[SERVICE].export_download(task_id))
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/xml",
            "Content-Disposition": f'attachment; filename="{task_id}.nessus"',
        },
    )


async def scan_compare(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    typed: dict[str, str] = {}
    base = parse_query(request, COMPARE, typed).get("base_task_id")
    if base is not None:
        check_task_id(base, typed["base_task_id"])
    try:
        diff = await request.app[SERVICE].compare(request.match_info["task_id"], base)
    except NotFoundError as exc:
        if exc.fields.get("field") != "base_task_id" or base is None:
            raise
        # named as the caller spelled it (``base`` or ``base_task_id``)
        raise NotFoundError(exc.message, field=typed["base_task_id"]) from None
    return json_response(diff)


async def list_pools(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    return json_response({"pools": await request.app[SERVICE].pool_views()})


async def get_pool(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].pool_view(request.match_info["name"]))


async def list_scanners(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    pool = parse_query(request, LIST_SCANNERS).get("pool")
    return json_response({"scanners": request.app[SERVICE].scanner_views(pool)})


async def list_policies(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    pool = parse_query(request, LIST_SCANNERS).get("pool")
    return json_response({"pools": request.app[SERVICE].policies(pool)})


async def get_scanner(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    sid = request.match_info["scanner_id"]
    for v in request.app[SERVICE].scanner_views():
        if v.id == sid:
            return json_response(v)
    raise NotFoundError(f"scanner {sid!r} not found", field="scanner_id")


async def drain_scanner(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(
        request.app[SERVICE].set_scanner_enabled(request.match_info["scanner_id"], False)
    )


async def enable_scanner(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(
        request.app[SERVICE].set_scanner_enabled(request.match_info["scanner_id"], True)
    )


async def reload_config(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    # a refused reload raises: the one error shape, 400 reload_refused
    return json_response(await request.app[SERVICE].reload())


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    task_ids: list[str] | None = None
    pool: str | None = None
    older_than_s: float | None = None
    confirm: bool = False


async def dlq_list(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    q = parse_query(request, LIST_DLQ)
    return json_response(await request.app[SERVICE].dlq_list(**q))


async def dlq_get(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].dlq_get(request.match_info["task_id"]))


async def dlq_retry(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].dlq_retry(request.match_info["task_id"]))


async def dlq_purge(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    req = await decode_body(request, PurgeRequest)
    return json_response(
        await request.app[SERVICE].dlq_purge(
            task_ids=req.task_ids, pool=req.pool, older_than_s=req.older_than_s, confirm=req.confirm
        )
    )


async def cluster(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    from nessus_pool.service.cluster import cluster_view

    return json_response(await cluster_view(request.app[SERVICE]))


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
    parse_query(request, NO_QUERY)
    return json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_post("/api/v1/scans", submit_scan)
    r.add_get("/api/v1/scans", list_scans)
    r.add_get("/api/v1/scans/{task_id}", get_scan)
    r.add_post("/api/v1/scans/{task_id}/cancel", cancel_scan)
    r.add_post("/api/v1/scans/{task_id}/pause", pause_scan)
    r.add_post("/api/v1/scans/{task_id}/resume", resume_scan)
    r.add_get("/api/v1/scans/{task_id}/results", scan_results)
    r.add_get("/api/v1/scans/{task_id}/hosts", scan_hosts)
    r.add_get("/api/v1/scans/{task_id}/export", scan_export)
    r.add_get("/api/v1/scans/{task_id}/compare", scan_compare)
    r.add_get("/api/v1/pools", list_pools)
    r.add_get("/api/v1/pools/{name}", get_pool)
    r.add_get("/api/v1/scanners", list_scanners)
    r.add_get("/api/v1/scanners/{scanner_id}", get_scanner)
    r.add_get("/api/v1/policies", list_policies)
    r.add_post("/api/v1/scanners/{scanner_id}/drain", drain_scanner)
    r.add_post("/api/v1/scanners/{scanner_id}/enable", enable_scanner)
    r.add_get("/api/v1/dlq", dlq_list)
    r.add_post("/api/v1/dlq/purge", dlq_purge)
    r.add_get("/api/v1/dlq/{task_id}", dlq_get)
    r.add_post("/api/v1/dlq/{task_id}/retry", dlq_retry)
    r.add_post("/api/v1/reload", reload_config)
    r.add_get("/api/v1/cluster", cluster)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
