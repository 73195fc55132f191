"""JSON-RPC 2.0 for MCP on msgspec: a transport-independent dispatcher for both protocol eras.

Handshake era (2025-03-26 .. 2025-11-25): ``initialize`` negotiates a version that is kept on the
:class:`Session`. Stateless era (2026-07-28): every request carries its protocol version and
client capabilities in ``params._meta``; ``server/discover`` says what we speak. A transport
decodes bytes with :func:`decode`, asks :func:`classify` what arrived, and awaits
:meth:`Dispatcher.handle` for requests; the reply comes back encoded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import msgspec

from nessus_pool import __version__
from nessus_pool.api.mcp.events import Interest
from nessus_pool.api.mcp.features import FeatureError, Features, request_log_level
from nessus_pool.api.mcp.tasks import TASK_TOOLS, TASKS_EXTENSION
from nessus_pool.api.mcp.tools import (
    ResourceCatalog,
    ResourceNotFoundError,
    ResourceParamsError,
    Toolbox,
    ToolContext,
    UnknownToolError,
)
from nessus_pool.errors import StorageUnavailableError

log = logging.getLogger("nessus_pool.mcp")

PROTOCOL_VERSION_META: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META: Final = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META: Final = "io.modelcontextprotocol/serverInfo"

HANDSHAKE_VERSIONS: Final = ("2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE: Final = "2025-11-25"
MODERN_VERSIONS: Final = ("2026-07-28",)
SUPPORTED_VERSIONS: Final = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
HEADER_MISMATCH: Final = -32020
#: resource not found in the handshake era; 2026-07-28 (SEP-2164) answers INVALID_PARAMS
RESOURCE_NOT_FOUND: Final = -32002
UNSUPPORTED_VERSION: Final = -32022
#: the database is unavailable (a PostgreSQL outage): ``data.retry_after_s`` says when to
#: send the same request again (tools answer an isError result instead)
STORAGE_UNAVAILABLE: Final = -32050

#: HTTP status of a JSON-RPC error on the stateless (2026-07-28) HTTP wire
MODERN_HTTP_STATUS: Final = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_VERSION: 400,
    METHOD_NOT_FOUND: 404,
    STORAGE_UNAVAILABLE: 503,
}

#: cache hint for results that only change with a new server build (tools/list, discover)
STATIC_TTL_MS: Final = 300_000

INSTRUCTIONS: Final = (
    "nessus-pool runs Tenable Nessus scans on pools of scanners. Submit with run_untrusted_scan "
    "or run_authenticated_scan (a configured credential set, or inline SSH fields), then "
    "wait_for_scan or poll get_scan_status, then read findings page by page with "
    "get_scan_results and compare runs with compare_scans. Scans only run against targets the "
    "pool's scope allows."
)

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

#: sends one encoded notification (progress) on the request's channel
Notify = Callable[[bytes], Awaitable[None]]


class RpcError(Exception):
    """A JSON-RPC error reply (never a tool failure: those are ``isError`` results)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Session:
    """Handshake-era state of one connection (stdio) or one ``Mcp-Session-Id`` (HTTP)."""

    __slots__ = (
        "auth_key",
        "initialized",
        "interest",
        "last_used_s",
        "log_level",
        "protocol_version",
        "session_id",
        "streaming",
    )

    def __init__(self, session_id: str = "", auth_key: bytes = b"") -> None:
        self.session_id = session_id
        self.auth_key = auth_key
        self.protocol_version: str | None = None
        self.initialized = False
        self.last_used_s = 0.0
        #: logging/setLevel's level; None: no notifications/message
        self.log_level: str | None = None
        #: subscribed resources and the tasks created here (notifications on its stream)
        self.interest = Interest()
        #: a GET /mcp stream is open for it
        self.streaming = False


def decode(body: bytes | str) -> Any:
    """Raises RpcError(PARSE_ERROR) on malformed JSON, RpcError(INVALID_REQUEST) on JSON
    nested deeper than the decoder goes (msgspec raises RecursionError near 1,000 levels;
    no MCP message comes close)."""
    try:
        return _dec.decode(body)
    except msgspec.DecodeError:
        raise RpcError(PARSE_ERROR, "Parse error: the message is not valid JSON") from None
    except RecursionError:
        raise RpcError(INVALID_REQUEST, "Invalid request: JSON nested too deeply") from None


