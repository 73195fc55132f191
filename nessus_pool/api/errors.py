"""The one table that maps our error types to HTTP statuses and JSON-RPC error codes."""

from __future__ import annotations

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
    StorageUnavailableError,
    ValidationError,
)
from nessus_pool.msgspec_errors import (
    AT_PATH,
    ENUM_PREFIX,
    accepted_values,
    msgspec_field,
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


def retry_after_s(exc: NessusPoolError) -> int | None:
    """Whole seconds after which the same request may succeed (HTTP ``Retry-After``), for
    errors that pass by themselves (the database reconnecting); None for the others."""
    if isinstance(exc, StorageUnavailableError):
        return exc.retry_after_s
    return None


def error_body(exc: NessusPoolError) -> dict[str, Any]:
    """``{"error": {"code", "message", "field"?, "retry_after_s"?}}``: ``field`` names the
    one input at fault (a body field, query parameter or path parameter such as
    ``task_id``) whenever there is one; errors of a whole request (auth, server faults)
    have none. ``retry_after_s`` repeats the ``Retry-After`` header."""
    err: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    field = getattr(exc, "field", None) or exc.fields.get("field")
    if field:
        err["field"] = field
    after = retry_after_s(exc)
    if after is not None:
        err["retry_after_s"] = after
    return {"error": err}


# --- msgspec validation errors -> ValidationError naming the field --------------------------


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
    at = AT_PATH.search(text)
    head = text[: at.start()] if at else text
    dotted = msgspec_field(text)
    field = name_of(dotted) if dotted else None
    accepted = accepted_values(typ, text)
    if accepted:
        got = head.removeprefix(ENUM_PREFIX)
        if len(got) > 80:  # echo a bounded amount of what the caller sent
            got = got[:72] + "...'"
        return ValidationError(
            f"{field} must be one of {', '.join(accepted)}; got {got}", field=field
        )
    if head.startswith("Object missing required field"):
        return ValidationError(f"{field} is required", field=field)
    if head.startswith("Object contains unknown field"):
        return ValidationError(f"unknown field {field}", field=field)
    return ValidationError(f"{field}: {head}" if field else head, field=field)
