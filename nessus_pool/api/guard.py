"""The port's front door: checks every request passes before any route sees it, the bearer
tokens, and the connection limits of the listener.

- Host (DNS rebinding) and Origin (cross-site pages) for every route on the port: admin
  API, probes, ``/metrics`` and ``/mcp`` alike (:class:`FrontDoor`, in front of every route:
  ``api.admin.guard_routes``).
- A request body must be ``application/json`` (415), and the content types of a browser's
  "simple request" (``text/plain``, forms) are refused even without a body: a page cannot
  send JSON cross-site without a CORS preflight, which we never grant.
- :class:`TokenAuth`: bearer tokens compared in constant time on their exact bytes.
- :class:`CappedSite`: a connection cap below the open-file limit (503 beyond it) and a
  header-read timeout, so slow clients cannot hold the port.
- :class:`LongLivedQuota`: streams and long polls limited to half of that cap, and a
  quarter of that per token, so they never starve probes and admin requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import resource
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from nessus_pool.config import ServerConfig, is_loopback, parse_listen
from nessus_pool.errors import AuthError, NessusPoolError

log = logging.getLogger("nessus_pool.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: JSON-RPC "invalid request", the code /mcp answers refusals with
_RPC_INVALID_REQUEST = -32600
#: the content types a page may send cross-site without a CORS preflight (a "simple
#: request"): refused even on an empty body
_SIMPLE_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
_VERDICTS_MAX = 256
_enc = msgspec.json.Encoder()


def _remember(cache: dict[str, bool], key: str, verdict: bool) -> bool:
    """Keep a header verdict; the cache is bounded (cleared when full) because the values
    come from clients."""
    if len(cache) >= _VERDICTS_MAX:
        cache.clear()
    cache[key] = verdict
    return verdict


def _loopback_host(host: str) -> bool:
    """An empty Host, or one naming a loopback address (DNS rebinding protection)."""
    if not host:
        return True
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    return name is not None and is_loopback(name)


def refusal(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """An error in the shape the route speaks: JSON-RPC on ``/mcp``, our error body elsewhere."""
    if request.path == "/mcp" or request.path.startswith("/mcp/"):
        body = {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": _RPC_INVALID_REQUEST, "message": message},
        }
    else:
        body = {"error": {"code": code, "message": message}}
    return web.Response(body=_enc.encode(body), status=status, content_type="application/json")


#: a request body (at most server.max-body-bytes) must arrive within this long
BODY_TIMEOUT_S = 30.0


class FrontDoor:
    """Host / Origin / Content-Type rules for every route, and a deadline on request bodies
    (a body dripped a byte at a time would hold its connection for ever otherwise). Verdicts
    depend only on the header value and on config fixed for this object's life, so they are
    cached (parsing them with urlsplit and ipaddress was ~5% of an MCP tools/call under
    load)."""

    def __init__(self, server: ServerConfig, *, body_timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.body_timeout_s = body_timeout_s
        host, _ = parse_listen(server.listen)
        self.loopback = is_loopback(host)
        self.allowed_origins = frozenset(o.rstrip("/") for o in server.allowed_origins)
        self._host_ok: dict[str, bool] = {}
        self._origin_ok: dict[str, bool] = {}

    def host_ok(self, raw_host: str) -> bool:
        """On a loopback listener only a loopback Host is served (DNS rebinding)."""
        if not self.loopback:
            return True
        ok = self._host_ok.get(raw_host)
        if ok is None:
            ok = _remember(self._host_ok, raw_host, _loopback_host(raw_host.strip()))
        return ok

    def origin_ok(self, origin: str) -> bool:
        ok = self._origin_ok.get(origin)
        if ok is None:
            ok = _remember(self._origin_ok, origin, self._check_origin(origin))
        return ok

    def _check_origin(self, origin: str) -> bool:
        if origin.rstrip("/") in self.allowed_origins:
            return True
        try:
            name = urlsplit(origin).hostname
        except ValueError:
            return False
        return self.loopback and name is not None and is_loopback(name)

    def check(self, request: web.Request) -> web.Response | None:
        """The refusal for this request, or None when it may go on."""
        headers = request.headers
        raw_host = headers.get("Host") or ""
        if not self.host_ok(raw_host):
            return refusal(
                request, 403, "forbidden_host", f"Host {raw_host.strip()!r} is not allowed"
            )
        origin = headers.get("Origin")
        if origin is not None and not self.origin_ok(origin):
            return refusal(request, 403, "forbidden_origin", f"Origin {origin!r} is not allowed")
        ctype = request.content_type
        if (request.body_exists and ctype != "application/json") or ctype in _SIMPLE_TYPES:
            got = headers.get("Content-Type") or "none"
            return refusal(
                request,
                415,
                "unsupported_media_type",
                f"request bodies must be Content-Type: application/json (got {got!r})",
            )
        return None

    async def admit(self, request: web.Request) -> web.Response | None:
        """The refusal for this request, or None once its body (if any) is read."""
        refused = self.check(request)
        if refused is not None:
            return refused
        if request.body_exists:
            # read here, under a deadline; aiohttp keeps it for the handler's read(). A body
            # that came whole with the head (most do) is read without waiting: no deadline
            # to arm (a timer per request was ~4% of a submit's loop time)
            try:
                if request.content.is_eof():
                    await request.read()
                else:
                    async with asyncio.timeout(self.body_timeout_s):
                        await request.read()
            except TimeoutError:
                return refusal(
                    request,
                    408,
                    "body_timeout",
                    f"request body not received within {self.body_timeout_s:g} s",
                )
            except web.HTTPRequestEntityTooLarge:
                return refusal(request, 413, "body_too_large", "request body is too large")
        return None


# --- tokens --------------------------------------------------------------------------------


class Forbidden(NessusPoolError):
    """Forbidden."""

    code = "forbidden"


def _digest(token: str) -> bytes:
    # header values arrive decoded with surrogateescape: this gives back the exact bytes
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenAuth:
    """Bearer tokens with two roles, kept as SHA-256 digests of their exact bytes and compared
    in constant time (every token is compared, no early exit). Nothing is stripped: a token
    is what follows ``Bearer `` byte for byte. With no tokens configured (loopback only)
    everything is allowed; empty and short tokens are refused at load (config.check_token)."""

    def __init__(self, read_tokens: list[str], admin_tokens: list[str]) -> None:
        self._read = [_digest(t) for t in read_tokens]
        self._admin = [_digest(t) for t in admin_tokens]

    @property
    def open(self) -> bool:
        return not self._read and not self._admin

    def role(self, header: str | None) -> str | None:
        if self.open:
            return "admin"
        if not header or not header.startswith("Bearer "):
            return None
        digest = _digest(header[7:])
        is_admin = False
        for d in self._admin:
            is_admin |= hmac.compare_digest(digest, d)
        is_read = False
        for d in self._read:
            is_read |= hmac.compare_digest(digest, d)
        return "admin" if is_admin else "read" if is_read else None

    def require(self, request: web.Request, role: str) -> None:
        """Raise AuthError (401) without a valid token, Forbidden (403) when an admin
        endpoint gets a read token."""
        got = self.role(request.headers.get("Authorization"))
        if got is None:
            raise AuthError("a valid bearer token is required (Authorization: Bearer ...)")
        if role == "admin" and got != "admin":
            raise Forbidden("this endpoint needs an admin token")


# --- listener ------------------------------------------------------------------------------

#: a client that has not sent a whole request head this long after connecting (or after the
#: previous response on a kept-alive connection) is disconnected
HEADER_TIMEOUT_S = 20.0


def connection_cap(nofile_soft: int | None = None) -> int:
    """How many client connections the listener keeps open at once: below the open-file
    limit (RLIMIT_NOFILE), leaving a quarter (at least 128) for SQLite, exports, scanner
    clients and the accept backlog."""
    if nofile_soft is None:
        nofile_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile_soft == resource.RLIM_INFINITY or nofile_soft <= 0:
        nofile_soft = 65536
    return max(8, min(10_000, nofile_soft - max(128, nofile_soft // 4)))


class LongLivedQuota:
    """Connections held open by one request (MCP notification streams and long polls:
    ``subscriptions/listen``, a session's GET stream, ``wait_for_scan``, ``tasks/result``),
    counted apart from the connection cap they live under: together they may hold at most
    half of it (``total_max``), one bearer token at most a quarter of that
    (``per_token_max``). The other half stays free for probes, admin requests and short
    calls however many streams clients ask for. Derived from the real cap."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.total_max = max(1, max_connections // 2)
        self.per_token_max = max(1, self.total_max // 4)
        self.total = 0
        self._by_key: dict[bytes, int] = {}
        self.refused = 0

    def held(self, key: bytes) -> int:
        return self._by_key.get(key, 0)

    def acquire(self, key: bytes) -> str | None:
        """Take one place for ``key`` (a digest of the bearer token), or say which limit is
        full (the place is not taken then)."""
        if self.total >= self.total_max:
            self.refused += 1
            return (
                f"too many long-lived requests (streams and waits) are open on this server "
                f"(limit {self.total_max}, half of the {self.max_connections}-connection "
                "cap); close one and retry"
            )
        held = self._by_key.get(key, 0)
        if held >= self.per_token_max:
            self.refused += 1
            return (
                f"this token already holds {held} long-lived requests (streams and waits), "
                f"its limit (per-token limit {self.per_token_max}); close one and retry"
            )
        self._by_key[key] = held + 1
        self.total += 1
        return None

    def release(self, key: bytes) -> None:
        held = self._by_key.get(key, 0)
        if held <= 1:
            self._by_key.pop(key, None)
        else:
            self._by_key[key] = held - 1
        self.total = max(0, self.total - 1)


_BUSY_BODY = _enc.encode(
    {"error": {"code": "too_many_connections", "message": "too many open connections; retry"}}
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + _BUSY_BODY
)


class _Busy(asyncio.Protocol):
    """A connection over the cap: answered 503 at once, closed once the request's first
    bytes are read (closing with them unread would send a reset, which discards the 503 at
    the client) or after a second at most."""

    _LINGER_S = 1.0

    def __init__(self) -> None:
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        transport.write(_BUSY)
        self._timer = asyncio.get_running_loop().call_later(self._LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _FirstHeadDeadline(asyncio.Protocol):
    """aiohttp's handler, wrapped: the connection is closed when no complete request head
    (up to the blank line) has arrived ``timeout_s`` after connecting. Later requests on a
    kept-alive connection are covered by aiohttp's keep-alive timer, which older aiohttp
    releases do not arm before the first request."""

    __slots__ = ("__weakref__", "_inner", "_on_made", "_tail", "_timeout_s", "_timer", "_transport")

    def __init__(
        self,
        inner: asyncio.Protocol,
        timeout_s: float,
        on_made: Callable[[_FirstHeadDeadline], None] | None = None,
    ) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._on_made = on_made
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._on_made is not None:
            self._on_made(self)
            self._on_made = None
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._timer.cancel()
                self._timer, self._tail = None, b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class RateLimitedLog:
    """At most one line per ``interval_s`` for a repeating condition, with the count of the
    ones folded into it."""

    def __init__(
        self, interval_s: float = 10.0, now_s: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._now_s = now_s
        self._last_s: float | None = None
        self.suppressed = 0

    def ready(self) -> int | None:
        """The number of occurrences to report now, or None to stay quiet."""
        now = self._now_s()
        self.suppressed += 1
        if self._last_s is not None and now - self._last_s < self.interval_s:
            return None
        self._last_s = now
        count, self.suppressed = self.suppressed, 0
        return count


class CappedSite(web.TCPSite):
    """A TCP site whose connections are capped (503 beyond ``max_connections``) and whose
    clients must send their first request head within ``header_timeout_s``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        header_timeout_s: float = HEADER_TIMEOUT_S,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.refused = 0
        # accepted in this burst but not yet registered with aiohttp (asyncio makes the
        # protocols of a whole accept batch before any connection_made runs); weak, so an
        # accept that fails half-way cannot leak a count
        self._pending: weakref.WeakSet[_FirstHeadDeadline] = weakref.WeakSet()
        self._refused_log = RateLimitedLog()

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) + len(self._pending) >= self.max_connections:
            self.refused += 1
            count = self._refused_log.ready()
            if count is not None:
                log.warning(
                    "connection cap reached, answering 503",
                    extra={
                        "event": "http_connections_capped",
                        "max_connections": self.max_connections,
                        "refused": count,
                    },
                )
            return _Busy()
        protocol = _FirstHeadDeadline(server(), self.header_timeout_s, self._pending.discard)
        self._pending.add(protocol)
        return protocol

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, reuse_address=True
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


def accept_error_handler(
    limiter: RateLimitedLog | None = None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler that folds asyncio's "socket.accept() out of system
    resource" reports (one traceback per attempt otherwise) into one rate-limited line, and
    passes everything else to the default handler."""
    lim = limiter or RateLimitedLog()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "socket.accept()" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        count = lim.ready()
        if count is not None:
            exc = context.get("exception")
            log.error(
                "cannot accept connections: out of file descriptors",
                extra={
                    "event": "http_accept_exhausted",
                    "error": f"{type(exc).__name__}: {exc}" if exc else "",
                    "occurrences": count,
                },
            )

    return handle