def classify(msg: Any) -> str:
    """``request``, ``notification``, ``response`` or ``invalid`` (batches are invalid)."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return "invalid"
    method = msg.get("method")
    if method is None:
        return "response" if "id" in msg and ("result" in msg or "error" in msg) else "invalid"
    if not isinstance(method, str):
        return "invalid"
    if "id" not in msg:
        return "notification"
    return "request" if _usable_id(msg["id"]) else "invalid"


#: JSON-RPC ids are echoed back; an integer beyond this is not exact in JavaScript clients
MAX_SAFE_INTEGER: Final = 2**53 - 1


def _usable_id(rid: Any) -> bool:
    """A string, or an integer within the safe-integer range (+-(2**53 - 1))."""
    if isinstance(rid, str):
        return True
    return (
        isinstance(rid, int)
        and not isinstance(rid, bool)
        and -MAX_SAFE_INTEGER <= rid <= MAX_SAFE_INTEGER
    )


def invalid_reason(msg: Any) -> str:
    """Why :func:`classify` called ``msg`` invalid, naming the field when it is the id."""
    if (
        isinstance(msg, dict)
        and msg.get("jsonrpc") == "2.0"
        and "id" in msg
        and not _usable_id(msg["id"])
    ):
        return (
            "id must be a string or an integer between -(2**53 - 1) and 2**53 - 1 "
            "(the JSON safe-integer range)"
        )
    return "expected one JSON-RPC 2.0 request, notification or response object"


def request_id(msg: Any) -> Any:
    """The id to answer with, or None when the message has no usable id."""
    if isinstance(msg, dict):
        rid = msg.get("id")
        if _usable_id(rid):
            return rid
    return None


def params_of(msg: dict[str, Any]) -> dict[str, Any]:
    params = msg.get("params")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params must be an object")
    return params


def meta_of(params: dict[str, Any]) -> dict[str, Any] | None:
    meta = params.get("_meta")
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise RpcError(INVALID_PARAMS, "params._meta must be an object")
    return meta


def modern_version(msg: dict[str, Any]) -> str | None:
    """The per-request protocol version (2026-07-28 envelope), validated; None in the
    handshake era. Raises RpcError for an unsupported version or an incomplete envelope."""
    meta = meta_of(params_of(msg))
    if meta is None or PROTOCOL_VERSION_META not in meta:
        return None
    version = meta[PROTOCOL_VERSION_META]
    if not isinstance(version, str):
        raise RpcError(INVALID_PARAMS, f"params._meta.{PROTOCOL_VERSION_META} must be a string")
    if version not in MODERN_VERSIONS:
        raise unsupported_version(version)
    if CLIENT_CAPABILITIES_META not in meta:
        raise RpcError(
            INVALID_PARAMS, f"params._meta is missing the required key {CLIENT_CAPABILITIES_META}"
        )
    return version


def unsupported_version(requested: str) -> RpcError:
    return RpcError(
        UNSUPPORTED_VERSION,
        f"unsupported protocol version {requested!r}",
        {"supported": list(SUPPORTED_VERSIONS), "requested": requested},
    )


def error_bytes(rid: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return _enc.encode({"jsonrpc": "2.0", "id": rid, "error": err})


def notification_bytes(method: str, params: dict[str, Any]) -> bytes:
    return _enc.encode({"jsonrpc": "2.0", "method": method, "params": params})


def _complete(result: dict[str, Any], version: str | None) -> dict[str, Any]:
    if version is not None:
        result["resultType"] = "complete"
    return result


def _fresh(result: dict[str, Any], version: str | None) -> dict[str, Any]:
    """A 2026-07-28 cacheable result that may change any time (and is per token)."""
    if version is not None:
        result.update(resultType="complete", ttlMs=0, cacheScope="private")
    return result


def _static_list(key: str, items: list[Any]) -> tuple[msgspec.Raw, msgspec.Raw]:
    """A list result that never changes, encoded once: (handshake era, 2026-07-28 era with
    its cache fields)."""
    legacy = msgspec.Raw(_enc.encode({key: items}))
    modern = msgspec.Raw(
        _enc.encode(
            {
                key: items,
                "resultType": "complete",
                "ttlMs": STATIC_TTL_MS,
                "cacheScope": "public",
            }
        )
    )
    return legacy, modern


class Dispatcher:
    """Answers MCP requests by calling the toolbox; one per server, shared by transports.

    Everything that does not depend on the request (tool list, resource templates, discover
    and initialize results) is encoded once here and spliced into replies as ``msgspec.Raw``."""

    def __init__(
        self,
        toolbox: Toolbox,
        resources: ResourceCatalog,
        features: Features | None = None,
        *,
        server_name: str = "nessus-pool",
    ) -> None:
        self.toolbox = toolbox
        self.resources = resources
        self.features = features
        info = {"name": server_name, "title": "nessus-pool", "version": __version__}
        caps: dict[str, Any] = {
            "tools": {"listChanged": False},
            "resources": {"listChanged": False},
        }
        modern_caps = caps
        if features is not None:
            common = {
                "tools": {"listChanged": False},
                "resources": {"subscribe": True, "listChanged": True},
                "prompts": {"listChanged": False},
                "completions": {},
                "logging": {},
            }
            caps = {
                **common,
                "tasks": {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}},
            }
            modern_caps = {**common, "extensions": {TASKS_EXTENSION: {}}}
        tools = toolbox.definitions()
        self._tools_legacy, self._tools_modern = _static_list("tools", tools)
        self._templates_legacy, self._templates_modern = _static_list(
            "resourceTemplates", resources.templates()
        )
        self._prompts_legacy, self._prompts_modern = _static_list(
            "prompts", features.prompts.definitions() if features is not None else []
        )
        self._discover = msgspec.Raw(
            _enc.encode(
                {
                    "supportedVersions": list(SUPPORTED_VERSIONS),
                    "capabilities": modern_caps,
                    "instructions": INSTRUCTIONS,
                    "resultType": "complete",
                    "ttlMs": STATIC_TTL_MS,
                    "cacheScope": "public",
                    "_meta": {SERVER_INFO_META: info},
                }
            )
        )
        self._init_results = {
            v: msgspec.Raw(
                _enc.encode(
                    {
                        "protocolVersion": v,
                        "capabilities": caps,
                        "serverInfo": info,
                        "instructions": INSTRUCTIONS,
                    }
                )
            )
            for v in HANDSHAKE_VERSIONS
        }
        self._empty_legacy = msgspec.Raw(b"{}")
        self._empty_modern = msgspec.Raw(b'{"resultType":"complete"}')

    async def handle(
        self,
        msg: dict[str, Any],
        session: Session | None,
        *,
        role: str = "admin",
        notify: Notify | None = None,
        version: str | None = None,
        checked: bool = False,
        keepalive: Notify | None = None,
    ) -> tuple[bytes, int | None]:
        """Answer one request (``classify(msg) == "request"``): the encoded reply and its
        JSON-RPC error code (None on success).

        ``version`` is the already validated per-request version when the transport has
        checked it (HTTP; ``checked=True`` says a None there was checked too); otherwise it
        is read from ``params._meta`` here."""
        rid = msg["id"]
        try:
            if version is None and not checked:
                version = modern_version(msg)
            result = await self._call(msg, session, version, role, notify, keepalive)
        except FeatureError as exc:
            return error_bytes(rid, exc.code, exc.message, exc.data), exc.code
        except RpcError as exc:
            return error_bytes(rid, exc.code, exc.message, exc.data), exc.code
        except StorageUnavailableError as exc:  # resources/* read the database too
            data = {"code": exc.code, "retry_after_s": exc.retry_after_s}
            return error_bytes(rid, STORAGE_UNAVAILABLE, str(exc), data), STORAGE_UNAVAILABLE
        except Exception:
            log.exception("mcp request failed", extra={"event": "mcp_internal_error"})
            text = "internal error (see the server log)"
            return error_bytes(rid, INTERNAL_ERROR, text), INTERNAL_ERROR
        return _enc.encode({"jsonrpc": "2.0", "id": rid, "result": result}), None

    async def _call(
        self,
        msg: dict[str, Any],
        session: Session | None,
        version: str | None,
        role: str,
        notify: Notify | None,
        keepalive: Notify | None = None,
    ) -> Any:
        method: str = msg["method"]
        params = params_of(msg)
        if method == "server/discover":
            return self._discover
        if method == "initialize":
            return self._initialize(params, session)
        if method == "ping":
            return self._empty_modern if version else self._empty_legacy
        if version is None and (session is None or session.protocol_version is None):
            raise RpcError(
                INVALID_REQUEST,
                "not initialized: send initialize first, or use the 2026-07-28 per-request "
                f"envelope (params._meta.{PROTOCOL_VERSION_META})",
            )
        if method == "tools/list":
            return self._tools_modern if version else self._tools_legacy
        if method == "tools/call":
            if self.features is not None and (
                "task" in params or (version and params.get("name") in TASK_TOOLS)
            ):
                return await self._task_call(msg, params, session, version, role, notify)
            return _complete(
                await self._tools_call(msg, params, role, notify, session, version), version
            )
        if method == "resources/list":
            return _fresh(await self._resources_list(params), version)
        if method == "resources/templates/list":
            return self._templates_modern if version else self._templates_legacy
        if method == "resources/read":
            return _fresh(await self._resources_read(params, version), version)
        if method == "prompts/list" and self.features is not None:
            return self._prompts_modern if version else self._prompts_legacy
        if self.features is not None:
            return await self.features.handle(
                method, params, session, version is not None, role, notify, msg["id"], keepalive
            )
        raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")

    def session_changes(
        self, session: Session, send: Notify, keepalive: Notify | None = None
    ) -> Coroutine[Any, Any, None] | None:
        """The loop that sends a handshake-era session's change notifications on ``send``
        (a stdio connection, or a session's GET stream) until cancelled or closed."""
        if self.features is None or self.features.streams_left() <= 0:
            return None
        return self.features.session_changes(session.interest, send, keepalive)

    def forget(self, session: Session) -> None:
        """A session that ended (deleted, expired, evicted): release what it held."""
        if self.features is not None:
            self.features.forget(session)

    def shutdown(self) -> None:
        """Ends open notification streams (daemon stop)."""
        if self.features is not None:
            self.features.shutdown()

    def _initialize(self, params: dict[str, Any], session: Session | None) -> Any:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, "params.protocolVersion must be a string")
        negotiated = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        if session is not None:
            session.protocol_version = negotiated
        return self._init_results[negotiated]

    async def _task_call(
        self,
        msg: dict[str, Any],
        params: dict[str, Any],
        session: Session | None,
        version: str | None,
        role: str,
        notify: Notify | None,
    ) -> Any:
        """A scan tool call that may become an MCP task (see Features.task_call)."""
        assert self.features is not None

        async def run() -> dict[str, Any]:
            return await self._tools_call(msg, params, role, notify, session, version)

        out = await self.features.task_call(params, session, version is not None, run)
        return out if "resultType" in out else _complete(out, version)

    async def _tools_call(
        self,
        msg: dict[str, Any],
        params: dict[str, Any],
        role: str,
        notify: Notify | None,
        session: Session | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "params.name must be a string", {"field": "name"})
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, dict):
            raise RpcError(
                INVALID_PARAMS, "params.arguments must be an object", {"field": "arguments"}
            )
        meta = meta_of(params)
        token = None if meta is None else meta.get("progressToken")
        progress = None
        if notify is not None and isinstance(token, (str, int)) and not isinstance(token, bool):
            progress = _ProgressSender(notify, token).send
        log_level = None
        if self.features is not None and notify is not None:
            try:
                log_level = request_log_level(params, session, version is not None)
            except FeatureError as exc:
                raise RpcError(exc.code, exc.message, {"field": "_meta"}) from None
        try:
            return await self.toolbox.call(
                name,
                arguments,
                ToolContext(
                    role=role,
                    progress=progress,
                    log=notify if log_level is not None else None,
                    log_level=log_level,
                ),
            )
        except UnknownToolError as exc:
            raise RpcError(INVALID_PARAMS, str(exc), {"field": "name"}) from None

    async def _resources_list(self, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise RpcError(INVALID_PARAMS, "params.cursor must be a string", {"field": "cursor"})
        try:
            items, next_cursor = await self.resources.list_page(cursor)
        except ResourceParamsError as exc:
            raise RpcError(INVALID_PARAMS, str(exc), {"field": exc.field}) from None
        result: dict[str, Any] = {"resources": items}
        if next_cursor is not None:
            result["nextCursor"] = next_cursor
        return result

    async def _resources_read(self, params: dict[str, Any], version: str | None) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(INVALID_PARAMS, "params.uri must be a string", {"field": "uri"})
        try:
            return {"contents": await self.resources.read(uri)}
        except ResourceParamsError as exc:
            raise RpcError(INVALID_PARAMS, str(exc), {"field": exc.field}) from None
        except ResourceNotFoundError as exc:
            code = INVALID_PARAMS if version else RESOURCE_NOT_FOUND
            raise RpcError(code, f"Resource not found: {exc}", {"uri": exc.uri}) from None


class _ProgressSender:
    """Sends ``notifications/progress`` whose value strictly increases, as the spec asks."""

    __slots__ = ("_last", "_notify", "_token")

    def __init__(self, notify: Notify, token: str | int) -> None:
        self._notify = notify
        self._token = token
        self._last = -1.0

    async def send(self, progress: float, total: float | None, message: str) -> None:
        value = float(progress)
        if value <= self._last:
            value = round(self._last + 0.01, 2)
        if total is not None and value > total:
            return
        self._last = value
        params: dict[str, Any] = {"progressToken": self._token, "progress": value}
        if total is not None:
            params["total"] = total
        params["message"] = message
        await self._notify(notification_bytes("notifications/progress", params))
