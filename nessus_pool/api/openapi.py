"""The OpenAPI document for ``/api/v1``, generated from the same msgspec Structs the handlers
decode and encode, so it cannot drift from what they accept."""

from __future__ import annotations

from typing import Any

import msgspec

from nessus_pool import __version__
from nessus_pool.api.query import (
    COMPARE,
    HOSTS,
    LIST_DLQ,
    LIST_NOTIFICATIONS,
    LIST_SCANNERS,
    LIST_SCANS,
    RESULTS,
    QuerySpec,
)
from nessus_pool.results.query import FindingsQuery
from nessus_pool.schedules import ScheduleSpec
from nessus_pool.service import (
    PoolView,
    ReloadOutcome,
    ScannerView,
    SubmitRequest,
    SubmitResult,
    TaskPage,
    TaskView,
)

_ERROR = {"$ref": "#/components/schemas/Error"}


#: PostgreSQL unreachable: the daemon reconnects by itself; same request after Retry-After
_UNAVAILABLE = {
    "description": "The database is unavailable (storage_unavailable): send the same "
    "request again after Retry-After seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/json": {"schema": _ERROR}},
}


def _ref(t: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{t.__name__}"}


def _op(
    summary: str,
    ok: dict[str, Any] | None,
    *,
    body: type | None = None,
    params: list[dict[str, Any]] | None = None,
    status: str = "200",
    admin: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary + (" (admin token)" if admin else ""),
        "responses": {
            status: {
                "description": "OK",
                "content": {"application/json": {"schema": ok or {"type": "object"}}},
            },
            "4XX": {"description": "Error", "content": {"application/json": {"schema": _ERROR}}},
            "503": _UNAVAILABLE,
        },
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if params:
        op["parameters"] = params
    return op


_KIND_SCHEMA: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "list": {"type": "string", "description": "comma-separated"},
}


def _query(spec: QuerySpec) -> list[dict[str, Any]]:
    """The query parameters a route accepts, from the same table the handler checks:
    canonical names first, aliases saying what they stand for."""
    out = []
    for name, (canonical, kind) in sorted(spec.items(), key=lambda kv: kv[0] != kv[1][0]):
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "schema": dict(_KIND_SCHEMA[kind]),
        }
        if name != canonical:
            param["description"] = f"alias of {canonical}"
        out.append(param)
    return out


_TASK = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _schedule_paths() -> dict[str, Any]:
    name = [_path("name")]
    spec = _ref(ScheduleSpec)
    return {
        "/api/v1/schedules": {
            "post": _op(
                "Create a schedule (answers it with next_run_at)",
                None,
                body=ScheduleSpec,
                status="201",
                admin=True,
            ),
            "get": _op("List schedules (config ones are read_only)", None),
        },
        "/api/v1/schedules/{name}": {
            "get": _op("A schedule with its recent runs", None, params=name),
            "patch": _op("Change the fields given", spec, params=name, admin=True),
            "put": _op("Replace the schedule", spec, params=name, admin=True),
            "delete": _op("Delete a schedule and its history", None, params=name, admin=True),
        },
        "/api/v1/schedules/{name}/run-now": {
            "post": _op("Run a schedule now", None, params=name, status="202", admin=True)
        },
    }


