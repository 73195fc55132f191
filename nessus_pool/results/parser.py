"""Streaming parser for ``.nessus`` (NessusClientData_v2) exports.

One pass with ``lxml.etree.iterparse`` over ``end`` events of ``ReportItem``,
``HostProperties``, ``ReportHost`` and ``Policy``; every handled element is cleared and its
earlier siblings deleted, so memory stays flat in the file size (about 20 MiB at any size).
The summary alone (no ``on_findings``, no ``on_hosts``) is read on ``start`` events instead
(:func:`_summarise_fast`), with the same result, or hands the file back to the exact pass.
The function is synchronous: callers run it in a worker thread.

Safety: DTDs are never loaded, entities never resolved and the network never used. Any
``<!DOCTYPE`` or ``<!ENTITY`` in the prolog is refused with :class:`UnsafeXmlError` before
parsing starts (and again if lxml reports a DTD), so billion-laughs and XXE files fail at
once. Files over ``max_bytes`` are refused with :class:`ResultsError`, and XML whose root
element is not ``NessusClientData_v2`` with :class:`NotNessusExportError`.

Severity is the raw ``severity`` attribute (see :mod:`nessus_pool.results.types`).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

from lxml import etree  # type: ignore[import-untyped]  # no stubs for lxml 6

from nessus_pool.errors import NotNessusExportError, ResultsError, UnsafeXmlError
from nessus_pool.models import ScanType
from nessus_pool.results.auth import (
    AUTH_PLUGIN_IDS,
    HostFacts,
    Validator,
    assess_host,
    infer_scan_type,
)
from nessus_pool.results.types import (
    AuthStatus,
    ComplianceBreakdown,
    Finding,
    HostResult,
    ResultsSummary,
    ScanResults,
    SeverityBreakdown,
    Validation,
    cwe_number,
)

__all__ = [
    "AuthStatus",
    "Finding",
    "HostResult",
    "ResultsSummary",
    "ScanResults",
    "SeverityBreakdown",
    "Validation",
    "iter_findings",
    "parse_export",
]

DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_BATCH_CHARS = 16 * 1024 * 1024
_PROLOG_BYTES = 64 * 1024
#: a prolog (declaration, comments, DOCTYPE) longer than this is refused
_PROLOG_MAX = 1024 * 1024
#: the root element of every .nessus export
ROOT_TAG = "NessusClientData_v2"
#: an element name as it follows "<" (no namespace handling: .nessus roots have none)
_ROOT_NAME = re.compile(r"[^\s/>]+")
_TAGS = ("ReportItem", "HostProperties", "ReportHost", "Policy")
_HOST_TIME_FORMAT = "%a %b %d %H:%M:%S %Y"

OnFindings = Callable[[list[Finding]], None]
OnHosts = Callable[[list[HostResult]], None]


def check_prolog(head: bytes) -> None:
    """Refuse a DOCTYPE or ENTITY declaration in the first bytes of an XML document."""
    text = _decode_head(head).lower()
    root = _root_start(text)
    prolog = text if root < 0 else text[:root]
    for marker in ("<!doctype", "<!entity"):
        if marker in prolog:
            raise UnsafeXmlError(
                f"the export contains a {marker[2:].upper()} declaration and was refused "
                "(DTDs and entities are never processed: XML bomb / XXE protection)"
            )


def _decode_head(head: bytes) -> str:
    for bom, enc in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            return head[len(bom) :].decode(enc, errors="replace")
    if head[:4] in (b"<\x00?\x00", b"\x00<\x00?"):
        return head.decode("utf-16-le" if head[0] == 0x3C else "utf-16-be", errors="replace")
    return head.decode("latin-1")


def _root_start(text: str) -> int:
    """Index of the first element start tag, skipping the declaration and comments."""
    i = 0
    while True:
        i = text.find("<", i)
        if i < 0 or i + 1 >= len(text):
            return -1
        nxt = text[i + 1]
        if nxt == "?":
            end = text.find("?>", i)
        elif text.startswith("<!--", i):
            end = text.find("-->", i)
        elif nxt == "!":
            return -1  # a declaration: let the caller look at the whole head
        else:
            return i
        if end < 0:
            return -1
        i = end + 2


def open_checked(path: str | Path, max_bytes: int) -> tuple[Path, int]:
    """Check size and prolog; return the path and its size."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(_PROLOG_BYTES)
            # a long comment may push a DOCTYPE past the first chunk: read on to the root
            while _root_start(_decode_head(head).lower()) < 0 and len(head) < _PROLOG_MAX:
                more = fh.read(_PROLOG_BYTES)
                if not more:
                    break
                head += more
    except OSError as exc:
        raise ResultsError(f"cannot read export {p}: {exc.strerror or exc}") from exc
    if size > max_bytes:
        raise ResultsError(
            f"export {p.name} is {size} bytes, over the {max_bytes}-byte limit; raise "
            "max_bytes (results.max-export-bytes) to parse it"
        )
    check_prolog(head)
    text = _decode_head(head)
    first = text.removeprefix("\xef\xbb\xbf").lstrip(" \t\r\n")[:1]  # after a UTF-8 BOM
    if first and first != "<":
        # Markdown or JSON: its first "<" (if any) is no root element worth naming
        raise NotNessusExportError(
            f"{p.name} is not XML (it starts with {first!r}): give a .nessus export "
            "(Nessus: Export > Nessus)"
        )
    root = _root_start(text)
    if root < 0:
        if size > len(head):
            raise UnsafeXmlError(
                f"export {p.name} has no root element in its first {_PROLOG_MAX} bytes"
            )
    elif (tag := _ROOT_NAME.match(text, root + 1)) and tag.group(0) != ROOT_TAG:
        raise NotNessusExportError(
            f"{p.name} is not a {ROOT_TAG} file (its root element is <{tag.group(0)}>): "
            "export the scan as .nessus"
        )
    return p, size


