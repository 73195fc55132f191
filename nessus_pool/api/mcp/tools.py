"""The MCP tools: definitions (schemas generated once from :mod:`.schemas`), argument
decoding, authorization by token role, and the mapping of our errors to ``isError`` results.
The tool bodies call the service only (see :mod:`.handlers`)."""

from __future__ import annotations

import collections
import copy
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from nessus_pool.api.errors import error_body, http_status
from nessus_pool.api.mcp.schemas import DESCRIPTIONS
from nessus_pool.errors import NessusPoolError, NotFoundError

if TYPE_CHECKING:
    from nessus_pool.service import Service

_enc = msgspec.json.Encoder()
_AT = re.compile(r" - at `\$\.?([^`]*)`")
_ENUM_VALUE = re.compile(r"Invalid enum value .*", re.DOTALL)
_NAMED = re.compile(r"(unknown|required) field `([^`]+)`")

#: (progress, total, message) -> None; only present when the client asked for progress
Progress = Callable[[float, float | None, str], Awaitable[None]]


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
    #: sends notifications/message on this request's stream, at ``log_level`` and above
    log: Callable[[bytes], Awaitable[None]] | None = None
    log_level: str | None = None


Handler = Callable[["Service", Any, ToolContext], Awaitable[Any]]
#: (slot, version) of a call whose result may be kept: a later call with the same slot is
#: answered from the kept result while the service hands out a ``version`` equal to the
#: kept one (the same object, or an equal copy); None: compute it
Memo = Callable[["Service", Any], tuple[str, object] | None]
#: results kept per Toolbox (a finished task's status is a few KB)
MEMO_SIZE = 1024


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    title: str
    description: str
    args: type[msgspec.Struct]
    output: dict[str, Any]
    handler: Handler
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False
    #: execution.taskSupport (2025-11-25 tasks); None: not declared (forbidden)
    task_support: str | None = None
    #: a read-only tool whose successful result stays right while the service's version
    #: object for it is the same (see :data:`Memo`)
    memo: Memo | None = None


class Toolbox:
    """Tool definitions built once; :meth:`call` decodes, authorizes and runs one call."""

    def __init__(self, service: Service, specs: list[ToolSpec]) -> None:
        self.service = service
        self._specs = {s.name: s for s in specs}
        self._definitions = _definitions(specs)
        self._inputs = {d["name"]: d["inputSchema"] for d in self._definitions}
        #: kept results of memo tools: slot -> (version, CallToolResult), least recent first
        self._memo: collections.OrderedDict[str, tuple[object, dict[str, Any]]] = (
            collections.OrderedDict()
        )

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    def definitions(self) -> list[dict[str, Any]]:
        return self._definitions

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        """A ``CallToolResult`` dict. Raises UnknownToolError for a tool we do not have.

        Arguments that do not fit the input schema are an ``isError`` result naming the
        field and what it accepts (MCP 2025-11-25, SEP-1303), so the model can correct
        them; so is every NessusPoolError, except a lookup that finds nothing, which is an
        answer (``{"error": "task ... not found"}``, ``isError: false``) as the seed
        server gave it."""
        spec = self._specs.get(name)
        if spec is None:
            raise UnknownToolError(f"unknown tool {name!r}; available: {', '.join(self._specs)}")
        try:
            args = msgspec.convert(arguments, spec.args)
        except msgspec.ValidationError as exc:
            message, field = argument_error(name, str(exc), self._inputs[name])
            return error_result("invalid_arguments", message, field, status_code=400)
        except RecursionError:
            return error_result("invalid_arguments", f"{name}: arguments nested too deeply")
        if ctx.role != "admin" and not spec.read_only:
            return error_result(
                "forbidden",
                f"{name} changes state and needs an admin token; this token is read-only",
                status_code=403,
            )
        memo_of = spec.memo
        memo = memo_of(self.service, args) if memo_of is not None else None
        if memo is not None:
            kept = self._memo.get(memo[0])
            if kept is not None and kept[0] == memo[1]:
                # a copy: the dispatcher adds resultType to the top level of what it sends
                return dict(kept[1])
        try:
            out = await spec.handler(self.service, args, ctx)
        except NotFoundError as exc:
            found = not_found_result(str(exc), getattr(exc, "field", None))
            if spec.output.get("x-fastmcp-wrap-result"):  # a string tool: the seed's JSON text
                found["structuredContent"] = {"result": found["content"][0]["text"]}
            return found
        except NessusPoolError as exc:
            body = error_body(exc)["error"]
            return error_result(
                body["code"],
                body["message"],
                body.get("field"),
                status_code=http_status(exc),
                retry_after_s=body.get("retry_after_s"),
            )
        if isinstance(out, str):  # JSON-NL: the text, and the same wrapped for fastmcp
            return {
                "content": [{"type": "text", "text": out}],
                "structuredContent": {"result": out},
                "isError": False,
            }
        data = _enc.encode(out)
        result = {
            "content": [{"type": "text", "text": data.decode()}],
            "structuredContent": msgspec.Raw(data),
            "isError": False,
        }
        if memo is not None and memo_of is not None:
            # kept only if nothing changed while the handler ran (it awaited the service)
            after = memo_of(self.service, args)
            if after is not None and after[1] == memo[1]:
                self._memo[memo[0]] = (memo[1], result)
                self._memo.move_to_end(memo[0])
                if len(self._memo) > MEMO_SIZE:
                    self._memo.popitem(last=False)
                return dict(result)
        return result


def _result(body: dict[str, Any], is_error: bool) -> dict[str, Any]:
    data = _enc.encode(body)
    return {
        "content": [{"type": "text", "text": data.decode()}],
        "structuredContent": msgspec.Raw(data),
        "isError": is_error,
    }


