"""The one table that maps our error types to HTTP statuses and JSON-RPC error codes."""

from __future__ import annotations

from typing import Any

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
