"""Routes beyond the scan lifecycle: session, template details, folders, saved policies,
agents and scanners (as Nessus Manager), a scan's host details and plugin output, and export
formats. Bodies come from :mod:`.catalog`; ``app`` registers these with :func:`add_routes`."""

from __future__ import annotations

from aiohttp import web

from nessus_pool.simulator import catalog, views
from nessus_pool.simulator.httputil import SCANNER
from nessus_pool.simulator.httputil import json_response as _json
from nessus_pool.simulator.httputil import path_int as _int
from nessus_pool.simulator.httputil import query_int as _query_int
from nessus_pool.simulator.httputil import read_body as _body
from nessus_pool.simulator.state import SimHTTPError


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/session", _session)
    r.add_get("/editor/{kind:scan|policy}/templates/{uuid}", _template_details)
    r.add_get("/policies", _list_policies)
    r.add_post("/policies", _create_policy)
    r.add_get("/policies/{id}", _policy_details)
    r.add_delete("/policies/{id}", _delete_policy)
    r.add_post("/policies/{id}/copy", _copy_policy)
    r.add_get("/agents", _agents)
    r.add_get("/agents/{id}", _agent)
    r.add_get("/scanners", _scanners)
    r.add_get("/folders", _folders)
    r.add_post("/folders", _create_folder)
    r.add_delete("/folders/{id}", _delete_folder)
    r.add_get("/scans/{id}/hosts/{host_id}", _host_details)
    r.add_get("/scans/{id}/hosts/{host_id}/plugins/{plugin_id}", _plugin_output)
    r.add_get("/scans/{id}/export/formats", _export_formats)


async def _session(request: web.Request) -> web.Response:
    return _json(catalog.session(request.app[SCANNER]))


async def _template_details(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    return _json(catalog.template_details(request.match_info["uuid"], scanner.options.username))


async def _folders(request: web.Request) -> web.Response:
    return _json({"folders": views.folders(request.app[SCANNER])})


async def _create_folder(request: web.Request) -> web.Response:
    return _json({"id": request.app[SCANNER].create_folder(await _body(request))})


async def _delete_folder(request: web.Request) -> web.Response:
    request.app[SCANNER].delete_folder(_int(request, "id"))
    return web.Response(status=200)


async def _list_policies(request: web.Request) -> web.Response:
    policies = request.app[SCANNER].policies.policies.values()
    return _json({"policies": [p.summary() for p in policies] or None})


async def _create_policy(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    policy = scanner.policies.create(await _body(request), scanner.clock.now_ms())
    return _json({"policy_id": policy.id, "policy_name": policy.name})


async def _policy_details(request: web.Request) -> web.Response:
    return _json(request.app[SCANNER].policies.get(_int(request, "id")).details())


async def _delete_policy(request: web.Request) -> web.Response:
    request.app[SCANNER].policies.delete(_int(request, "id"))
    return web.Response(status=200)


async def _copy_policy(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    policy = scanner.policies.copy(_int(request, "id"), scanner.clock.now_ms())
    return _json({"id": policy.id, "name": policy.name})


async def _agents(request: web.Request) -> web.Response:
    limit = _query_int(request, "limit")
    offset = _query_int(request, "offset")
    if (limit is not None and limit < 1) or (offset is not None and offset < 0):
        raise SimHTTPError(400, "Invalid 'limit' or 'offset' field: out of range")
    return _json(catalog.agents(request.app[SCANNER], offset or 0, limit or 5000))


async def _agent(request: web.Request) -> web.Response:
    return _json(catalog.agent(request.app[SCANNER], _int(request, "id")))


async def _scanners(request: web.Request) -> web.Response:
    return _json(catalog.scanners(request.app[SCANNER]))


async def _host_details(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    scan = scanner.scan(_int(request, "id"))
    return _json(
        catalog.host_details(
            scanner, scan, _int(request, "host_id"), _query_int(request, "history_id")
        )
    )


async def _plugin_output(request: web.Request) -> web.Response:
    scanner = request.app[SCANNER]
    scan = scanner.scan(_int(request, "id"))
    return _json(
        catalog.plugin_output(
            scanner,
            scan,
            _int(request, "host_id"),
            _int(request, "plugin_id"),
            _query_int(request, "history_id"),
        )
    )


async def _export_formats(request: web.Request) -> web.Response:
    request.app[SCANNER].scan(_int(request, "id"))
    return _json(catalog.export_formats())