def openapi_document() -> dict[str, Any]:
    types = [
        SubmitRequest,
        SubmitResult,
        TaskView,
        TaskPage,
        PoolView,
        ScannerView,
        ReloadOutcome,
        FindingsQuery,
        ScheduleSpec,
    ]
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    "retry_after_s": {"type": "integer", "minimum": 1},
                },
            }
        },
    }
    results_params = [_TASK, *_query(RESULTS)]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nessus-pool admin API",
            "version": __version__,
            "description": "Query parameters use the MCP tools' names (filters.min_severity, "
            "page, page_size, schema_profile); flat aliases are listed as such. A query "
            "parameter a route does not list is a 400 naming it. Errors: "
            '{"error": {"code", "message", "field"}}; field names the one input at fault '
            "whenever there is one.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/scans": {
                "post": _op(
                    "Submit a scan",
                    _ref(SubmitResult),
                    body=SubmitRequest,
                    status="202",
                    admin=True,
                ),
                "get": _op(
                    "List scans, newest first",
                    _ref(TaskPage),
                    params=_query(LIST_SCANS),
                ),
            },
            "/api/v1/scans/{task_id}": {"get": _op("Get a scan", _ref(TaskView), params=[_TASK])},
            "/api/v1/scans/{task_id}/cancel": {
                "post": _op("Cancel a scan", _ref(TaskView), params=[_TASK], admin=True)
            },
            "/api/v1/scans/{task_id}/pause": {
                "post": _op("Pause a running scan", _ref(TaskView), params=[_TASK], admin=True)
            },
            "/api/v1/scans/{task_id}/resume": {
                "post": _op("Resume a paused scan", _ref(TaskView), params=[_TASK], admin=True)
            },
            "/api/v1/scans/{task_id}/results": {
                "get": _op("Findings, filtered and paged", None, params=results_params)
            },
            "/api/v1/scans/{task_id}/hosts": {
                "get": _op(
                    "Per-host results (authentication verdict, counts), filtered and paged",
                    None,
                    params=[_TASK, *_query(HOSTS)],
                )
            },
            "/api/v1/scans/{task_id}/export": {
                "get": {
                    "summary": "The raw .nessus export",
                    "parameters": [_TASK],
                    "responses": {
                        "200": {
                            "description": "NessusClientData_v2 XML",
                            "content": {"application/xml": {}},
                        }
                    },
                }
            },
            "/api/v1/scans/{task_id}/compare": {
                "get": _op("Diff with an earlier scan", None, params=[_TASK, *_query(COMPARE)])
            },
            "/api/v1/pools": {"get": _op("List pools", None)},
            "/api/v1/cluster": {"get": _op("Daemons, scanner leases, pools that differ", None)},
            "/api/v1/pools/{name}": {
                "get": _op("Get a pool", _ref(PoolView), params=[_path("name")])
            },
            "/api/v1/scanners": {"get": _op("List scanners", None, params=_query(LIST_SCANNERS))},
            "/api/v1/policies": {
                "get": _op(
                    "Saved Nessus policies per pool and scanner", None, params=_query(LIST_SCANNERS)
                )
            },
            "/api/v1/scanners/{scanner_id}": {
                "get": _op("Get a scanner", _ref(ScannerView), params=[_path("scanner_id")])
            },
            "/api/v1/scanners/{scanner_id}/drain": {
                "post": _op(
                    "Stop giving a scanner new scans",
                    _ref(ScannerView),
                    params=[_path("scanner_id")],
                    admin=True,
                )
            },
            "/api/v1/scanners/{scanner_id}/enable": {
                "post": _op(
                    "Give a scanner new scans again",
                    _ref(ScannerView),
                    params=[_path("scanner_id")],
                    admin=True,
                )
            },
            "/api/v1/dlq": {
                "get": _op(
                    "Dead letters",
                    _ref(TaskPage),
                    params=_query(LIST_DLQ),
                )
            },
            "/api/v1/dlq/{task_id}": {
                "get": _op("A dead letter with its events", None, params=[_TASK])
            },
            "/api/v1/dlq/{task_id}/retry": {
                "post": _op("Queue a dead letter again", _ref(TaskView), params=[_TASK], admin=True)
            },
            "/api/v1/dlq/purge": {
                "post": _op("Delete dead letters (bulk: dry run unless confirm)", None, admin=True)
            },
            "/api/v1/notifications/failed": {
                "get": _op(
                    "Webhook deliveries that used up their attempts",
                    None,
                    params=_query(LIST_NOTIFICATIONS),
                )
            },
            "/api/v1/notifications/{delivery_id}/retry": {
                "post": _op(
                    "Send a failed webhook delivery again",
                    None,
                    params=[_path("delivery_id")],
                    admin=True,
                )
            },
            "/api/v1/reload": {
                "post": _op(
                    "Reload the config file (what SIGHUP does)", _ref(ReloadOutcome), admin=True
                )
            },
            **_schedule_paths(),
            "/api/v1/openapi.json": {"get": _op("This document", None)},
            "/healthz": {"get": _op("The event loop answers", None)},
            "/readyz": {"get": _op("Database writable, config loaded, scanners", None)},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
        },
    }
