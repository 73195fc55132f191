"""The one table that maps our error types to HTTP statuses and JSON-RPC error codes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from nessus_pool.errors import (
    AuthError,
    CapacityError,
    ConfigError,
    ConflictError,
    NessusPoolError,
    NotFoundError,
    ScannerError,
    ScopeError,
    StorageError,
    ValidationError,
)

# most specific first
HTTP_STATUS: list[tuple[type[NessusPoolError], int]] = [
    (ScopeError, 422),
    (ValidationError, 400),
    (ConfigError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (CapacityError, 429),
    (AuthError, 401),
    (ScannerError, 502),
    (StorageError, 503),
    (NessusPoolError, 500),
]

#: JSON-RPC: invalid params for input errors; tool failures are isError results instead
JSONRPC_INVALID_PARAMS = -32602


def http_status(exc: NessusPoolError) -> int:
    for cls, status in HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: NessusPoolError) -> dict[str, Any]:
    """``{"error": {"code", "message", "field"?}}``: ``field`` names the one input at fault
    (a body field, query parameter or path parameter such as ``task_id``) whenever there
    is one; errors of a whole request (auth, server faults) have none."""
    err: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    field = getattr(exc, "field", None) or exc.fields.get("field")
    if field:
        err["field"] = field
    return {"error": err}


# --- msgspec validation errors -> ValidationError naming the field --------------------------

_AT_PATH = re.compile(r" - at `\$([^`]*)`$")
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]*)`")
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def msgspec_field(message: str) -> str | None:
    """The dotted field a msgspec error names: ``... - at `$.a.b``` -> ``a.b``; a missing
    or unknown field is named itself (``a.x`` for ``unknown field `x` - at `$.a```)."""
    at = _AT_PATH.search(message)
    path = at.group(1).lstrip(".") if at else ""
    named = _NAMED_FIELD.search(message[: at.start()] if at else message)
    if named:
        return f"{path}.{named.group(1)}" if path else named.group(1)
    return path or None


def validation_error(
    exc: msgspec.ValidationError,
    typ: Any,
    name_of: Callable[[str], str] = lambda field: field,
) -> ValidationError:
    """The one mapping of a msgspec error (decoding ``typ``) to a :class:`ValidationError`:
    ``field`` is the path as the caller spelled it (``name_of`` maps our field names to the
    caller's), the message starts with it, and a bad enum or literal value lists the
    accepted ones instead of msgspec's ``Invalid enum value 'x' - at `$.a```."""
    text = str(exc)
    at = _AT_PATH.search(text)
    head = text[: at.start()] if at else text
    dotted = msgspec_field(text)
    field = name_of(dotted) if dotted else None
    if head.startswith("Invalid enum value "):
        accepted = _accepted_values(typ, at.group(1) if at else "")
        got = head.removeprefix("Invalid enum value ")
        if accepted:
            choices = ", ".join(accepted)
            return ValidationError(f"{field} must be one of {choices}; got {got}", field=field)
    elif head.startswith("Object missing required field"):
        return ValidationError(f"{field} is required", field=field)
    elif head.startswith("Object contains unknown field"):
        return ValidationError(f"unknown field {field}", field=field)
    return ValidationError(f"{field}: {head}" if field else head, field=field)


def _accepted_values(typ: Any, path: str) -> list[str]:
    """The enum or literal values the type at ``path`` (``.a[0].b``) of ``typ`` accepts."""
    info: msgspec.inspect.Type | None = msgspec.inspect.type_info(typ)
    for name, _index in _PATH_STEP.findall(path):  # every item of a list has one type
        info = _step(info, name or None)
        if info is None:
            return []
    return _values(info) if info is not None else []


def _step(info: msgspec.inspect.Type | None, name: str | None) -> msgspec.inspect.Type | None:
    if isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            found = _step(member, name)
            if found is not None:
                return found
        return None
    if name is None:  # a list index
        if isinstance(
            info,
            msgspec.inspect.ListType | msgspec.inspect.SetType | msgspec.inspect.VarTupleType,
        ):
            return info.item_type
        return None
    if isinstance(info, msgspec.inspect.StructType):
        for f in info.fields:
            if f.encode_name == name:
                return f.type
    if isinstance(info, msgspec.inspect.DictType):
        return info.value_type
    return None


def _values(info: msgspec.inspect.Type) -> list[str]:
    if isinstance(info, msgspec.inspect.EnumType):
        return [str(m.value) for m in info.cls]
    if isinstance(info, msgspec.inspect.LiteralType):
        return [str(v) for v in info.values]
    if isinstance(info, msgspec.inspect.UnionType):
        return [v for member in info.types for v in _values(member)]
    return []
