"""Reading msgspec's validation errors: the field path they name and, for a bad enum or
literal value, the values the type there accepts. Pure (no imports of ours): config, the
results query and the API all map msgspec errors through here."""

from __future__ import annotations

import re
from typing import Any

import msgspec

AT_PATH = re.compile(r" - at `\$([^`]*)`$")
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]*)`")
#: ``.name`` or ``[0]`` / ``[...]`` (a list item, a dict value)
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[[^\]]*\]")
ENUM_PREFIX = "Invalid enum value "


def msgspec_field(message: str) -> str | None:
    """The dotted field a msgspec error names: ``... - at `$.a.b``` -> ``a.b``; a missing
    or unknown field is named itself (``a.x`` for ``unknown field `x` - at `$.a```)."""
    at = AT_PATH.search(message)
    path = at.group(1).lstrip(".") if at else ""
    named = _NAMED_FIELD.search(message[: at.start()] if at else message)
    if named:
        return f"{path}.{named.group(1)}" if path else named.group(1)
    return path or None


def accepted_values(typ: Any, message: str) -> list[str]:
    """For ``Invalid enum value 'x' - at `$.a[0].b``` raised decoding ``typ``: the enum or
    literal values accepted at ``$.a[0].b``; else []."""
    if not message.startswith(ENUM_PREFIX):
        return []
    at = AT_PATH.search(message)
    info: msgspec.inspect.Type | None = msgspec.inspect.type_info(typ)
    for m in _PATH_STEP.finditer(at.group(1) if at else ""):
        info = _step(info, m.group(1))
        if info is None:
            return []
    return _values(info) if info is not None else []


def _step(info: msgspec.inspect.Type | None, name: str | None) -> msgspec.inspect.Type | None:
    if isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            found = _step(member, name)
            if found is not None:
                return found
        return None
    if name is None:  # [i] of a list, [...] of a dict
        if isinstance(
            info,
            msgspec.inspect.ListType | msgspec.inspect.SetType | msgspec.inspect.VarTupleType,
        ):
            return info.item_type
        if isinstance(info, msgspec.inspect.DictType):
            return info.value_type
        return None
    if isinstance(info, msgspec.inspect.StructType):
        for f in info.fields:
            if f.encode_name == name:
                return f.type
    return None


def _values(info: msgspec.inspect.Type) -> list[str]:
    if isinstance(info, msgspec.inspect.EnumType):
        return [str(m.value) for m in info.cls]
    if isinstance(info, msgspec.inspect.LiteralType):
        return [str(v) for v in info.values]
    if isinstance(info, msgspec.inspect.UnionType):
        return [v for member in info.types for v in _values(member)]
    return []
