"""``/api/v1/schedules``: create, list, get, update (PATCH: the fields given; PUT: the whole
schedule), delete and run-now. Handlers decode, call the service, encode."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from nessus_pool.api.admin import AUTH, SERVICE, decode_body, json_response
from nessus_pool.api.query import NO_QUERY, parse_query
from nessus_pool.errors import NotFoundError, ValidationError
from nessus_pool.schedules import NAME_PATTERN, ScheduleSpec

_BASE = "/api/v1/schedules"
_NAME = re.compile(NAME_PATTERN)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.match(name):
        raise NotFoundError(f"schedule {name[:64]!r} not found", field="name")
    return name


async def create_schedule(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    spec = await decode_body(request, ScheduleSpec)
    return json_response(await request.app[SERVICE].schedules.create(spec), 201)


async def list_schedules(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    return json_response({"schedules": await request.app[SERVICE].schedules.list()})


async def get_schedule(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].schedules.get(_name(request)))


async def _update(request: web.Request, *, replace: bool) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    name = _name(request)
    fields = await decode_body(request, dict[str, Any])
    unknown = sorted(set(fields) - set(ScheduleSpec.__struct_fields__))
    if unknown:
        raise ValidationError(
            f"unknown field {unknown[0][:60]!r}; accepted: "
            + ", ".join(ScheduleSpec.__struct_fields__),
            field=unknown[0][:60],
        )
    return json_response(await request.app[SERVICE].schedules.update(name, fields, replace=replace))


async def patch_schedule(request: web.Request) -> web.Response:
    return await _update(request, replace=False)


async def put_schedule(request: web.Request) -> web.Response:
    return await _update(request, replace=True)


async def delete_schedule(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].schedules.delete(_name(request)))


async def run_now(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[SERVICE].schedules.run_now(_name(request)), 202)


def add_schedule_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(_BASE, create_schedule)
    r.add_get(_BASE, list_schedules)
    r.add_get(_BASE + "/{name}", get_schedule)
    r.add_patch(_BASE + "/{name}", patch_schedule)
    r.add_put(_BASE + "/{name}", put_schedule)
    r.add_delete(_BASE + "/{name}", delete_schedule)
    r.add_post(_BASE + "/{name}/run-now", run_now)