def _iterparse(
    source: Any, events: tuple[str, ...] = ("end",), tags: tuple[str, ...] = _TAGS
) -> Any:
    """lxml's iterparse with the safety options of every pass."""
    return etree.iterparse(
        source,
        events=events,
        tag=tags,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


#: ReportItem children a Finding reads; lxml skips every other child in C
_FINDING_TAGS = (
    "cve",
    "cwe",
    "plugin_output",
    "description",
    "synopsis",
    "solution",
    "see_also",
    "risk_factor",
    "cvss3_base_score",
    "cvss_base_score",
    "exploit_available",
)
#: the children the summary pass reads (plus plugin_output for AUTH_PLUGIN_IDS)
_SUMMARY_TAGS = ("cvss3_base_score", "exploit_available")
_SUMMARY_AUTH_TAGS = (*_SUMMARY_TAGS, "plugin_output")
_SEVERITY = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4}
_SEVERITY_TEXTS = tuple(_SEVERITY)
#: the result of a compliance check (audit policies), in Nessus's ``cm`` namespace
CM_RESULT = "{http://www.nessus.org/cm}compliance-result"


def _severity(value: str | None) -> int:
    """The raw ``severity`` attribute clamped to 0..4 (0 when missing or not a number)."""
    if value is not None and (sev := _SEVERITY.get(value)) is not None:
        return sev
    return max(0, min(4, _int(value)))


def _finding(el: Any, host: str, ip: str | None, fqdn: str | None) -> Finding:
    a = el.attrib
    risk = synopsis = description = solution = output = see_also = None
    cvss3 = cvss = None
    cves: list[str] = []
    cwes: list[int] = []
    exploit = False
    # one pass over the wanted children; a repeated child: the last one wins (cve, cwe: all
    # kept)
    for child in el.iterchildren(*_FINDING_TAGS):
        tag = child.tag
        text = child.text
        if tag == "cve":
            if text:
                cves.append(text.strip())
        elif tag == "cwe":
            if (cwe := cwe_number(text)) is not None:
                cwes.append(cwe)
        elif tag == "plugin_output":
            output = text
        elif tag == "description":
            description = text
        elif tag == "synopsis":
            synopsis = text
        elif tag == "solution":
            solution = text
        elif tag == "see_also":
            see_also = text
        elif tag == "risk_factor":
            risk = text
        elif tag == "cvss3_base_score":
            cvss3 = _float(text)
        elif tag == "cvss_base_score":
            cvss = _float(text)
        else:  # exploit_available
            exploit = (text or "").strip().lower() == "true"
    return Finding(
        host=host,
        host_ip=ip,
        host_fqdn=fqdn,
        port=_int(a.get("port")),
        protocol=a.get("protocol", ""),
        svc_name=a.get("svc_name", ""),
        severity=_severity(a.get("severity")),
        plugin_id=_int(a.get("pluginID")),
        plugin_name=a.get("pluginName", ""),
        plugin_family=a.get("pluginFamily", ""),
        risk_factor=risk,
        cvss3_base_score=cvss3,
        cvss_base_score=cvss,
        cves=cves,
        cwes=cwes,
        exploit_available=exploit,
        synopsis=synopsis,
        description=description,
        solution=solution,
        plugin_output=output,
        see_also=see_also,
    )


