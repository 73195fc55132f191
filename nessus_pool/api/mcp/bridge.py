"""stdio <-> Streamable HTTP bridge: ``nessus-pool mcp --connect URL`` relays each stdio
message to a running daemon's ``/mcp`` and writes back what it answers (JSON or SSE)."""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from nessus_pool.api.mcp import protocol as p
from nessus_pool.api.mcp.http import (
    METHOD_HEADER,
    NAME_HEADER,
    NAMED_PARAM,
    SESSION_HEADER,
    VERSION_HEADER,
)
from nessus_pool.api.mcp.stdio import TOKEN_ENV, Output, pump
from nessus_pool.config import Config, parse_listen, resolve_secret
from nessus_pool.errors import ConfigError

PROBE_TIMEOUT_S = 10.0
_SAFE = re.compile(r"^[\x20-\x7e]*$")


def encode_header_value(value: str) -> str:
    if _SAFE.fullmatch(value) and value == value.strip():
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


def daemon_url(cfg: Config) -> str | None:
    """``http://host:port/mcp`` of the configured listen address (None for port 0)."""
    host, port = parse_listen(cfg.server.listen)
    if port == 0:
        return None
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/mcp"


def token_from_config(cfg: Config) -> str | None:
    """The first admin token the config can resolve: the user who may read the config may
    act as its admin; the value is never printed."""
    for ref in cfg.server.admin_tokens:
        try:
            value = resolve_secret(ref, "$.server.admin-tokens")
        except ConfigError:
            continue
        if value:
            return value
    return None


class _Relay:
    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None, out: Output):
        self.http = http
        self.url = url
        self.out = out
        self.base = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        if token:
            self.base["Authorization"] = f"Bearer {token}"
        self.session_id: str | None = None
        self.version: str | None = None
        self.stream: asyncio.Task[None] | None = None

    def open_stream(self) -> None:
        """Once the session is initialized: relay its GET stream (resource updates, list
        changes, task status), which a stdio client gets unasked on a direct connection."""
        if self.stream is None and self.session_id:
            self.stream = asyncio.create_task(self._get_stream(), name="mcp:bridge-stream")

    async def _get_stream(self) -> None:
        h = {k: v for k, v in self.base.items() if k != "Content-Type"}
        h["Accept"] = "text/event-stream"
        h[SESSION_HEADER] = self.session_id or ""
        if self.version:
            h[VERSION_HEADER] = self.version
        try:
            async with self.http.get(self.url, headers=h) as resp:
                if resp.status == 200 and resp.content_type == "text/event-stream":
                    await self._sse(resp)
        except (aiohttp.ClientError, OSError):
            pass  # the daemon went away: requests report that themselves

    async def probe(self) -> str | None:
        """Why the daemon cannot serve this bridge at all, or None. A ``GET`` without a
        session is answered 405 by a reachable ``/mcp`` (401 for a refused token)."""
        h = {k: v for k, v in self.base.items() if k != "Content-Type"}
        try:
            async with self.http.get(
                self.url, headers=h, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
            ) as resp:
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return f"cannot reach the daemon at {self.url}: {exc or type(exc).__name__}"
        if status == 401:
            how = "is refused" if "Authorization" in self.base else "is missing"
            return (
                f"the daemon at {self.url} needs a bearer token and ours {how} "
                f"(--token-file or ${TOKEN_ENV})"
            )
        if status == 404:
            return f"no MCP endpoint at {self.url} (HTTP 404): is the path /mcp?"
        return None

    def headers(self, msg: dict[str, Any]) -> dict[str, str]:
        h = dict(self.base)
        if self.session_id:
            h[SESSION_HEADER] = self.session_id
        params = msg.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        modern = meta.get(p.PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
        if isinstance(modern, str):
            h[VERSION_HEADER] = modern
            method = msg.get("method")
            if isinstance(method, str):
                h[METHOD_HEADER] = method
                named = NAMED_PARAM.get(method)
                name = params.get(named) if named and isinstance(params, dict) else None
                if isinstance(name, str):
                    h[NAME_HEADER] = encode_header_value(name)
        elif self.version and msg.get("method") != "initialize":
            h[VERSION_HEADER] = self.version
        return h

    async def send(self, msg: dict[str, Any]) -> bytes | None:
        """POST one message; relay what comes back. Returns a locally made error reply
        when the daemon cannot be reached."""
        rid = p.request_id(msg) if "id" in msg else None
        try:
            async with self.http.post(
                self.url, data=msgspec.json.encode(msg), headers=self.headers(msg)
            ) as resp:
                ctype = resp.headers.get("Content-Type", "")
                if resp.status == 202:
                    return None
                if ctype.startswith("text/event-stream"):
                    await self._sse(resp)
                    return None
                body = await resp.read()
                if msg.get("method") == "initialize" and resp.status == 200:
                    self._remember(resp, body)
                if ctype.startswith("application/json") and body.strip():
                    return body.strip()
                if rid is None:
                    return None
                return p.error_bytes(
                    rid, p.INTERNAL_ERROR, f"the daemon answered HTTP {resp.status}"
                )
        except (aiohttp.ClientError, OSError) as exc:
            if rid is None:
                return None
            return p.error_bytes(
                rid, p.INTERNAL_ERROR, f"cannot reach the daemon at {self.url}: {exc}"
            )

    def _remember(self, resp: aiohttp.ClientResponse, body: bytes) -> None:
        self.session_id = resp.headers.get(SESSION_HEADER) or self.session_id
        try:
            result = msgspec.json.decode(body).get("result") or {}
        except (msgspec.DecodeError, AttributeError):
            return
        version = result.get("protocolVersion") if isinstance(result, dict) else None
        if isinstance(version, str):
            self.version = version

    async def _sse(self, resp: aiohttp.ClientResponse) -> None:
        data: list[bytes] = []
        async for raw in resp.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    await self.out.send(b"\n".join(data))
                    data = []
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if data:
            await self.out.send(b"\n".join(data))

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
            await asyncio.gather(self.stream, return_exceptions=True)
        if self.session_id:
            h = dict(self.base)
            h[SESSION_HEADER] = self.session_id
            try:
                async with self.http.delete(self.url, headers=h):
                    pass
            except (aiohttp.ClientError, OSError):
                pass


async def bridge(
    url: str, token: str | None, readline: Callable[[], Awaitable[bytes]], out: Output
) -> int:
    """Relay until stdin ends (0). Requests run concurrently; notifications in order.
    1 at once when the daemon cannot be reached or refuses the token: a client then sees the
    server fail to start, with the reason on stderr, instead of an error per request."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        relay = _Relay(http, url, token, out)
        problem = await relay.probe()
        if problem is not None:
            print(f"nessus-pool mcp: error: {problem}", file=sys.stderr, flush=True)
            return 1

        async def on_notification(msg: dict[str, Any]) -> None:
            await relay.send(msg)
            if msg.get("method") == "notifications/initialized":
                relay.open_stream()

        try:
            await pump(readline, out, relay.send, on_notification)
        finally:
            await relay.close()
    return 0
