"""``get_scan_results``: a finished scan's findings as the seed server's JSON-NL (a ``schema``
line, a ``scan_metadata`` line, one ``vulnerability`` line per finding, a ``pagination`` line),
filtered with the seed's filter names and ours, sorted most severe first, paged.

Context economy: when the caller gives no severity filter, informational (severity 0) items
are left out, and the schema line says how many and how to include them. An explicit filter
(``min_severity``, ``severity`` or ``severities``, e.g. ``{"min_severity": "info"}``) is
obeyed as given, so a seed client that asks for a severity gets exactly the seed's answer.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import msgspec

from nessus_pool.api.mcp import compat
from nessus_pool.api.mcp import schemas as s
from nessus_pool.errors import ValidationError
from nessus_pool.results.query import MAX_PAGE_SIZE, parse_query, query_findings, severity_value
from nessus_pool.results.types import Finding
from nessus_pool.service import Service

#: ``page=0`` returns every matching finding up to this many; the schema line says when it cut
ALL_RESULTS_CAP = MAX_PAGE_SIZE
#: an explicit page_size is clamped as the seed clamped it; without one the page is smaller
#: than the seed's 40, so that a default page of a many-host scan stays under 6 KB
MIN_PAGE_SIZE, MAX_MCP_PAGE_SIZE, DEFAULT_PAGE_SIZE = 10, 100, 3
INFO_HINT = "informational left out; filters.min_severity=info includes them"
#: the named profiles clip these texts (real descriptions run to kilobytes); "full" and
#: custom_fields return them whole
CLIPPED_TEXTS = ("synopsis", "description", "solution", "plugin_output", "see_also")
CLIP_CHARS = 120
CLIP_HINT = (
    f"texts over {CLIP_CHARS} chars cut ('…'): custom_fields or "
    'schema_profile="full" give them whole'
)

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}
_enc = msgspec.json.Encoder()

Pred = Callable[[Finding], bool]


def _comparison(value: str | float, field: str) -> Callable[[float], bool]:
    """``">7.0"``, ``">=5"``, ``"<10"``, ``"=4"`` or a bare number (meaning at least)."""
    text = str(value).strip()
    for sym, op in _OPS.items():
        if text.startswith(sym):
            text, cmp = text[len(sym) :].strip(), op
            break
    else:
        cmp = operator.ge
    try:
        bound = float(text)
    except ValueError:
        raise ValidationError(
            f'{field} must be a number or a comparison such as ">7.0", ">=5", "<4"; '
            f"got {str(value)[:40]!r}",
            field=f"filters.{field}",
        ) from None
    return lambda x: cmp(x, bound)


def _split_filters(f: s.Filters | None) -> tuple[dict[str, Any], list[Pred], bool]:
    """(our FindingsQuery keys, the seed's extra predicates, whether a severity was given)."""
    if f is None:
        return {}, [], False
    raw = {k: v for k, v in msgspec.structs.asdict(f).items() if v is not None}
    preds: list[Pred] = []
    severity_given = any(k in raw for k in ("min_severity", "severity", "severities"))
    if "severity" in raw:
        sev = raw.pop("severity")
        if isinstance(sev, str) and sev.strip()[:1] in "<>=" and sev.strip():
            cmp_sev = _comparison(sev, "severity")
            preds.append(lambda x: cmp_sev(x.severity))
        else:
            raw["severities"] = [*raw.get("severities", []), severity_value(sev, "severity")]
    if "cvss_score" in raw:
        cmp_cvss = _comparison(raw.pop("cvss_score"), "cvss_score")

        def by_cvss(x: Finding) -> bool:
            score = x.cvss3_base_score if x.cvss3_base_score is not None else x.cvss_base_score
            return score is not None and cmp_cvss(score)

        preds.append(by_cvss)
    if "plugin_id" in raw:
        pid = str(raw["plugin_id"]).strip()
        if not pid.isascii() or not pid.isdigit() or len(pid) > 9:
            raise ValidationError(
                "plugin_id must be a Nessus plugin number", field="filters.plugin_id"
            )
        raw["plugin_id"] = int(pid)
    if "plugin_name" in raw:
        name = raw.pop("plugin_name").lower()
        preds.append(lambda x: name in x.plugin_name.lower())
    if "cve" in raw:  # the seed matched a substring of any CVE
        cve = raw.pop("cve").strip().upper()
        preds.append(lambda x: any(cve in c.upper() for c in x.cves))
    return raw, preds, severity_given


def _given(f: s.Filters | None) -> dict[str, Any]:
    """The filters as the caller gave them (the seed echoes them on the schema line)."""
    if f is None:
        return {}
    given = {k: v for k, v in msgspec.structs.asdict(f).items() if v is not None}
    if given.get("sort") == "severity":
        del given["sort"]
    return given


def _check_fields(a: s.ResultsArgs) -> tuple[str, tuple[str, ...] | None]:
    if a.custom_fields is None and a.schema_profile == "custom":
        raise ValidationError(
            'schema_profile="custom" needs custom_fields, the list of fields to return',
            field="custom_fields",
        )
    if a.custom_fields is not None:
        # the seed allowed custom_fields with the default profile; the result's schema line
        # says "custom", so a caller echoing it back gets the same page
        if a.schema_profile not in ("brief", "custom"):
            raise ValidationError(
                f"Cannot specify both schema_profile={a.schema_profile!r} and custom_fields: "
                'use one (custom_fields alone, or with schema_profile="custom")',
                field="custom_fields",
            )
        known = {*Finding.__struct_fields__, "cve", "cvss_score", "severity_level"}
        unknown = [f for f in a.custom_fields if f not in known]
        if unknown or not a.custom_fields:
            raise ValidationError(
                f"unknown field(s) {', '.join(x[:40] for x in unknown[:5]) or '(none given)'}; "
                f"known: {', '.join(sorted(known))}",
                field="custom_fields",
            )
        return "custom", tuple(dict.fromkeys(a.custom_fields))
    return a.schema_profile, compat.profile_fields(a.schema_profile)


def _page_size(requested: int | None) -> tuple[int, bool]:
    """(the page size used, whether an explicit request was clamped)."""
    if requested is None:
        return DEFAULT_PAGE_SIZE, False
    used = max(MIN_PAGE_SIZE, min(MAX_MCP_PAGE_SIZE, requested))
    return used, used != requested


def _clip(rows: list[dict[str, Any]], limit: int) -> int:
    """Clip long texts in place to ``limit`` characters plus '…'; returns how many."""
    n = 0
    for row in rows:
        for name in CLIPPED_TEXTS:
            text = row.get(name)
            if isinstance(text, str) and len(text) > limit:
                row[name] = text[:limit].rstrip() + "…"
                n += 1
    return n


async def hosts_text(svc: Service, a: s.ResultsArgs) -> str:
    """``view="hosts"``: a page of per-host results as JSON-NL (a ``schema`` line, one
    ``host`` line per host in export order, a ``pagination`` line); notes are clipped as
    texts are, except with ``schema_profile="full"``."""
    given = _given(a.filters)
    wrong = sorted(k for k in given if k != "min_severity")
    if wrong:
        raise ValidationError(
            f"filters.{wrong[0]} applies to view=findings; view=hosts takes "
            "filters.min_severity and auth_status",
            field=f"filters.{wrong[0]}",
        )
    if a.custom_fields is not None:
        raise ValidationError("custom_fields applies to view=findings", field="custom_fields")
    page_size, clamped = _page_size(a.page_size)
    page = await svc.hosts(
        a.task_id,
        page=max(1, a.page),
        page_size=page_size,
        auth_status=a.auth_status,
        min_severity=None if a.filters is None else a.filters.min_severity,
    )
    clip = None if a.schema_profile == "full" else CLIP_CHARS
    rows: list[dict[str, Any]] = []
    clipped = 0
    for host in page["hosts"]:
        notes = host.get("notes") or []
        if clip is not None:
            cut = [n if len(n) <= clip else n[:clip].rstrip() + "…" for n in notes]
            clipped += sum(1 for x, y in zip(notes, cut, strict=True) if x != y)
            host["notes"] = cut
        rows.append({"type": "host", **host})
    schema: dict[str, Any] = {
        "type": "schema",
        "view": "hosts",
        "filters_applied": {**given, **({"auth_status": a.auth_status} if a.auth_status else {})},
        "total_hosts": page["total"],
        "total_pages": page["pages"],
    }
    notes = []
    if clamped:
        schema["page_size_requested"] = a.page_size
        notes.append(f"page_size {a.page_size} clamped to {page_size} (10-100)")
    if clipped:
        schema["texts_clipped"] = clipped
        notes.append(f'notes over {CLIP_CHARS} chars cut: schema_profile="full" gives them whole')
    if notes:
        schema["note"] = "; ".join(notes)
    has_next = page["page"] < page["pages"]
    pagination = {
        "type": "pagination",
        "page": page["page"],
        "page_size": page_size,
        "total_pages": page["pages"],
        "has_next": has_next,
        "next_page": page["page"] + 1 if has_next else None,
    }
    return "\n".join(_enc.encode(line).decode() for line in [schema, *rows, pagination])


async def results_text(svc: Service, a: s.ResultsArgs) -> str:
    """The JSON-NL page (raises our typed errors for bad filters or an unfinished scan)."""
    if a.view == "hosts":
        return await hosts_text(svc, a)
    if a.auth_status is not None:
        raise ValidationError("auth_status applies to view=hosts", field="auth_status")
    profile, fields = _check_fields(a)
    ours, preds, severity_given = _split_filters(a.filters)
    if not severity_given:
        ours["min_severity"] = 1
    everything = a.page == 0
    page_size, clamped = _page_size(a.page_size)
    if everything:
        page_size = ALL_RESULTS_CAP
    query = parse_query({**ours, "page": max(1, a.page), "page_size": page_size, "profile": "full"})
    view = await svc.get_task(a.task_id, with_results=False)
    findings = await svc.findings(a.task_id)
    if preds:
        findings = [f for f in findings if all(p(f) for p in preds)]
    page = query_findings(findings, query)
    total_pages = 1 if everything else page.pages
    schema: dict[str, Any] = {
        "type": "schema",
        "profile": profile,
        "fields": list(fields) if fields is not None else "all",
        "filters_applied": _given(a.filters),
        "total_vulnerabilities": page.total,
        "total_pages": total_pages,
    }
    notes = []
    if not severity_given:
        # the informational items the same filters would have matched
        info = parse_query({**ours, "min_severity": None, "severities": [0], "page_size": 1})
        schema["informational_excluded"] = query_findings(findings, info).total
        notes.append(INFO_HINT)
    if everything:
        schema["max_results"] = ALL_RESULTS_CAP
        schema["truncated"] = page.total > ALL_RESULTS_CAP
        if schema["truncated"]:
            notes.append(
                f"page=0 returns at most {ALL_RESULTS_CAP} findings; {page.total} matched: "
                "narrow the filters or page with page>=1"
            )
    if clamped and not everything:
        schema["page_size_requested"] = a.page_size
        notes.append(f"page_size {a.page_size} clamped to {page_size} (10-100)")
    clip = CLIP_CHARS if profile in ("minimal", "summary", "brief") else None
    rows = [compat.vulnerability(item, fields) for item in page.items]
    clipped = _clip(rows, clip) if clip else 0
    if clipped:
        schema["texts_clipped"] = clipped
        notes.append(CLIP_HINT)
    if notes:
        schema["note"] = "; ".join(notes)
    metadata = {
        "type": "scan_metadata",
        "scan_name": view.name,
        "task_id": a.task_id,
        "authentication_status": view.authentication_status,
    }
    lines: list[Any] = [
        schema,
        metadata,
        *rows,
    ]
    if not everything:
        has_next = page.page < total_pages
        lines.append(
            {
                "type": "pagination",
                "page": page.page,
                "page_size": page_size,
                "total_pages": total_pages,
                "has_next": has_next,
                "next_page": page.page + 1 if has_next else None,
            }
        )
    return "\n".join(_enc.encode(line).decode() for line in lines)
