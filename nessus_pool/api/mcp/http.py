"""Streamable HTTP transport at ``/mcp`` on the daemon's aiohttp app.

Handshake era: ``initialize`` opens a session (``Mcp-Session-Id``, 192 random bits, bound to
the bearer token that opened it); later requests without it get 400, with an unknown or
expired one 404; DELETE ends it. Stateless era (2026-07-28): no session; the
``MCP-Protocol-Version`` / ``Mcp-Method`` / ``Mcp-Name`` headers must mirror the body
(-32020, 400). Replies are JSON, or SSE once a tool streams progress. The Host (DNS
rebinding), Origin and Content-Type checks are the port's middleware (api/guard.py); every
request here passes the bearer-token check first.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import re
import secrets
import time
from typing import Any

from aiohttp import web

from nessus_pool.api.guard import LongLivedQuota, TokenAuth, connection_cap
from nessus_pool.api.mcp import protocol as p
from nessus_pool.config import Config

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
NAME_HEADER = "Mcp-Name"
#: the methods whose target ``Mcp-Name`` mirrors, and the param that names it
NAMED_PARAM = {
    "tools/call": "name",
    "resources/read": "uri",
    "prompts/get": "name",
    # the tasks extension routes by task id
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
#: requests that hold their connection until something happens (counted by LongLivedQuota)
LONG_LIVED_METHODS = frozenset({"subscriptions/listen", "tasks/result"})
LONG_LIVED_TOOLS = frozenset({"wait_for_scan"})
_B64 = re.compile(r"^=\?base64\?(.*)\?=$")
_JSON = "application/json"


def decode_header_value(value: str | None) -> str | None:
    """Undo the ``=?base64?...?=`` wrapping clients use for non-ASCII header values."""
    if value is None:
        return None
    m = _B64.fullmatch(value)
    if m is None:
        return value
    try:
        return base64.b64decode(m.group(1), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


def _error(status: int, code: int, message: str, rid: Any = None, data: Any = None) -> web.Response:
    return _json(p.error_bytes(rid, code, message, data), status)


def _too_many(message: str, rid: Any = None) -> web.Response:
    """429 for a stream or wait over its quota; the connection is closed with it, so the
    refused clients do not go on holding idle keep-alive connections under the cap."""
    resp = _error(429, p.INVALID_REQUEST, message, rid, {"retryAfterS": 1})
    resp.headers["Retry-After"] = "1"
    resp.force_close()
    return resp


def long_lived(msg: dict[str, Any]) -> bool:
    """Whether this request holds its connection until a scan changes or ends."""
    method = msg.get("method")
    if method in LONG_LIVED_METHODS:
        return True
    params = msg.get("params")
    return (
        method == "tools/call"
        and isinstance(params, dict)
        and params.get("name") in LONG_LIVED_TOOLS
    )


class _Exchange:
    """One POST: answered as JSON unless a notification arrives first, which switches the
    reply to an SSE stream that ends with the response."""

    __slots__ = ("request", "stream")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.stream: web.StreamResponse | None = None

    async def keepalive(self, data: bytes) -> None:
        """An SSE comment on an open stream: a client that left makes the write fail."""
        if self.stream is not None:
            await self.stream.write(data)

    async def notify(self, data: bytes) -> None:
        if self.stream is None:
            stream = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache, no-transform",
                    "X-Accel-Buffering": "no",
                },
            )
            await stream.prepare(self.request)
            self.stream = stream
        await self.stream.write(b"event: message\ndata: " + data + b"\n\n")

    async def open(self) -> None:
        """Start the SSE stream now (a GET stream has no first message to wait for)."""
        if self.stream is None:
            stream = web.StreamResponse(
                status=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            )
            await stream.prepare(self.request)
            self.stream = stream

    def stream_or_empty(self) -> web.StreamResponse:
        return self.stream if self.stream is not None else web.Response(status=204)

    async def finish(
        self, data: bytes, status: int, headers: dict[str, str] | None = None
    ) -> web.StreamResponse:
        if self.stream is None:
            return _json(data, status, headers)
        await self.stream.write(b"event: message\ndata: " + data + b"\n\n")
        await self.stream.write_eof()
        return self.stream


class McpHttp:
    """The ``/mcp`` handlers, the session table (expired lazily, no background task) and the
    quota of long-lived requests (streams and waits) per token."""

    def __init__(
        self,
        dispatcher: p.Dispatcher,
        config: Config,
        auth: TokenAuth,
        *,
        session_idle_s: float = 3600.0,
        max_connections: int | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.auth = auth
        self.max_body = config.body_limit_bytes
        self.session_idle_s = session_idle_s
        self.max_sessions = config.server.mcp_max_sessions
        self.sessions_per_token = config.server.mcp_sessions_per_token
        #: least recently used first, over all tokens and per token
        self.sessions: collections.OrderedDict[str, p.Session] = collections.OrderedDict()
        self._by_key: dict[bytes, collections.OrderedDict[str, p.Session]] = {}
        self.quota = LongLivedQuota(max_connections or connection_cap())

    def add_routes(self, app: web.Application, path: str = "/mcp") -> None:
        app.router.add_post(path, self.post)
        app.router.add_get(path, self.get)
        app.router.add_delete(path, self.delete)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_shutdown(self, app: web.Application) -> None:
        self.dispatcher.shutdown()

    # --- checks ------------------------------------------------------------------------------

    def _guard(self, request: web.Request) -> tuple[str, bytes] | web.Response:
        """(role, auth key) or the refusal."""
        header = request.headers.get("Authorization")
        role = self.auth.role(header)
        if role is None:
            resp = _error(
                401,
                p.INVALID_REQUEST,
                "a valid bearer token is required (Authorization: Bearer ...)",
            )
            resp.headers["WWW-Authenticate"] = 'Bearer realm="nessus-pool"'
            return resp
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest() if header else b""
        return role, key

    def _session(
        self, request: web.Request, key: bytes, rid: Any = None
    ) -> p.Session | web.Response:
        """The request's session, or the refusal (carrying ``rid``, the request's id)."""
        sid = request.headers.get(SESSION_HEADER)
        if sid is None:
            return _error(
                400,
                p.INVALID_REQUEST,
                f"{SESSION_HEADER} header is required; send initialize first",
                rid,
            )
        session = self.sessions.get(sid)
        now = time.monotonic()
        if session is not None and now - session.last_used_s > self.session_idle_s:
            self.drop_session(session)
            session = None
        if session is None or not secrets.compare_digest(session.auth_key, key):
            return _error(
                404, p.INVALID_REQUEST, "session not found or expired; initialize again", rid
            )
        session.last_used_s = now
        self.sessions.move_to_end(sid)
        self._by_key[key].move_to_end(sid)
        return session

    def drop_session(self, session: p.Session) -> None:
        """Forget a session (deleted, expired, evicted or never initialized) and end its GET
        stream, if one is open."""
        sid = session.session_id
        self.sessions.pop(sid, None)
        mine = self._by_key.get(session.auth_key)
        if mine is not None:
            mine.pop(sid, None)
            if not mine:
                del self._by_key[session.auth_key]
        if session.interest.close_stream is not None:
            session.interest.close_stream()
        self.dispatcher.forget(session)

    def _new_session(self, key: bytes) -> p.Session | None:
        """A new session for this token, or None when the table is full of other tokens'
        live sessions. A token at its quota loses its own least recently used session; no
        token can push out another's."""
        mine = self._by_key.get(key)
        if mine is not None and len(mine) >= self.sessions_per_token:
            self.drop_session(next(iter(mine.values())))
        if len(self.sessions) >= self.max_sessions:
            now = time.monotonic()
            while self.sessions:  # expired ones first, oldest use first
                oldest = next(iter(self.sessions.values()))
                if now - oldest.last_used_s <= self.session_idle_s:
                    break
                self.drop_session(oldest)
        if len(self.sessions) >= self.max_sessions:
            mine = self._by_key.get(key)
            if not mine:
                return None
            self.drop_session(next(iter(mine.values())))
        session = p.Session(secrets.token_urlsafe(24), key)
        session.last_used_s = time.monotonic()
        self.sessions[session.session_id] = session
        self._by_key.setdefault(key, collections.OrderedDict())[session.session_id] = session
        return session

    # --- handlers ----------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        """A handshake-era session's notification stream (resource updates, list changes,
        its tasks' status): one per session, open until the client leaves or the session
        ends. Without a session (or in the 2026-07-28 era, which uses
        ``subscriptions/listen``) there is no GET stream: 405."""
        guard = self._guard(request)
        if isinstance(guard, web.Response):
            return guard
        if SESSION_HEADER not in request.headers or "text/event-stream" not in request.headers.get(
            "Accept", ""
        ):
            return web.Response(status=405, headers={"Allow": "POST, DELETE"})
        session = self._session(request, guard[1])
        if isinstance(session, web.Response):
            return session
        if session.streaming:
            return _error(409, p.INVALID_REQUEST, "this session already has a GET stream open")
        refused = self.quota.acquire(guard[1])
        if refused is not None:
            return _too_many(refused)
        try:
            ex = _Exchange(request)
            changes = self.dispatcher.session_changes(session, ex.notify, ex.keepalive)
            if changes is None:
                return _error(503, p.INVALID_REQUEST, "too many notification streams are open")
            try:
                await ex.open()
            except BaseException:
                changes.close()  # never started
                raise
            session.streaming = True
            try:
                await changes
            finally:
                session.streaming = False
            return ex.stream_or_empty()
        finally:
            self.quota.release(guard[1])

    async def delete(self, request: web.Request) -> web.StreamResponse:
        guard = self._guard(request)
        if isinstance(guard, web.Response):
            return guard
        session = self._session(request, guard[1])
        if isinstance(session, web.Response):
            return session
        self.drop_session(session)  # its GET stream ends with it
        return web.Response(status=204)

    async def post(self, request: web.Request) -> web.StreamResponse:
        guard = self._guard(request)
        if isinstance(guard, web.Response):
            return guard
        role, key = guard
        if request.content_length is not None and request.content_length > self.max_body:
            return _error(413, p.INVALID_REQUEST, "request body is too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, p.INVALID_REQUEST, "request body is too large")
        try:
            msg = p.decode(body)
        except p.RpcError as exc:
            return _error(400, exc.code, exc.message)
        kind = p.classify(msg)
        if kind == "invalid":
            return _error(400, p.INVALID_REQUEST, p.invalid_reason(msg), p.request_id(msg))
        header_version = request.headers.get(VERSION_HEADER)
        if kind != "request":
            return self._accept(request, msg, header_version, key)
        try:
            version = p.modern_version(msg)
            if version is None and header_version is not None:
                if header_version not in p.SUPPORTED_VERSIONS:
                    raise p.unsupported_version(header_version)
                if header_version in p.MODERN_VERSIONS:
                    raise p.RpcError(
                        p.INVALID_PARAMS,
                        f"a {header_version} request needs params._meta."
                        f"{p.PROTOCOL_VERSION_META} and {p.CLIENT_CAPABILITIES_META}",
                    )
            if version is not None:
                self._check_headers(request, msg, version)
        except p.RpcError as exc:
            status = p.MODERN_HTTP_STATUS.get(exc.code, 400)
            return _error(status, exc.code, exc.message, msg["id"], exc.data)
        if not long_lived(msg):
            return await self._answer(request, msg, version, role, key)
        refused = self.quota.acquire(key)
        if refused is not None:
            return _too_many(refused, msg["id"])
        try:
            return await self._answer(request, msg, version, role, key)
        finally:
            self.quota.release(key)

    async def _answer(
        self, request: web.Request, msg: dict[str, Any], version: str | None, role: str, key: bytes
    ) -> web.StreamResponse:
        if version is not None:
            return await self._modern(request, msg, version, role)
        return await self._legacy(request, msg, role, key)

    def _check_headers(self, request: web.Request, msg: dict[str, Any], version: str) -> None:
        h = request.headers
        if h.get(VERSION_HEADER) != version:
            raise p.RpcError(
                p.HEADER_MISMATCH, f"{VERSION_HEADER} header does not match params._meta"
            )
        if h.get(METHOD_HEADER) != msg["method"]:
            raise p.RpcError(p.HEADER_MISMATCH, f"{METHOD_HEADER} header does not match method")
        named = NAMED_PARAM.get(msg["method"])
        if named is not None:
            name = p.params_of(msg).get(named)
            if name is not None and decode_header_value(h.get(NAME_HEADER)) != name:
                raise p.RpcError(
                    p.HEADER_MISMATCH, f"{NAME_HEADER} header does not match params.{named}"
                )

    def _accept(
        self, request: web.Request, msg: Any, header_version: str | None, key: bytes
    ) -> web.Response:
        """Notifications and responses: 202, after the same session rules as requests."""
        if header_version is not None and header_version not in p.SUPPORTED_VERSIONS:
            return _error(
                400, p.UNSUPPORTED_VERSION, f"unsupported protocol version {header_version!r}"
            )
        if header_version in p.MODERN_VERSIONS and SESSION_HEADER not in request.headers:
            return web.Response(status=202)
        session = self._session(request, key)
        if isinstance(session, web.Response):
            return session
        if msg.get("method") == "notifications/initialized":
            session.initialized = True
        return web.Response(status=202)

    async def _modern(
        self, request: web.Request, msg: dict[str, Any], version: str, role: str
    ) -> web.StreamResponse:
        ex = _Exchange(request)
        data, code = await self.dispatcher.handle(
            msg, None, role=role, notify=ex.notify, version=version, keepalive=ex.keepalive
        )
        status = 200 if code is None else p.MODERN_HTTP_STATUS.get(code, 200)
        return await ex.finish(data, status)

    async def _legacy(
        self, request: web.Request, msg: dict[str, Any], role: str, key: bytes
    ) -> web.StreamResponse:
        method = msg["method"]
        headers = None
        if method == "initialize":
            session: p.Session | None = self._new_session(key)
            if session is None:
                return _too_many(
                    f"too many MCP sessions are open (server.mcp-max-sessions = "
                    f"{self.max_sessions}); end one (DELETE /mcp) and retry",
                    msg["id"],
                )
            headers = {SESSION_HEADER: session.session_id}
        elif method == "server/discover":
            session = None
        else:
            found = self._session(request, key, msg["id"])
            if isinstance(found, web.Response):
                return found
            session = found
        ex = _Exchange(request)
        data, _ = await self.dispatcher.handle(
            msg, session, role=role, notify=ex.notify, checked=True
        )
        if method == "initialize" and session is not None and session.protocol_version is None:
            self.drop_session(session)  # initialize failed: no session
            headers = None
        return await ex.finish(data, 200, headers)
