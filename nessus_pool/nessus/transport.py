"""HTTP to one Nessus scanner: the aiohttp session, authentication, error mapping, metrics.

The transport never retries except for one thing: with username/password sessions, a 401
means the session token expired (they do, during long scans), so it logs in again once and
repeats the call. Everything else is mapped to a typed :class:`ScannerError` and left to the
engine's retry policy.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec

from nessus_pool.clock import Clock
from nessus_pool.errors import (
    ConfigError,
    PermanentScannerError,
    ScannerAuthError,
    ScannerError,
    ScannerTimeoutError,
    TransientScannerError,
)
from nessus_pool.nessus.mapping import ErrorContext, client_error, http_error

log = logging.getLogger("nessus_pool.nessus")

#: ``on_request(scanner_id, endpoint, outcome, duration_s)``, called after every HTTP call
OnRequest = Callable[[str, str, str, float], None]
#: multipart fields: (name, value, filename or None)
FormFields = Sequence[tuple[str, str | bytes, str | None]]

_REDACTED = "<redacted>"
_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()
#: the largest JSON answer read from a scanner (``GET /scans/{id}`` of a scan with tens of
#: thousands of hosts is a few MiB); bigger answers are refused while streaming, unbuffered
MAX_JSON_BYTES = 32 * 1024 * 1024
#: how much of an error answer is read: its text is cut to a short detail anyway
MAX_ERROR_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024


async def read_capped(resp: aiohttp.ClientResponse, limit_bytes: int) -> bytes | None:
    """The body, streamed, or None once it is longer than ``limit_bytes`` (announced or
    sent): a hostile answer never costs more memory than the cap."""
    if resp.content_length is not None and resp.content_length > limit_bytes:
        return None
    buf = bytearray()
    while True:
        chunk = await resp.content.read(_READ_BYTES)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit_bytes:
            return None


def decode_json(payload: bytes, error: Callable[[str], ScannerError]) -> Any:
    """Decoded JSON, or ``error(reason)`` for a malformed or too deeply nested answer."""
    try:
        return _json_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        # a truncated body or a proxy's HTML page: worth trying again later
        raise error("the scanner answered with malformed JSON") from exc
    except RecursionError:
        # msgspec refuses nesting past the interpreter's recursion limit (~1,000 levels);
        # no Nessus answer is nested more than a dozen deep
        raise error("the scanner answered with JSON nested too deeply to decode") from None


class _LoginReply(msgspec.Struct):
    token: str


class Transport:
    """One scanner's HTTP channel. Holds secrets: its ``repr`` shows none of them."""

    def __init__(
        self,
        scanner_id: str,
        base_url: str,
        *,
        access_key: str | None,
        secret_key: str | None,
        username: str | None,
        password: str | None,
        verify_tls: bool,
        ca_file: str | None,
        timeout_s: float,
        clock: Clock,
        on_request: OnRequest | None,
    ) -> None:
        if access_key and secret_key:
            self.auth_mode = "api_keys"
        elif username and password:
            self.auth_mode = "session"
        else:
            raise ConfigError(
                f"scanner {scanner_id}: give access_key and secret_key, or username and password"
            )
        self.scanner_id = scanner_id
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.clock = clock
        self._access_key = access_key
        self._secret_key = secret_key
        self._username = username
        self._password = password
        self._verify_tls = verify_tls
        self._ca_file = ca_file
        self._on_request = on_request
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._login_lock: asyncio.Lock | None = None
        self._closed = False
        if not verify_tls:
            log.warning(
                "TLS certificate verification is disabled for this scanner",
                extra={"event": "tls_verification_disabled", "scanner": scanner_id},
            )

    def __repr__(self) -> str:
        return f"Transport(scanner_id={self.scanner_id!r}, auth={self.auth_mode})"

    # --- session ------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._verify_tls:
            return False
        if self._ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=self._ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentScannerError(
                f"cannot load the CA file {self._ca_file}: {exc}", scanner_id=self.scanner_id
            ) from exc

    def _client_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"the Nessus client for {self.scanner_id} is closed")
        if self._session is None:
            # created on first use, inside the running loop, then reused for every call
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=16),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"Accept": "application/json"},
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- authentication -----------------------------------------------------------------

    async def _auth_headers(self) -> tuple[dict[str, str], str | None]:
        if self.auth_mode == "api_keys":
            keys = f"accessKey={self._access_key}; secretKey={self._secret_key}"
            return {"X-ApiKeys": keys}, None
        if self._token is None:
            await self._login(stale_token=None)
        token = self._token
        return {"X-Cookie": f"token={token}"}, token

    async def _login(self, *, stale_token: str | None) -> None:
        """Get a new session token, unless another call already replaced ``stale_token``."""
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:
            if self._token is not None and self._token != stale_token:
                return
            body = _json_encoder.encode({"username": self._username, "password": self._password})
            try:
                async with self.open(
                    "POST", "/session", "POST /session", body=body, authenticate=False
                ) as resp:
                    payload = await read_capped(resp, MAX_ERROR_BYTES) or b""
            except ScannerAuthError as exc:
                raise ScannerAuthError(
                    "the scanner refused the username/password",
                    scanner_id=self.scanner_id,
                    endpoint="POST /session",
                    status=exc.status,
                ) from None
            try:
                self._token = msgspec.json.decode(payload, type=_LoginReply).token
            except (msgspec.DecodeError, RecursionError) as exc:
                raise TransientScannerError(
                    "the login answer carried no session token",
                    scanner_id=self.scanner_id,
                    endpoint="POST /session",
                    status=resp.status,
                ) from exc
            log.info(
                "logged in to scanner",
                extra={"event": "scanner_session_login", "scanner": self.scanner_id},
            )

    # --- requests -----------------------------------------------------------------------

    def download_timeout(self, total_s: float | None = None) -> aiohttp.ClientTimeout:
        """Every read must make progress; ``total_s`` bounds the whole download (what is
        left of the export's deadline)."""
        return aiohttp.ClientTimeout(
            total=None if total_s is None else max(0.001, total_s),
            sock_connect=self.timeout_s,
            sock_read=self.timeout_s,
        )

    async def request_json(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        json: Any = None,
        form: FormFields | None = None,
        accept: Collection[int] = (),
        authenticate: bool = True,
        secrets: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> Any:
        """Send one call and decode its JSON answer (None for an empty body). ``endpoint`` is
        the path template used in errors and metrics, e.g. ``"POST /scans/{id}/launch"``.
        ``timeout_s`` shortens the transport's timeout (never lengthens it)."""
        body = None if json is None else _json_encoder.encode(json)
        async with self.open(
            method,
            path,
            endpoint,
            body=body,
            form=form,
            accept=accept,
            authenticate=authenticate,
            secrets=secrets,
            client_timeout=(
                None
                if timeout_s is None
                else aiohttp.ClientTimeout(total=max(0.001, min(self.timeout_s, timeout_s)))
            ),
        ) as resp:
            payload = await read_capped(resp, MAX_JSON_BYTES)
            status = resp.status

        def error(reason: str) -> ScannerError:
            return TransientScannerError(
                reason, scanner_id=self.scanner_id, endpoint=endpoint, status=status
            )

        if payload is None:
            raise error(f"the scanner's answer is larger than the {MAX_JSON_BYTES}-byte cap")
        if not payload.strip():
            return None
        return decode_json(payload, error)

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        body: bytes | None = None,
        form: FormFields | None = None,
        accept: Collection[int] = (),
        authenticate: bool = True,
        client_timeout: aiohttp.ClientTimeout | None = None,
        secrets: Sequence[str] = (),
        extra_headers: dict[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one call and yield the response once its status is a success (or in
        ``accept``); errors, including those while the caller reads the body, come out as
        :class:`ScannerError`. A session 401 logs in again once and repeats the call."""
        session = self._client_session()
        url = self.base_url + path
        timeout = client_timeout or aiohttp.ClientTimeout(total=self.timeout_s)
        for attempt in (1, 2):
            headers: dict[str, str] = {}
            token = None
            if authenticate:
                headers, token = await self._auth_headers()
            if extra_headers:
                headers.update(extra_headers)
            data: bytes | aiohttp.FormData | None = body
            if body is not None:
                headers["Content-Type"] = "application/json"
            elif form is not None:
                data = _form_data(form)
            started_s = self.clock.monotonic_s()
            outcome = "ok"
            relogin = False
            try:
                async with session.request(
                    method, url, data=data, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp:
                    status = resp.status
                    if 200 <= status < 300 or status in accept:
                        yield resp
                        return
                    outcome = f"http_{status // 100}xx"
                    if (
                        status == 401
                        and authenticate
                        and self.auth_mode == "session"
                        and attempt == 1
                    ):
                        relogin = True
                    else:
                        error_body = await read_capped(resp, MAX_ERROR_BYTES) or b""
                        raise http_error(
                            status,
                            error_body,
                            resp.headers.get("Retry-After"),
                            self._context(endpoint, secrets),
                        )
            except ScannerError:
                raise
            except asyncio.CancelledError:
                outcome = "canceled"
                raise
            except TimeoutError as exc:
                outcome = "timeout"
                raise ScannerTimeoutError(
                    f"no answer within {self.timeout_s:g}s",
                    scanner_id=self.scanner_id,
                    endpoint=endpoint,
                ) from exc
            except aiohttp.ClientError as exc:
                outcome, error = client_error(exc, self._context(endpoint, secrets))
                raise error from exc
            finally:
                self._record(endpoint, outcome, self.clock.monotonic_s() - started_s)
            if relogin:
                log.info(
                    "scanner session expired; logging in again",
                    extra={"event": "scanner_session_expired", "scanner": self.scanner_id},
                )
                await self._login(stale_token=token)

    def _record(self, endpoint: str, outcome: str, duration_s: float) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(self.scanner_id, endpoint, outcome, max(0.0, duration_s))
        except Exception:
            log.exception("on_request hook failed", extra={"event": "metrics_hook_failed"})

    def _context(self, endpoint: str, secrets: Sequence[str]) -> ErrorContext:
        return ErrorContext(
            scanner_id=self.scanner_id,
            endpoint=endpoint,
            auth_mode=self.auth_mode,
            clock=self.clock,
            redact=lambda text: self.redact(text, secrets),
            ca_file=self._ca_file if self._verify_tls else None,
        )

    def redact(self, text: str, extra: Sequence[str] = ()) -> str:
        """``text`` with every secret this transport knows (and ``extra``) replaced, also
        in the whitespace-folded form an error text may carry (``"a  b"`` as ``"a b"``) and
        in the JSON-escaped and percent-encoded forms a scanner echoing its request body
        gives back (logs.secret_forms)."""
        from nessus_pool.logs import secret_forms  # local: this change stays in redact

        known = (self._access_key, self._secret_key, self._password, self._token, *extra)
        forms = {
            f
            for s in known
            if s
            for e in secret_forms(s)
            for f in (e, " ".join(e.split()))
            if len(f) >= 4
        }
        for secret in sorted(forms, key=len, reverse=True):
            text = text.replace(secret, _REDACTED)
        return text


def _form_data(fields: FormFields) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value, filename in fields:
        if filename is None:
            form.add_field(name, value)
        else:
            form.add_field(name, value, filename=filename, content_type="application/octet-stream")
    return form
