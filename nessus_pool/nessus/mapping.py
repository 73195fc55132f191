"""How HTTP answers and aiohttp failures become typed :class:`ScannerError` values.

One table, in code: 429 rate limited (with ``Retry-After``), 408 and timeouts, 5xx and
dropped connections are transient; 400, 401 (after re-login), 403, 404, 409 and 412 are
permanent. Error texts from the scanner are shortened and scrubbed of every secret we know.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from nessus_pool.clock import Clock
from nessus_pool.errors import (
    PermanentScannerError,
    RateLimitedError,
    RemoteNotFoundError,
    ScanApiUnavailableError,
    ScannerAuthError,
    ScannerError,
    ScannerTimeoutError,
    TransientScannerError,
)

_MAX_DETAIL_CHARS = 200


class _ErrorReply(msgspec.Struct):
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorContext:
    scanner_id: str
    #: the path template, e.g. ``"POST /scans/{id}/launch"``
    endpoint: str
    auth_mode: str
    clock: Clock
    redact: Callable[[str], str]
    #: the CA file pinned for this scanner (None: the system trust store)
    ca_file: str | None = None

    def fields(self, status: int | None = None) -> dict[str, Any]:
        return {"scanner_id": self.scanner_id, "endpoint": self.endpoint, "status": status}


def error_detail(payload: bytes, redact: Callable[[str], str]) -> str:
    """The scanner's own words (``{"error": ...}``), short, one line, without secrets; HTML
    error pages give nothing. Secrets are removed from the whole text first, then from the
    one-line form, and only then is it cut: cutting first would leave a secret's prefix, and
    folding whitespace first would hide a secret that contains a run of it."""
    try:
        text = msgspec.json.decode(payload, type=_ErrorReply).error or ""
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        text = "" if payload.lstrip()[:1] == b"<" else payload.decode("utf-8", "replace")
    if not isinstance(text, str):
        text = ""
    one_line = " ".join(redact(text).split())
    return redact(one_line)[:_MAX_DETAIL_CHARS]


def http_error(
    status: int, payload: bytes, retry_after: str | None, ctx: ErrorContext
) -> ScannerError:
    detail = error_detail(payload, ctx.redact)
    kw = ctx.fields(status)
    suffix = f": {detail}" if detail else ""
    if status < 400:
        return PermanentScannerError(
            f"the scanner answered HTTP {status}; check the scanner's base_url "
            "(scheme, host and port, e.g. https://host:8834)",
            **kw,
        )
    if status == 429:
        return RateLimitedError(
            "the scanner asked us to slow down" + suffix,
            retry_after_s=parse_retry_after(retry_after, ctx.clock),
            **kw,
        )
    if status == 408:
        return ScannerTimeoutError("the scanner timed out the request" + suffix, **kw)
    if status >= 500:
        return TransientScannerError("the scanner failed" + suffix, **kw)
    if status == 401:
        what = "API keys" if ctx.auth_mode == "api_keys" else "session, after logging in again"
        return ScannerAuthError(f"the scanner rejected the {what}" + suffix, **kw)
    if status == 403:
        return ScannerAuthError("the scanner account may not do this" + suffix, **kw)
    if status == 404:
        return RemoteNotFoundError("the scanner has no such object" + suffix, **kw)
    if status == 412:
        return ScanApiUnavailableError(
            "this scanner's licence does not allow scan creation or control through the "
            f"API ({detail or 'HTTP 412'}); it is export-only",
            **kw,
        )
    return PermanentScannerError("the scanner refused the request" + suffix, **kw)


def client_error(exc: aiohttp.ClientError, ctx: ErrorContext) -> tuple[str, ScannerError]:
    """(metrics outcome, error) for a failure below HTTP."""
    kw = ctx.fields()
    text = ctx.redact(str(exc)) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "tls_error", PermanentScannerError(_certificate_problem(exc, ctx), **kw)
    if isinstance(exc, aiohttp.ClientConnectorSSLError) and "WRONG_VERSION_NUMBER" in text:
        return "tls_error", PermanentScannerError(
            "the scanner does not speak TLS on this port (a plain-HTTP server?): use an "
            "http:// url only for a test double such as 'nessus-pool simulate --plain-http'; "
            "Nessus itself always serves https://",
            **kw,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error", TransientScannerError(f"cannot connect: {text}", **kw)
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError
    ):
        return "disconnected", TransientScannerError(
            f"the scanner dropped the connection: {text}", **kw
        )
    return "connect_error", TransientScannerError(f"HTTP client error: {text}", **kw)


_CA_HINT = (
    "set ca-file for this scanner to the CA that signed its certificate (on the Nessus host "
    "/opt/nessus/com/nessus/CA/cacert.pem; for 'nessus-pool simulate' the ca-file it prints), "
    "or as a last resort verify-tls = false"
)


def _certificate_problem(exc: aiohttp.ClientConnectorCertificateError, ctx: ErrorContext) -> str:
    cert_error = exc.certificate_error
    reason = getattr(cert_error, "verify_message", None) or str(cert_error)
    if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
        return (
            f"TLS certificate verification failed: {reason}; the certificate does not name the "
            "host in this scanner's url: use a name or address the certificate lists"
        )
    if ctx.ca_file is None:
        return (
            f"TLS certificate verification failed: {reason}; the system trust store does not "
            f"know the scanner's CA: {_CA_HINT}"
        )
    return (
        f"TLS certificate verification failed: {reason}; the CA file {ctx.ca_file} did not "
        f"sign the scanner's certificate: {_CA_HINT}"
    )


def parse_retry_after(value: str | None, clock: Clock) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - clock.now_ms() / 1000)
