"""Query parameters of the admin API: one table per route (canonical names and their
aliases, each with its kind), the parser that checks a request against its table (unknown or
repeated names are a 400 naming them), and the findings query built from them. The OpenAPI
document is generated from the same tables, so documentation and checks cannot drift."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
from aiohttp import web

from nessus_pool.api.errors import validation_error
from nessus_pool.errors import ValidationError
from nessus_pool.results.query import FindingsQuery

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
LIST_NOTIFICATIONS = _spec({"limit": "int", "target": "str"})
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
#: a scan's per-host results: page or cursor, and filters
HOSTS = _spec(
    {"page": "int", **_PAGING, "auth_status": "str", "min_severity": "str"},
    {"limit": "page_size"},
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
    # items(), not the keys: multidict 7 iterates each key once, however often it is given
    for key, raw in query.items():
        canonical, kind = spec[key]
        if canonical in given:
            also = "" if given[canonical] == key else f" (as {given[canonical]})"
            raise ValidationError(f"{key} is given more than once{also}", field=canonical)
        given[canonical] = key
        out[canonical] = _convert(key, raw, kind)
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
