"""CSV and HTML exports rendered from a scan's ``.nessus`` document, so that every format
carries the same hosts and findings (the simulator's own trusted XML, parsed with the stdlib)."""

from __future__ import annotations

import csv
import html
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator

#: Nessus's default CSV columns, in its order
CSV_COLUMNS = (
    "Plugin ID",
    "CVE",
    "CVSS v2.0 Base Score",
    "Risk",
    "Host",
    "Protocol",
    "Port",
    "Name",
    "Synopsis",
    "Description",
    "Solution",
    "See Also",
    "Plugin Output",
)
_RISK = ("None", "Low", "Medium", "High", "Critical")


def _items(nessus: bytes) -> Iterator[tuple[str, ET.Element]]:
    root = ET.fromstring(nessus)
    for host in root.iter("ReportHost"):
        for item in host.iter("ReportItem"):
            yield host.get("name", ""), item


def _text(item: ET.Element, tag: str) -> str:
    return item.findtext(tag) or ""


def render_csv(nessus: bytes) -> bytes:
    """One row per finding and CVE (a finding without CVE: one row, CVE empty), as Nessus
    writes it: UTF-8, every field quoted, CRLF line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for host, item in _items(nessus):
        cves = [c.text or "" for c in item.findall("cve")] or [""]
        for cve in cves:
            writer.writerow(
                (
                    item.get("pluginID", ""),
                    cve,
                    _text(item, "cvss_base_score"),
                    _RISK[int(item.get("severity", "0"))],
                    host,
                    item.get("protocol", ""),
                    item.get("port", ""),
                    item.get("pluginName", ""),
                    _text(item, "synopsis"),
                    _text(item, "description"),
                    _text(item, "solution"),
                    _text(item, "see_also"),
                    _text(item, "plugin_output"),
                )
            )
    return buf.getvalue().encode()


def render_html(nessus: bytes, scan_name: str) -> bytes:
    """A self-contained report: per host, a severity summary and a table of findings,
    most severe first. Every value is HTML-escaped (plugin output is scanner-controlled)."""
    hosts: dict[str, list[ET.Element]] = {}
    for host, item in _items(nessus):
        hosts.setdefault(host, []).append(item)
    e = html.escape
    out = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
        f"<title>{e(scan_name)}</title></head><body>\n<h1>{e(scan_name)}</h1>\n",
    ]
    for host, items in hosts.items():
        counts = [0] * 5
        for item in items:
            counts[int(item.get("severity", "0"))] += 1
        summary = ", ".join(f"{_RISK[i]}: {counts[i]}" for i in range(4, -1, -1))
        out.append(f'<h2 class="host">{e(host)}</h2>\n<p class="summary">{summary}</p>\n')
        out.append("<table><tr><th>Severity</th><th>Plugin ID</th><th>Name</th>")
        out.append("<th>Port</th></tr>\n")
        for item in sorted(items, key=lambda i: -int(i.get("severity", "0"))):
            out.append(
                f"<tr><td>{_RISK[int(item.get('severity', '0'))]}</td>"
                f"<td>{e(item.get('pluginID', ''))}</td><td>{e(item.get('pluginName', ''))}</td>"
                f"<td>{e(item.get('port', ''))}/{e(item.get('protocol', ''))}</td></tr>\n"
            )
        out.append("</table>\n")
    out.append("</body></html>\n")
    return "".join(out).encode()
