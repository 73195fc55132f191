"""The one exception hierarchy of nessus-pool.

Every error we raise derives from :class:`NessusPoolError`; its docstring is the default
message. Subclasses carry structured fields so that the API layers can map them (one table,
in ``nessus_pool.api.errors``) to an HTTP status and a JSON-RPC / MCP tool error.
"""

from __future__ import annotations

from typing import Any


class NessusPoolError(Exception):
    """nessus-pool failed."""

    #: stable machine-readable code, used in API error bodies
    code: str = "internal_error"

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.fields = fields
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


# --- configuration and input ---------------------------------------------------------------


class ConfigError(NessusPoolError):
    """The configuration is invalid."""

    code = "config_error"

    def __init__(self, message: str | None = None, *, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.path = path


class ValidationError(NessusPoolError):
    """The request is invalid."""

    code = "invalid_request"

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.field = field


class NotFoundError(NessusPoolError):
    """Not found."""

    code = "not_found"


class ConflictError(NessusPoolError):
    """The request conflicts with the current state."""

    code = "conflict"


class ReloadRefusedError(ConfigError):
    """The config reload was refused; the old configuration keeps running."""

    code = "reload_refused"


class CapacityError(NessusPoolError):
    """The pool's queue is full."""

    code = "queue_full"


class ScopeError(ValidationError):
    """A target is outside the pool's allowed scope."""

    code = "out_of_scope"


class AuthError(NessusPoolError):
    """Authentication required or refused."""

    code = "unauthorized"


class StorageError(NessusPoolError):
    """The storage layer failed."""

    code = "storage_error"


class StorageUnavailableError(StorageError):
    """The database is unavailable; retry later."""

    code = "storage_unavailable"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        #: whole seconds until the store tries to reconnect (HTTP ``Retry-After``)
        self.retry_after_s = retry_after_s


class LockedError(StorageError):
    """The storage directory is locked by another nessus-pool process."""

    code = "storage_locked"


# --- scanner side --------------------------------------------------------------------------


class ScannerError(NessusPoolError):
    """A Nessus scanner call failed."""

    code = "scanner_error"
    #: True when the same call may succeed if simply tried again later
    transient: bool = False

    def __init__(
        self,
        message: str | None = None,
        *,
        scanner_id: str = "",
        endpoint: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, scanner_id=scanner_id, endpoint=endpoint, status=status)
        self.scanner_id = scanner_id
        self.endpoint = endpoint
        self.status = status

    def __str__(self) -> str:
        where = f"{self.scanner_id} {self.endpoint}".strip()
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}: {self.message}{status}" if where else self.message + status


class TransientScannerError(ScannerError, ConnectionError):
    """The scanner is temporarily unavailable."""

    code = "scanner_unavailable"
    transient = True


class ScannerTimeoutError(TransientScannerError, TimeoutError):
    """The scanner did not answer in time."""

    code = "scanner_timeout"


class RateLimitedError(TransientScannerError):
    """The scanner asked us to slow down (HTTP 429)."""

    code = "scanner_rate_limited"

    def __init__(
        self, message: str | None = None, *, retry_after_s: float | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class PermanentScannerError(ScannerError):
    """The scanner refused the request; trying again will not help."""

    code = "scanner_refused"


class ScannerAuthError(PermanentScannerError):
    """The scanner rejected our credentials (HTTP 401 after re-login, or 403)."""

    code = "scanner_auth_failed"


class ScanApiUnavailableError(PermanentScannerError):
    """This scanner's licence does not allow scan creation or launch through the API
    (HTTP 412 "API is not available"): it is export-only. Nessus Professional, Expert and
    Essentials restrict the scan API; use Nessus Manager or Tenable Security Center."""

    code = "scan_api_unavailable"


class RemoteNotFoundError(PermanentScannerError):
    """The scanner does not have that object (HTTP 404)."""

    code = "scanner_not_found"


class ExportError(ScannerError):
    """The scanner could not export the scan."""

    code = "export_failed"
    transient = True


class ExportTooLargeError(PermanentScannerError):
    """The export is larger than the configured size cap."""

    code = "export_too_large"


# --- results -------------------------------------------------------------------------------


class ResultsError(NessusPoolError):
    """The scan results could not be read."""

    code = "results_error"


class NotNessusExportError(ResultsError):
    """The file is XML but not a Nessus export (its root element is not NessusClientData_v2)."""

    code = "not_nessus_export"


class UnsafeXmlError(ResultsError):
    """The export contains a DOCTYPE or entity declaration and was refused."""

    code = "unsafe_xml"
