"""Admin HTTP API (``/api/v1``), health probes and ``/metrics``. Handlers decode, call the
service, encode: no logic here."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from nessus_pool.api.errors import error_body, http_status, validation_error
from nessus_pool.api.guard import Forbidden as _Forbidden
from nessus_pool.api.guard import TokenAuth
from nessus_pool.errors import NessusPoolError, NotFoundError, ValidationError
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
        raise validation_error(exc, typ) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}") from None


# --- query parameters ----------------------------------------------------------------------
#
# Every route declares the query parameters it takes: canonical names (the MCP tools' names:
# ``filters.min_severity``, ``page_size``, ``schema_profile``) and documented aliases (the
# flat ``min_severity``, ``limit``, ``profile``). Anything else is a 400 naming it.

Kind = str  # "str" | "int" | "float" | "bool" | "list"
#: accepted name -> (canonical name, kind)
QuerySpec = dict[str, tuple[str, Kind]]
_INT = re.compile(r"-?[0-9]{1,15}")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _spec(canonical: dict[str, Kind], aliases: dict[str, str] | None = None) -> QuerySpec:
    out = {name: (name, kind) for name, kind in canonical.items()}
    for alias, name in (aliases or {}).items():
        out[alias] = (name, canonical[name])
    return out


_PAGING: dict[str, Kind] = {"page_size": "int", "cursor": "str"}
LIST_SCANS = _spec(
    {
        "status": "str",
        "pool": "str",
        "target": "str",
        "created_from_ms": "int",
        "created_to_ms": "int",
        **_PAGING,
    },
    {"limit": "page_size"},
)
LIST_DLQ = _spec({"pool": "str", **_PAGING}, {"limit": "page_size"})
LIST_SCANNERS = _spec({"pool": "str"})
COMPARE = _spec({"base_task_id": "str"}, {"base": "base_task_id"})
#: MCP's get_scan_results filters, each also accepted flat (``min_severity``) as an alias
RESULT_FILTERS: dict[str, Kind] = {
    "min_severity": "str",
    "severity": "str",
    "severities": "list",
    "min_cvss3": "float",
    "cvss_score": "str",
    "host": "str",
    "port": "int",
    "protocol": "str",
    "plugin_id": "int",
    "plugin_family": "str",
    "cve": "str",
    "cwe": "str",
    "exploit_available": "bool",
    "text": "str",
    "sort": "str",
}
RESULTS = _spec(
    {
        **{f"filters.{k}": kind for k, kind in RESULT_FILTERS.items()},
        "page": "int",
        "page_size": "int",
        "schema_profile": "str",
        "custom_fields": "list",
    },
    {
        **{k: f"filters.{k}" for k in RESULT_FILTERS},
        "profile": "schema_profile",
        "fields": "custom_fields",
    },
)
NO_QUERY: QuerySpec = {}


def _convert(name: str, raw: str, kind: Kind) -> Any:
    if kind == "int":
        if not _INT.fullmatch(raw):
            raise ValidationError(f"{name} must be a whole number", field=name)
        return int(raw)
    if kind == "float":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValidationError(f"{name} must be a number", field=name)
        return value
    if kind == "bool":
        flag = _BOOLS.get(raw.strip().lower())
        if flag is None:
            raise ValidationError(f"{name} must be true or false", field=name)
        return flag
    if kind == "list":
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw


def parse_query(
    request: web.Request, spec: QuerySpec, typed: dict[str, str] | None = None
) -> dict[str, Any]:
    """The request's query parameters by canonical name, converted. Unknown names, a
    parameter given twice (also under an alias) and malformed values are 400s naming it.
    ``typed``, if given, receives canonical name -> the name the caller used."""
    query = request.query
    unknown = sorted({k for k in query if k not in spec})
    if unknown:
        accepted = ", ".join(sorted(spec)) or "none"
        # echo a bounded amount of what the caller sent
        shown = ", ".join(k[:64] for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ValidationError(
            f"unknown query parameter(s): {shown} (accepted here: {accepted})",
            field=unknown[0][:64],
        )
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key in query:
        canonical, kind = spec[key]
        if canonical in given:
            also = "" if given[canonical] == key else f" (as {given[canonical]})"
            raise ValidationError(f"{key} is given more than once{also}", field=canonical)
        given[canonical] = key
        out[canonical] = _convert(key, query[key], kind)
    if typed is not None:
        typed.update(given)
    return out


def results_query(params: dict[str, Any], typed: dict[str, str]) -> FindingsQuery:
    """Canonical results parameters -> a FindingsQuery (MCP's ``severity`` and
    ``cvss_score`` read the way MCP's get_scan_results reads them). Errors name the
    parameter as the caller spelled it (``typed``: canonical -> used name)."""

    def name_of(query_field: str | None) -> str | None:
        if query_field is None:
            return None
        canonical = _RESULTS_NAMES.get(query_field, query_field)
        return typed.get(canonical, canonical)

    raw: dict[str, Any] = {}
    for key, value in params.items():
        name = key.removeprefix("filters.")
        if name == "severity":
            raw["severities"] = [*raw.get("severities", []), value]
        elif name == "severities":
            raw["severities"] = [*value, *raw.get("severities", [])]
        elif name == "cvss_score":
            score = _convert(typed.get(key, key), value.strip().lstrip(">=").strip(), "float")
            raw["min_cvss3"] = score
        elif name == "schema_profile":
            raw["profile"] = value
        elif name == "custom_fields":
            # MCP's field names where ours differ only in number (``cve`` for ``cves``)
            raw["fields"] = [_FIELD_ALIASES.get(f, f) for f in value]
            raw.setdefault("profile", "custom")
        else:
            raw[name] = value
    if "fields" in raw and raw.get("profile") not in (None, "custom"):
        raise ValidationError(
            "custom_fields implies schema_profile custom; leave schema_profile out",
            field=name_of("fields"),
        )
    try:
        return msgspec.convert(raw, FindingsQuery)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, FindingsQuery, lambda f: name_of(f) or f) from None
    except ValidationError as exc:  # FindingsQuery's own checks name its fields
        raise ValidationError(exc.message, field=name_of(exc.field)) from None


#: custom_fields names accepted for ours: the MCP tools' spelling
_FIELD_ALIASES = {"cve": "cves"}

#: FindingsQuery field -> the canonical query parameter, for error messages
_RESULTS_NAMES = {
    **{k: f"filters.{k}" for k in RESULT_FILTERS},
    "profile": "schema_profile",
    "fields": "custom_fields",
}


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


async def scan_results(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    typed: dict[str, str] = {}
    query = results_query(parse_query(request, RESULTS, typed), typed)
    data = await request.app[SERVICE].results(request.match_info["task_id"], query)
    return json_response(data)


async def scan_export(request: web.Request) -> web.StreamResponse:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
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

    parse_query(request, NO_QUERY)
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
    r.add_get("/api/v1/policies", list_policies)
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