def _free(el: Any) -> None:
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


#: the HostProperties tags a host's result and validation read
_PROPERTIES = frozenset(
    {
        "host-ip",
        "host-fqdn",
        "hostname",
        "operating-system",
        "HOST_START",
        "HOST_END",
        "Credentialed_Scan",
    }
)


class _Host:
    """Per-host accumulator; holds counts and the validation facts, never the findings."""

    __slots__ = ("by_severity", "facts", "result")

    def __init__(self, name: str) -> None:
        self.result = HostResult(name=name)
        self.facts = HostFacts(name=name)
        #: findings per raw severity 0..4 (summed into ``result`` by :meth:`finish`)
        self.by_severity = [0, 0, 0, 0, 0]

    def set_properties(self, el: Any) -> None:
        # read here and dropped: kept per host, the tags grew memory with the host count;
        # only the texts used are turned into strings (a host has ~50 tags, some long)
        props: dict[str, str] = {}
        for t in el.iterchildren("tag"):
            if (name := t.get(b"name")) in _PROPERTIES:
                props[name] = t.text or ""
        r = self.result
        r.ip = props.get("host-ip") or None
        r.fqdn = props.get("host-fqdn") or props.get("hostname") or None
        r.os = props.get("operating-system") or None
        r.start = props.get("HOST_START") or None
        r.end = props.get("HOST_END") or None
        self.facts.ip, self.facts.fqdn = r.ip, r.fqdn
        self.facts.credentialed_scan_tag = props.get("Credentialed_Scan")

    def add_output(self, plugin_id: int, output: str | None) -> None:
        self.facts.outputs.setdefault(plugin_id, []).append(output)

    def finish(self) -> None:
        r = self.result
        r.findings_total = sum(self.by_severity)
        r.severity_breakdown = _breakdown(self.by_severity)


def _breakdown(by_severity: list[int]) -> SeverityBreakdown:
    info, low, medium, high, critical = by_severity
    return SeverityBreakdown(critical=critical, high=high, medium=medium, low=low, info=info)


class _Hosts:
    """Which host's accumulator an element belongs to: a ReportItem's or HostProperties's
    by its parent (whose name is read once per parent), and the end of each ReportHost,
    handed to ``on_host`` (a host without items or HostProperties still counts)."""

    __slots__ = ("current", "on_host", "parent")

    def __init__(self, on_host: Callable[[_Host], None]) -> None:
        self.on_host = on_host
        self.current: _Host | None = None
        self.parent: Any = None

    def of(self, parent: Any) -> _Host:
        current = self.current
        if current is not None and parent is self.parent:
            return current
        self.parent = parent
        name = parent.get("name", "") if parent is not None else ""
        if current is None or current.result.name != name:
            current = self.current = _Host(name)
        return current

    def end(self, el: Any) -> None:
        name = el.get("name", "")
        current = self.current
        if current is None or current.result.name != name:
            current = _Host(name)
        current.finish()
        self.on_host(current)
        self.current = self.parent = None


def _items(path: Path, on_host: Callable[[_Host], None]) -> Iterator[tuple[Any, _Host]]:
    """The one streaming pass: yields each ReportItem element with its host's accumulator
    (the element is freed when the caller asks for the next one) and hands each finished
    host's accumulator to ``on_host``."""
    hosts = _Hosts(on_host)
    checked_dtd = False
    try:
        for _event, el in _iterparse(str(path)):
            if not checked_dtd:
                checked_dtd = True
                info = el.getroottree().docinfo
                if info.doctype or info.internalDTD is not None:
                    raise UnsafeXmlError()
            tag = el.tag
            if tag == "ReportItem":
                yield el, hosts.of(el.getparent())
            elif tag == "HostProperties":
                hosts.of(el.getparent()).set_properties(el)
            elif tag == "ReportHost":
                hosts.end(el)
            _free(el)
    except etree.XMLSyntaxError as exc:
        raise ResultsError(f"export {path.name} is not well-formed XML: {exc}") from exc


