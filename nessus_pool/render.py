"""Terminal presentation shared by the operator CLI (``scan results``) and the offline
``results`` command: one table style, one findings table, one JSON style, plurals.

Pure functions over plain data (the API's JSON or ``msgspec.to_builtins`` of a page); they
import nothing of ours but the severity names, so any CLI module may call them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nessus_pool.results.types import SEVERITY_NAMES, plural

__all__ = [
    "cell", "diff_text", "dumps_json", "findings_footer", "findings_table", "findings_text",
    "hosts_differ_lines", "plural", "render_table", "safe", "severity_name",
]  # fmt: skip

#: the findings columns in the order shown, with their headers; other fields follow in the
#: page's own order under their upper-cased name
FINDING_COLUMNS: dict[str, str] = {
    "old_severity": "WAS",
    "new_severity": "NOW",
    "severity": "SEVERITY",
    "host": "HOST",
    "port": "PORT",
    "protocol": "PROTO",
    "plugin_id": "PLUGIN",
    "cvss3_base_score": "CVSS3",
    "cvss_base_score": "CVSS2",
    "exploit_available": "EXPLOIT",
    "plugin_family": "FAMILY",
    "plugin_name": "NAME",
}
_SEVERITY_FIELDS = frozenset({"severity", "old_severity", "new_severity"})
#: longest text shown in one findings cell (synopsis, plugin output, ...)
MAX_CELL_CHARS = 60


def dumps_json(data: Any) -> str:
    """The one ``--json`` style of every command: indented, keys in the API's order."""
    return json.dumps(data, indent=2, ensure_ascii=False)


#: control characters (C0, DEL, C1) and bidi overrides, which an export or a scanner may carry
#: (XML allows C1 and the overrides) and which would drive or spoof the terminal
_UNSAFE = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in (*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}


def safe(text: str) -> str:
    """Text from an export or a scanner made harmless for a terminal: controls shown escaped."""
    return text.translate(_UNSAFE)


def cell(value: object) -> str:
    """One table cell: ``None`` as ``-``, booleans as yes/no, lists comma-joined, one line,
    terminal controls escaped."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    return safe(" ".join(str(value).split()))


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart (see :func:`cell` for the values)."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *cells]:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append(line.rstrip())
    return "\n".join(lines)


def severity_name(value: object) -> object:
    """4 -> ``critical`` ... 0 -> ``info``; anything else unchanged."""
    if isinstance(value, int) and not isinstance(value, bool):
        return SEVERITY_NAMES.get(value, value)
    return value


def _clip(text: str, n: int = MAX_CELL_CHARS) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def findings_table(items: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """The findings of one page as a table: the known columns first (severity by name,
    ``PLUGIN``, ``EXPLOIT`` yes/no), then the page's other fields, the plugin name last;
    long text clipped."""
    shown = [f for f in FINDING_COLUMNS if f in fields and f != "plugin_name"]
    shown += [f for f in fields if f not in FINDING_COLUMNS]
    shown += ["plugin_name"] if "plugin_name" in fields else []  # free text last
    headers = [FINDING_COLUMNS.get(f, f.upper()) for f in shown]
    rows = [
        [_clip(cell(severity_name(i.get(f)) if f in _SEVERITY_FIELDS else i.get(f))) for f in shown]
        for i in items
    ]
    return render_table(headers, rows)


def findings_footer(page: Mapping[str, Any], next_hint: str = "--page") -> str:
    """``page 1/3, 120 findings (next: --page 2)``; a page past the last one says which
    page is the last."""
    more = f" (next: {next_hint} {page['page'] + 1})" if page.get("has_more") else ""
    if page["total"] and page["page"] > page["pages"]:
        more = f" (past the last page: {next_hint} {page['pages']})"
    return f"page {page['page']}/{page['pages']}, {plural(page['total'], 'finding')}{more}"


def findings_text(page: Mapping[str, Any]) -> str:
    """A findings page (``items``, ``fields``, ``page``, ``pages``, ``total``, ``has_more``)
    as the CLI shows it: the table, then the footer line."""
    items: list[Mapping[str, Any]] = page["items"]
    footer = findings_footer(page)
    if not items:
        return footer
    return findings_table(items, page["fields"]) + "\n" + footer


def hosts_differ_lines(diff: Mapping[str, Any], old_label: str, new_label: str) -> list[str]:
    """One line per way the two scans' host sets differ (none when they scanned the same)."""
    lines = []
    gone: list[str] = diff.get("hosts_not_rescanned", [])
    added: list[str] = diff.get("hosts_new", [])
    if gone:
        lines.append(
            f"hosts differ: {new_label} did not scan {cell(gone)} "
            f"(their findings in {old_label} are not rescanned, not fixed)"
        )
    if added:
        lines.append(f"hosts differ: {old_label} did not scan {cell(added)}")
    return lines


def diff_text(diff: Mapping[str, Any], old_label: str = "old", new_label: str = "new") -> str:
    """A scan diff (``ScanDiff`` as plain data) as text: the counts, how the scanned hosts
    differ, then the new, fixed, not rescanned and severity-changed findings, worst first."""
    lines = [
        f"{old_label} -> {new_label}: "
        f"{diff['new_total']} new, {diff['fixed_total']} fixed, "
        f"{diff.get('not_rescanned_total', 0)} not rescanned, "
        f"{diff['changed_severity_total']} changed severity, {diff['unchanged_total']} unchanged"
    ]
    lines += hosts_differ_lines(diff, old_label, new_label)
    for title, key in (
        ("new", "new"),
        ("fixed", "fixed"),
        ("not rescanned (host not in the newer scan: unknown, not fixed)", "not_rescanned"),
    ):
        items: list[Mapping[str, Any]] = diff[key]
        if items:
            fields = list(dict.fromkeys(f for i in items for f in i))
            lines += ["", f"{title}:", findings_table(items, fields)]
    changed: list[Mapping[str, Any]] = diff["changed_severity"]
    if changed:
        rows = [
            [
                severity_name(c["old_severity"]),
                severity_name(c["new_severity"]),
                c["host"],
                c["port"],
                c["protocol"],
                c["plugin_id"],
                _clip(cell(c.get("plugin_name"))),
            ]
            for c in changed
        ]
        headers = ["WAS", "NOW", "HOST", "PORT", "PROTO", "PLUGIN", "NAME"]
        lines += ["", "changed severity:", render_table(headers, rows)]
    if diff.get("truncated"):
        lines += ["", "(lists cut to the worst findings; the counts are complete)"]
    return "\n".join(lines)
