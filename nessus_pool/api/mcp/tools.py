"""The MCP tools: definitions (schemas generated once from :mod:`.schemas`), argument
decoding, authorization by token role, and the mapping of our errors to ``isError`` results.
The tool bodies call the service only (see :mod:`.handlers`)."""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from nessus_pool.api.errors import error_body
from nessus_pool.api.mcp.schemas import DESCRIPTIONS
from nessus_pool.errors import NessusPoolError

if TYPE_CHECKING:
    from nessus_pool.service import Service

_enc = msgspec.json.Encoder()
_FIELD = re.compile(r"at `\$\.?([^`]*)`|unknown field `([^`]+)`|required field `([^`]+)`")

#: (progress, total, message) -> None; only present when the client asked for progress
Progress = Callable[[float, float | None, str], Awaitable[None]]


class ToolArgumentsError(Exception):
    """Arguments that do not match the tool's input schema (a JSON-RPC -32602)."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


class UnknownToolError(Exception):
    """No tool by that name (a JSON-RPC -32602)."""


class ResourceParamsError(Exception):
    """A resource request whose uri or cursor is malformed (a JSON-RPC -32602)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class ResourceNotFoundError(Exception):
    """A well-formed resource URI that names nothing we have (resource not found)."""

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(message)
        self.uri = uri


class ResourceCatalog(Protocol):
    """What the dispatcher needs to serve ``resources/*``; the bodies call the service."""

    def templates(self) -> list[dict[str, Any]]:
        """The ``ResourceTemplate`` objects (static: encoded once)."""
        ...

    async def list_page(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One bounded page of ``Resource`` objects and the cursor of the next page.
        Raises ResourceParamsError for a cursor we did not hand out."""
        ...

    async def read(self, uri: str) -> list[dict[str, Any]]:
        """The ``contents`` of one resource. Raises ResourceParamsError for a URI that fits
        no template, ResourceNotFoundError for one that names nothing."""
        ...


@dataclass(frozen=True, slots=True)
class ToolContext:
    role: str = "admin"
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A result whose text content is not simply the JSON of ``structured`` (JSON-NL)."""

    structured: Any
    text: str


Handler = Callable[["Service", Any, ToolContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    title: str
    description: str
    args: type[msgspec.Struct]
    output: type[msgspec.Struct]
    handler: Handler
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


class Toolbox:
    """Tool definitions built once; :meth:`call` decodes, authorizes and runs one call."""

    def __init__(self, service: Service, specs: list[ToolSpec]) -> None:
        self.service = service
        self._specs = {s.name: s for s in specs}
        self._definitions = _definitions(specs)

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    def definitions(self) -> list[dict[str, Any]]:
        return self._definitions

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        """A ``CallToolResult`` dict. Raises UnknownToolError or ToolArgumentsError for
        malformed calls; every NessusPoolError becomes an ``isError`` result."""
        spec = self._specs.get(name)
        if spec is None:
            raise UnknownToolError(f"unknown tool {name!r}; available: {', '.join(self._specs)}")
        try:
            args = msgspec.convert(arguments, spec.args)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            m = _FIELD.search(msg)
            field = next((g for g in m.groups() if g), None) if m else None
            raise ToolArgumentsError(f"invalid arguments for {name}: {msg}", field) from None
        if ctx.role != "admin" and not spec.read_only:
            return error_result(
                "forbidden",
                f"{name} changes state and needs an admin token; this token is read-only",
            )
        try:
            out = await spec.handler(self.service, args, ctx)
        except NessusPoolError as exc:
            body = error_body(exc)["error"]
            return error_result(body["code"], body["message"], body.get("field"))
        if isinstance(out, ToolOutput):
            data = _enc.encode(out.structured)
            text = out.text
        else:
            data = _enc.encode(out)
            text = data.decode()
        return {
            "content": [{"type": "text", "text": text}],
            "structuredContent": msgspec.Raw(data),
            "isError": False,
        }


def error_result(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """A tool failure the model can read and act on (never carries request values)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {
        "content": [{"type": "text", "text": _enc.encode({"error": err}).decode()}],
        "isError": True,
    }


def _definitions(specs: list[ToolSpec]) -> list[dict[str, Any]]:
    types: list[Any] = []
    for s in specs:
        types += [s.args, s.output]
    _, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    out = []
    for s in specs:
        out.append(
            {
                "name": s.name,
                "title": s.title,
                "description": s.description,
                "inputSchema": _root_schema(s.args.__name__, components),
                "outputSchema": _root_schema(s.output.__name__, components),
                "annotations": {
                    "title": s.title,
                    "readOnlyHint": s.read_only,
                    "destructiveHint": s.destructive,
                    "idempotentHint": s.idempotent,
                    "openWorldHint": s.open_world,
                },
            }
        )
    return out


def _root_schema(name: str, components: dict[str, Any]) -> Any:
    """The component inlined at the root (MCP wants ``type: object`` there), with the
    components it references under ``$defs``."""
    root = copy.deepcopy(components[name])
    root.pop("title", None)
    needed: dict[str, Any] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                dep = ref.removeprefix("#/$defs/")
                if dep not in needed:
                    needed[dep] = copy.deepcopy(components[dep])
                    stack.append(needed[dep])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    for schema in (root, *needed.values()):
        for prop, sub in schema.get("properties", {}).items():
            if "description" not in sub and prop in DESCRIPTIONS:
                sub["description"] = DESCRIPTIONS[prop]
    if needed:
        root["$defs"] = needed
    return root