def iter_findings(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Finding]:
    """Every ReportItem as a :class:`Finding`, streamed (memory flat in file size). The file
    is checked (size, DTD, a ``NessusClientData_v2`` root) when iteration starts."""
    p, _ = open_checked(path, max_bytes)
    for el, h in _items(p, _drop):
        r = h.result
        yield _finding(el, r.name, r.ip, r.fqdn)


class _Totals:
    """Scan-wide counters of the streaming pass."""

    __slots__ = ("by_severity", "compliance", "exploitable", "max_cvss3")

    def __init__(self) -> None:
        self.by_severity = [0, 0, 0, 0, 0]
        self.exploitable = 0
        self.max_cvss3: float | None = None
        self.compliance: ComplianceBreakdown | None = None

    def count_compliance(self, el: Any) -> None:
        """Count the item's compliance result, if it is a compliance check (only items of a
        compliance family are searched: one ``find`` per audit item, none per finding)."""
        if "Compliance" not in el.get("pluginFamily", ""):
            return
        result = el.findtext(CM_RESULT)
        if result is not None:
            if self.compliance is None:
                self.compliance = ComplianceBreakdown()
            self.compliance.add(result)

    def summary(self) -> ResultsSummary:
        by = self.by_severity
        return ResultsSummary(
            severity_breakdown=_breakdown(by),
            findings_total=sum(by),
            vulnerabilities_total=sum(by[1:]),
            max_cvss3=self.max_cvss3,
            exploitable_total=self.exploitable,
            compliance=self.compliance,
        )


def _drop(_: _Host) -> None:
    pass


def _summarise(p: Path, hosts: Callable[[_Host], None], totals: _Totals) -> None:
    """The summary pass: per item only the attributes, ``cvss3_base_score``,
    ``exploit_available`` and, for the authentication plugins, ``plugin_output``; the long
    texts of other items are never turned into Python strings."""
    by_severity = totals.by_severity
    auth_ids = AUTH_PLUGIN_IDS
    for el, h in _items(p, hosts):
        get = el.get
        sev = _severity(get("severity"))
        by_severity[sev] += 1
        h.by_severity[sev] += 1
        plugin_id = _int(get("pluginID"))
        auth = plugin_id in auth_ids
        cvss3_text = exploit_text = output = None
        for child in el.iterchildren(*(_SUMMARY_AUTH_TAGS if auth else _SUMMARY_TAGS)):
            tag = child.tag
            if tag == "cvss3_base_score":
                cvss3_text = child.text
            elif tag == "exploit_available":
                exploit_text = child.text
            else:
                output = child.text
        if cvss3_text is not None:
            cvss3 = _float(cvss3_text)
            if cvss3 is not None and (totals.max_cvss3 is None or cvss3 > totals.max_cvss3):
                totals.max_cvss3 = cvss3
        if exploit_text is not None and exploit_text.strip().lower() == "true":
            totals.exploitable += 1
        if auth:
            h.add_output(plugin_id, output)
        totals.count_compliance(el)


#: what the fast summary pass asks lxml for: the four elements it handles and the three
#: ReportItem children it reads (at their start; their text is read once the item has ended)
_FAST_TAGS = (*_TAGS, "cvss3_base_score", "exploit_available", CM_RESULT)
_FAST_CHILDREN = frozenset(_FAST_TAGS[len(_TAGS) :])
#: elements whose children the passes read: a handled element inside one of them is freed
#: before its parent is read, which only the exact pass reproduces
_READ_BY_PARENT = ("ReportItem", "HostProperties")
#: bytes per read (lxml reads 32 KiB at a time by default; 128 KiB took 4% less CPU)
_FAST_READ_BYTES = 128 * 1024
#: an ended item's empty shell stays in its ReportHost until this many have ended
_FAST_FREE_EVERY = 128