def error_result(
    code: str,
    message: str,
    field: str | None = None,
    *,
    status_code: int = 400,
    retry_after_s: int | None = None,
) -> dict[str, Any]:
    """A tool failure the model can read and act on, in the seed's shape (``error`` is the
    message) with our ``code``, ``field``, the HTTP-like ``status_code`` and, for a failure
    that passes by itself (the database reconnecting), ``retry_after_s`` beside it."""
    body: dict[str, Any] = {"error": message, "code": code, "status_code": status_code}
    if field:
        body["field"] = field
    if retry_after_s is not None:
        body["retry_after_s"] = retry_after_s
    return _result(body, True)


def not_found_result(message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message, "code": "not_found", "status_code": 404}
    if field:
        body["field"] = field
    return _result(body, False)


def argument_error(tool: str, msg: str, schema: dict[str, Any]) -> tuple[str, str | None]:
    """A message naming the field and what it accepts, from msgspec's message and the
    tool's own input schema (never the value given)."""
    at = _AT.search(msg)
    base = (at.group(1) if at else "").replace("[", ".").replace("]", "")
    named = _NAMED.search(msg)
    path = f"{base}.{named.group(2)}".lstrip(".") if named else base
    if not path:
        return f"invalid arguments for {tool}: {msg}", None
    leaf = path.rsplit(".", 1)[-1]
    if named and named.group(1) == "unknown":
        where = "filters." if path.startswith("filters.") else ""
        known = _props(schema, path.rsplit(".", 1)[0] if "." in path else "")
        hint = ""
        if not where and leaf in _props(schema, "filters"):
            hint = f' It is a filter: pass it inside filters, e.g. filters={{"{leaf}": ...}}.'
        return (
            f"{tool}: unknown argument {where}{leaf[:60]!r}.{hint} Accepted: {', '.join(known)}",
            path,
        )
    if named:
        return f"{tool}: {path} is required", path
    accepted = _accepted(schema, path)
    # msgspec quotes the value of a bad enum: never echo it (a password in the wrong field)
    reason = _ENUM_VALUE.sub("Invalid value", msg.split(" - at ")[0])[:200]
    return f"{tool}: invalid {path}: {reason}." + (
        f" Accepted: {accepted}" if accepted else ""
    ), path


def _node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: Any = schema
    for part in [p for p in path.split(".") if p]:
        node = _deref(schema, node)
        if part.isdigit():
            node = node.get("items") if isinstance(node, dict) else None
        else:
            props = node.get("properties") if isinstance(node, dict) else None
            node = props.get(part) if isinstance(props, dict) else None
        if node is None:
            return None
    found = _deref(schema, node)
    return found if isinstance(found, dict) else None


def _deref(schema: dict[str, Any], node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    for alt in node.get("anyOf", ()):
        if isinstance(alt, dict) and "$ref" in alt:
            node = alt
            break
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), node)
    return node


def _props(schema: dict[str, Any], path: str) -> list[str]:
    node = _node(schema, path)
    return list((node or {}).get("properties", {}))


def _accepted(schema: dict[str, Any], path: str) -> str:
    node = _node(schema, path)
    if node is None:
        return ""
    options = [node, *node.get("anyOf", ())]
    enums = [v for o in options if isinstance(o, dict) for v in o.get("enum", ())]
    if enums:
        return ", ".join(str(v) for v in enums)
    types = [o.get("type") for o in options if isinstance(o, dict) and o.get("type")]
    limits = [f"{k} {node[k]}" for k in ("minimum", "maximum", "pattern", "maxLength") if k in node]
    desc = node.get("description", "")
    return "; ".join(x for x in (" or ".join(map(str, types)), ", ".join(limits), desc) if x)


def _definitions(specs: list[ToolSpec]) -> list[dict[str, Any]]:
    types: list[Any] = [s.args for s in specs]
    _, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    out = []
    for s in specs:
        out.append(
            {
                "name": s.name,
                "title": s.title,
                "description": s.description,
                "inputSchema": _root_schema(s.args.__name__, components),
                "outputSchema": s.output,
                "annotations": _hints(s),
            }
        )
        if s.task_support is not None:
            out[-1]["execution"] = {"taskSupport": s.task_support}
    return out


def _hints(s: ToolSpec) -> dict[str, bool]:
    """The tool's annotations in as few bytes as say the same (tools/list is read into every
    model's context): readOnlyHint always; destructiveHint and idempotentHint only on tools
    that write (MCP: meaningful only when readOnlyHint is false), idempotentHint and
    openWorldHint only when they differ from MCP's defaults (false, true)."""
    hints = {"readOnlyHint": s.read_only}
    if not s.read_only:
        hints["destructiveHint"] = s.destructive
        if s.idempotent:
            hints["idempotentHint"] = True
    if not s.open_world:
        hints["openWorldHint"] = False
    return hints


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
    return _compact(root)


def _compact(node: Any) -> Any:
    """The same schema in fewer bytes (tools/list is read into every model's context):
    ``anyOf`` of plain types becomes a ``type`` list, ``default: null``, ``required: []``
    and ``title`` go."""
    if isinstance(node, list):
        return [_compact(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _compact(v) for k, v in node.items() if k != "title"}
    if out.get("default", 0) is None:
        del out["default"]
    if out.get("required") == []:
        del out["required"]
    alts = out.get("anyOf")
    if isinstance(alts, list) and all(isinstance(a, dict) and "type" in a for a in alts):
        rich = [a for a in alts if set(a) != {"type"}]
        if len(rich) <= 1 and not any(isinstance(a["type"], list) for a in alts):
            del out["anyOf"]
            merged = rich[0] if rich else {}
            out = {**out, **merged, "type": [a["type"] for a in alts]}
    return out