class _Reread(Exception):
    """The fast summary pass met what only the exact pass reads as the reference does."""


class _Chunks:
    """A binary file read in chunks of ``size`` bytes whatever lxml asks for (lxml >= 6.1
    has ``chunk_size``; ``lxml>=5`` is what pyproject.toml requires)."""

    __slots__ = ("fh", "size")

    def __init__(self, fh: Any, size: int) -> None:
        self.fh = fh
        self.size = size

    def read(self, _size: int = -1) -> bytes:
        data: bytes = self.fh.read(self.size)
        return data


def _summarise_fast(p: Path, on_host: Callable[[_Host], None], totals: _Totals) -> None:
    """:func:`_summarise` on ``start`` events only, with the same result; raises
    :class:`_Reread` where it could differ.

    When lxml collects events, every element's start and end handler costs a GIL round
    trip, whatever the tag filter; without ``end`` events libxml2 ends elements on its own
    (half the round trips: 9% less CPU on the benchmark export). An element is read once a
    later start shows that it has ended (it is not an ancestor of the new element), so
    elements are read in the order of their ends, as the exact pass reads them.

    The open ReportItem is kept apart from the chain of other started elements: the start
    of its next sibling (nearly every event) ends it and opens the next one without a walk
    of the chain, and the severities of a run of sibling items are counted together.

    What it cannot vouch for it hands back (:class:`_Reread`; the caller then runs the
    exact pass from the start): a DTD; XML that is not well-formed or a read that fails
    (the error is the exact pass's); a handled element inside a ReportItem or
    HostProperties (the exact pass frees it, and so changes its parent's children, before
    it reads the parent)."""
    children = _FAST_CHILDREN
    auth_memo: dict[str | None, int] = {}
    max_cvss3 = totals.max_cvss3
    exploitable = totals.exploitable
    compliance = totals.compliance
    hosts = _Hosts(on_host)
    #: handled elements other than ReportItems started and not read yet: a chain, each an
    #: ancestor of the next (and of the open item)
    started: list[Any] = []
    #: what ``item`` and ``item_parent`` hold while no item is open: no element's parent
    closed: Any = _CLOSED
    #: the open ReportItem, its parent and its host's accumulator; the last
    #: cvss3_base_score and exploit_available and the first compliance result among its
    #: children (what the exact pass reads with iterchildren and findtext); ``kids``: one
    #: of them was seen
    item: Any = closed
    item_parent: Any = closed
    item_host = _Host("")
    kids = False
    cvss3_el: Any = None
    exploit_el: Any = None
    cm_el: Any = None
    #: the severity attributes of the items read since the last count (one host's)
    severities: list[str | None] = []
    add_severity = severities.append
    #: the last parent checked: not a ReportItem or HostProperties
    checked_parent: Any = None
    countdown = _FAST_FREE_EVERY
    try:
        with p.open("rb", buffering=0) as fh:
            events = iter(_iterparse(_Chunks(fh, _FAST_READ_BYTES), ("start",), _FAST_TAGS))
            first = next(events, None)
            if first is not None:
                info = first[1].getroottree().docinfo
                if info.doctype or info.internalDTD is not None:
                    raise _Reread("a DTD")
            # the end of the file ends every element: a last start without a parent
            end_of_file = etree.Element("end-of-file")
            for _event, el in chain((first,) if first else (), events, (("start", end_of_file),)):
                tag = el.tag
                parent = el.getparent()
                sibling = parent is item_parent
                if not sibling:
                    if parent is item:  # a child of the open item
                        if tag == "cvss3_base_score":
                            cvss3_el = el
                        elif tag == "exploit_available":
                            exploit_el = el
                        elif tag == CM_RESULT:
                            if cm_el is None:
                                cm_el = el
                        else:
                            raise _Reread(f"a {tag} inside a ReportItem")
                        kids = True
                        continue
                    if tag in children:
                        continue  # deeper inside the open item, or in no item: never read
                    if item is not closed and _is_ancestor(item, parent):
                        raise _Reread(f"a {tag} inside a ReportItem")
                if item is not closed:
                    # the open item has ended: what _summarise reads of it, inline
                    add_severity(item.get(b"severity"))
                    if kids:
                        if cvss3_el is not None and (text := cvss3_el.text) is not None:
                            cvss3 = _float(text)
                            if cvss3 is not None and (max_cvss3 is None or cvss3 > max_cvss3):
                                max_cvss3 = cvss3
                        if exploit_el is not None and (text := exploit_el.text) is not None:
                            exploitable += text.strip().lower() == "true"
                        if cm_el is not None and "Compliance" in item.get("pluginFamily", ""):
                            if compliance is None:
                                compliance = ComplianceBreakdown()
                            compliance.add(cm_el.text or "")
                        kids = False
                        cvss3_el = exploit_el = cm_el = None
                    value = item.get(b"pluginID")
                    if plugin_id := auth_memo.get(value, -1):
                        if plugin_id < 0:
                            plugin_id = _auth_id(value, auth_memo)
                        if plugin_id:
                            item_host.add_output(plugin_id, _last_output(item))
                    item.clear()
                    countdown -= 1
                    if not countdown:
                        countdown = _FAST_FREE_EVERY
                        _count_severities(severities, totals.by_severity, item_host.by_severity)
                        if item_parent is not None:
                            del item_parent[: item_parent.index(item)]
                    if sibling and tag == "ReportItem":
                        item = el  # the same parent, host and started ancestors
                        continue
                    _count_severities(severities, totals.by_severity, item_host.by_severity)
                    item = item_parent = closed
                    if tag in children:
                        continue
                if parent is not checked_parent:
                    if parent is not None and parent.tag in _READ_BY_PARENT:
                        raise _Reread(f"a {tag} inside a {parent.tag}")
                    checked_parent = parent
                # every started element that is not an ancestor of this one has ended
                while started:
                    top = started[-1]
                    if top is parent:
                        break
                    top_parent = top.getparent()
                    if top_parent is not parent and _is_ancestor(top, parent):
                        break
                    started.pop()
                    _read_other(top, top_parent, hosts)
                if tag == "ReportItem":
                    item = el
                    item_parent = parent
                    # nothing else is read before the item ends: its host is known now
                    h = hosts.current
                    if h is None or parent is not hosts.parent:
                        h = hosts.of(parent)
                    item_host = h
                else:
                    started.append(el)
    except (etree.XMLSyntaxError, OSError) as exc:
        # the error (and whether the file is still there to fail on) is the exact pass's
        raise _Reread("XML that is not well-formed, or a file that cannot be read") from exc
    totals.max_cvss3 = max_cvss3
    totals.exploitable = exploitable
    totals.compliance = compliance


#: the placeholder for "no open item" in :func:`_summarise_fast` (no element's parent)
_CLOSED = object()
#: pluginID texts remembered by the fast pass (their count, each one's length)
_AUTH_MEMO_MAX = 4096
_AUTH_MEMO_CHARS = 16


def _auth_id(value: str | None, memo: dict[str | None, int]) -> int:
    """The plugin id of a ``pluginID`` text (read as :func:`_int` reads it) if it is one of
    :data:`AUTH_PLUGIN_IDS`, else 0; remembered in ``memo`` (a short text only, and the
    memo cleared when full: a hostile file cannot grow it)."""
    plugin_id = _int(value)
    if plugin_id not in AUTH_PLUGIN_IDS:
        plugin_id = 0
    if value is None or len(value) <= _AUTH_MEMO_CHARS:
        if len(memo) >= _AUTH_MEMO_MAX:
            memo.clear()
        memo[value] = plugin_id
    return plugin_id


def _last_output(item: Any) -> str | None:
    """The text of the item's last ``plugin_output`` child (None without one), as
    :func:`_summarise` reads it: Nessus writes it last, so the last child is looked at
    first, and the children are searched only when it is not."""
    if len(item) and (last := item[-1]).tag == "plugin_output":
        text: str | None = last.text
        return text
    output = None
    for child in item.iterchildren("plugin_output"):
        output = child.text
    return output


def _count_severities(values: list[str | None], *into: list[int]) -> None:
    """Count severity attributes (as :func:`_severity` reads each) into each of ``into``,
    then empty ``values``: the five usual ones with a C-level count each."""
    if not values:
        return
    counts = [values.count(text) for text in _SEVERITY_TEXTS]
    if sum(counts) != len(values):  # missing or unusual ones: each read alone
        counts = [0, 0, 0, 0, 0]
        for value in values:
            counts[_severity(value)] += 1
    for by_severity in into:
        for sev, n in enumerate(counts):
            by_severity[sev] += n
    values.clear()


def _is_ancestor(el: Any, of: Any) -> bool:
    return of is not None and any(a is el for a in of.iterancestors())


def _read_other(el: Any, parent: Any, hosts: _Hosts) -> None:
    """A HostProperties, ReportHost or Policy that has ended, read as :func:`_items` reads
    it, then freed."""
    tag = el.tag
    if tag == "HostProperties":
        hosts.of(parent).set_properties(el)
    elif tag == "ReportHost":
        hosts.end(el)
    _free(el)


def _extract(
    p: Path,
    hosts: Callable[[_Host], None],
    totals: _Totals,
    on_findings: OnFindings,
    batch_size: int,
    batch_chars: int,
) -> None:
    """The findings pass: every item as a :class:`Finding`, handed on in batches."""
    by_severity = totals.by_severity
    auth_ids = AUTH_PLUGIN_IDS
    batch: list[Finding] = []
    chars = 0
    for el, h in _items(p, hosts):
        r = h.result
        f = _finding(el, r.name, r.ip, r.fqdn)
        by_severity[f.severity] += 1
        h.by_severity[f.severity] += 1
        if f.exploit_available:
            totals.exploitable += 1
        cvss3 = f.cvss3_base_score
        if cvss3 is not None and (totals.max_cvss3 is None or cvss3 > totals.max_cvss3):
            totals.max_cvss3 = cvss3
        if f.plugin_id in auth_ids:
            h.add_output(f.plugin_id, f.plugin_output)
        totals.count_compliance(el)
        batch.append(f)
        # the two long texts bound a batch's memory when plugin outputs are huge
        chars += len(f.plugin_output or "") + len(f.description or "")
        if len(batch) >= batch_size or chars >= batch_chars:
            on_findings(batch)
            batch = []
            chars = 0
    if batch:
        on_findings(batch)


def parse_export(
    path: str | Path,
    *,
    scan_type: ScanType | None,
    targets: list[str] | None = None,
    on_findings: OnFindings | None = None,
    on_hosts: OnHosts | None = None,
    batch_size: int = 1000,
    batch_chars: int = DEFAULT_BATCH_CHARS,
    host_batch_size: int = 1000,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ScanResults:
    """Parse an export in one streaming pass: summary, per-host results and the
    authentication validation. ``on_findings`` receives findings in batches of
    ``batch_size`` (for storage; each batch is a new list the callee may keep), or fewer once
    their plugin outputs and descriptions reach ``batch_chars`` characters, and is called
    from this thread. Without ``on_findings`` only what the summary needs is read of each
    finding. ``on_hosts`` likewise receives the per-host results in batches of
    ``host_batch_size`` as each host ends (the returned ``hosts`` is then empty and memory
    does not grow with the host count); without it they are returned in ``hosts``.
    ``scan_type=None`` infers it (see :func:`nessus_pool.results.auth.infer_scan_type`);
    hosts are then held until one says credentials were used, or to the end.

    Raises :class:`UnsafeXmlError` for DTD/entity declarations,
    :class:`NotNessusExportError` for XML whose root is not ``NessusClientData_v2`` and
    :class:`ResultsError` when the file is missing, too large or not well-formed."""
    p, _ = open_checked(path, max_bytes)
    sink = _HostSink(scan_type, targets, on_hosts, host_batch_size)
    totals = _Totals()
    if on_findings is not None:
        _extract(p, sink, totals, on_findings, batch_size, batch_chars)
    elif on_hosts is not None:
        # the hosts handed on before an error are the exact pass's
        _summarise(p, sink, totals)
    else:
        try:
            _summarise_fast(p, sink, totals)
        except _Reread:
            # nothing was handed on: start again with the exact pass
            sink = _HostSink(scan_type, targets, on_hosts, host_batch_size)
            totals = _Totals()
            _summarise(p, sink, totals)
    sink.finish()
    summary = totals.summary()
    summary.hosts_scanned = sink.total
    summary.scan_start, summary.scan_end = sink.window.result()
    return ScanResults(
        summary=summary,
        hosts=sink.kept,
        validation=sink.validator.result(),
        auth_plugins_found=sink.evidence_total,
    )


class _HostSink:
    """Receives each finished host: its verdict, the scan's validation and time window,
    then the host's result into a batch for ``on_hosts`` (or the returned list)."""

    def __init__(
        self,
        scan_type: ScanType | None,
        targets: list[str] | None,
        on_hosts: OnHosts | None,
        batch_size: int,
    ) -> None:
        self.scan_type = scan_type
        self.targets = targets
        self.on_hosts = on_hosts
        self.batch_size = max(1, batch_size)
        #: hosts held while the scan type is still being inferred
        self.pending: list[_Host] = []
        self.validator = Validator(scan_type=scan_type or ScanType.UNTRUSTED, targets=targets)
        self.window = _Window()
        self.batch: list[HostResult] = []
        self.kept: list[HostResult] = []
        self.total = 0
        self.evidence_total = 0

    def __call__(self, h: _Host) -> None:
        if self.scan_type is None:
            self.pending.append(h)
            if infer_scan_type([h.facts]) is ScanType.AUTHENTICATED:
                self._decided(ScanType.AUTHENTICATED)
            return
        self._emit(h, self.scan_type)

    def _decided(self, scan_type: ScanType) -> None:
        self.scan_type = scan_type
        self.validator.scan_type = scan_type
        pending, self.pending = self.pending, []
        for h in pending:
            self._emit(h, scan_type)

    def _emit(self, h: _Host, scan_type: ScanType) -> None:
        v = assess_host(h.facts, scan_type)
        r = h.result
        r.credentialed_checks = v.credentialed_checks
        r.authentication_status = v.status
        r.evidence = v.evidence
        r.notes = v.notes + v.troubleshooting
        self.validator.add(h.facts, v)
        self.window.add(r)
        self.total += 1
        self.evidence_total += len(r.evidence)
        if self.on_hosts is None:
            self.kept.append(r)
            return
        self.batch.append(r)
        if len(self.batch) >= self.batch_size:
            batch, self.batch = self.batch, []
            self.on_hosts(batch)

    def finish(self) -> None:
        if self.scan_type is None:
            self._decided(ScanType.UNTRUSTED)
        if self.batch and self.on_hosts is not None:
            batch, self.batch = self.batch, []
            self.on_hosts(batch)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _when(value: str | None) -> datetime | None:
    """``HOST_START`` as a datetime: "Mon Jul  1 11:33:11 2013" or ISO 8601 (WAS exports)."""
    if not value:
        return None
    # the usual form without strptime, which cost 23 us a call (two per host: half of the
    # summary pass of an export with one item per host)
    parts = value.split()
    if len(parts) == 5 and (month := _MONTHS.get(parts[1])) is not None:
        hms = parts[3].split(":")
        try:
            if len(hms) == 3:
                h, m, sec = (int(x) for x in hms)
                return datetime(int(parts[4]), month, int(parts[2]), h, m, sec)
        except ValueError:
            pass
    try:
        return datetime.strptime(" ".join(value.split()), _HOST_TIME_FORMAT)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        return None


class _Window:
    """Earliest ``HOST_START`` and latest ``HOST_END`` as written in the export, one host
    at a time (a time that does not parse is used only when none does)."""

    __slots__ = ("end", "first_start", "last_end", "start")

    def __init__(self) -> None:
        self.start: tuple[datetime, str] | None = None
        self.end: tuple[datetime, str] | None = None
        self.first_start: str | None = None
        self.last_end: str | None = None

    def add(self, h: HostResult) -> None:
        if h.start:
            if self.first_start is None:
                self.first_start = h.start
            if (t := _when(h.start)) is not None and (
                self.start is None or (t, h.start) < self.start
            ):
                self.start = (t, h.start)
        if h.end:
            self.last_end = h.end
            if (t := _when(h.end)) is not None and (self.end is None or (t, h.end) > self.end):
                self.end = (t, h.end)

    def result(self) -> tuple[str | None, str | None]:
        return (
            self.start[1] if self.start else self.first_start,
            self.end[1] if self.end else self.last_end,
        )
