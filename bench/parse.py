"""Parse a ~200 MiB .nessus export five ways; throughput and peak RSS of each (issues 4, 8.3).

    python bench/parse.py            # ~200 MiB export, 3 repetitions (about 1-2 minutes)
    python bench/parse.py --quick    # ~24 MiB export, 3 repetitions (< 30 s)

Every measurement runs in a fresh spawned interpreter that reads its own VmHWM from
/proc/self/status after the work, so one way's memory never counts against another's:

  (a) anchor: xml.etree.ElementTree.parse of the whole tree, then a walk of every ReportItem
      (what the seed did)
  (b) stdlib ElementTree.iterparse counting ReportItems, clear() as it goes
  (c) lxml.etree.iterparse counting ReportItems, clear() and earlier siblings deleted
  (c') the floor of (d)'s parse: lxml iterparse on start events only (one GIL round trip
      per element instead of two), 128 KiB reads, each ReportItem cleared once the next
      handled start shows it has ended
  (c'') the floor of any summary read in Python: (c') plus the two attributes every summary
      reads of every item (severity, pluginID); (d) adds the children it reads, the
      per-host work (properties, verdicts, validation, scan window) and its checks
  (d) nessus-pool's summary pass: parse_export() without on_findings
  (e) nessus-pool's findings extraction + storage: engine.ingest.ingest_export() writing
      every finding to a real SQLite file through Store, as the engine does after a scan

The export is built by replicating the real hosts of ../shared/nessus-samples/ under new
names and addresses (or, without the samples, nessus_pool.simulator.export.write_export), and
cached under the temp directory. Targets (issue 8): (d) >= 3x (a) with peak RSS < 64 MiB;
(e) >= 100 MiB/s; issue 18: (d) >= 4x (a).

``--before DIR`` adds (d) and (e) run with the nessus_pool package of DIR (an unpacked copy
of an earlier commit: ``git archive REV | tar -x -C DIR``), interleaved with the others, for
a before/after pair measured in the same run. Every (d) also returns a digest of its whole
ScanResults, compared with the exact (end-event) pass's: the fast summary pass must give
the same result (exit 1 if not).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB, Series, describe, open_ingest_store, ratio, run_in_child, table

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "nessus-samples"
#: real exports whose hosts are replicated (each has one ReportHost with many ReportItems)
SAMPLE_FILES = (
    "pytenable__example.nessus",
    "libnessus__nessus_report_local2.nessus",
    "defectdojo__nessus_with_cvssv3.nessus",
)
CACHE = Path(tempfile.gettempdir()) / "nessus-pool-bench"
DISTS = ("nessus-pool", "lxml", "msgspec", "aiosqlite")


# --- the export ------------------------------------------------------------------------------


def _host_blocks(path: Path) -> tuple[bytes, list[tuple[bytes, bytes, bytes]]]:
    """The document head (up to the first ReportHost) and each host as
    (bytes, name, ip)."""
    data = path.read_bytes()
    first = data.find(b"<ReportHost ")
    head = data[:first]
    hosts = []
    pos = first
    while True:
        start = data.find(b"<ReportHost ", pos)
        if start < 0:
            break
        end = data.index(b"</ReportHost>", start) + len(b"</ReportHost>")
        block = data[start:end]
        name = block.split(b'name="', 1)[1].split(b'"', 1)[0]
        ip = b""
        marker = b'name="host-ip">'
        if marker in block:
            ip = block.split(marker, 1)[1].split(b"<", 1)[0].strip()
        hosts.append((block, name, ip))
        pos = end
    return head, hosts


def _replicated_export(out: Path, target_bytes: int) -> str:
    head = b""
    hosts: list[tuple[bytes, bytes, bytes]] = []
    for name in SAMPLE_FILES:
        h, blocks = _host_blocks(SAMPLES / name)
        head = head or h  # the Policy of the first sample opens the document
        hosts += blocks
    tmp = out.with_suffix(".part")
    n = 0
    with tmp.open("wb") as fh:
        fh.write(head)
        written = len(head)
        while written < target_bytes:
            block, name, ip = hosts[n % len(hosts)]
            new_ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}".encode()
            new_name = f"bench-host-{n:05d}.example.net".encode()
            if ip:
                block = block.replace(ip, new_ip)
            block = block.replace(b'name="' + name + b'"', b'name="' + new_name + b'"', 1)
            fh.write(block)
            fh.write(b"\n")
            written += len(block) + 1
            n += 1
        fh.write(b"</Report>\n</NessusClientData_v2>\n")
    tmp.replace(out)
    return f"{n} hosts replicated from {', '.join(SAMPLE_FILES)}"


def _simulated_export(out: Path, target_bytes: int) -> str:
    from nessus_pool.simulator.export import write_export

    # about 0.1 MiB per simulated host with these settings
    hosts = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(1, 200_000)]
    probe = CACHE / "probe.nessus"
    with probe.open("wb") as fh:
        write_export(
            fh,
            hosts=hosts[:20],
            scan_name="bench",
            credentialed=True,
            ssh_username="audit",
            seed=1,
            items_per_host=60,
        )
    per_host = probe.stat().st_size / 20
    probe.unlink()
    n = max(1, int(target_bytes / per_host))
    tmp = out.with_suffix(".part")
    with tmp.open("wb") as fh:
        write_export(
            fh,
            hosts=hosts[:n],
            scan_name="bench",
            credentialed=True,
            ssh_username="audit",
            seed=1,
            items_per_host=60,
        )
    tmp.replace(out)
    return f"{n} simulated hosts (nessus_pool.simulator.export.write_export, 60 items each)"


def build_export(target_mib: int) -> tuple[Path, str]:
    CACHE.mkdir(parents=True, exist_ok=True)
    have_samples = all((SAMPLES / n).is_file() for n in SAMPLE_FILES)
    kind = "samples" if have_samples else "simulated"
    key = hashlib.sha256(f"{kind}:{target_mib}:v1".encode()).hexdigest()[:12]
    out = CACHE / f"export-{target_mib}mib-{kind}-{key}.nessus"
    note = CACHE / (out.name + ".txt")
    if out.is_file() and note.is_file():
        return out, note.read_text() + " (cached)"
    t0 = time.perf_counter()
    if have_samples:
        what = _replicated_export(out, target_mib * MIB)
    else:
        what = _simulated_export(out, target_mib * MIB)
    note.write_text(what)
    print(f"generated {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return out, what


# --- the measured work (each runs in its own spawned child) ----------------------------------


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def work_etree_full(path: str) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    base = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    root = ET.parse(path).getroot()
    items = 0
    for host in root.iter("ReportHost"):
        for item in host.iter("ReportItem"):
            items += 1
            item.get("severity")
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "items": items,
        "base_mib": base,
    }


def work_stdlib_iterparse(path: str) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    base = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    items = 0
    for _event, el in ET.iterparse(path, events=("end",)):
        tag = el.tag
        if tag == "ReportItem":
            items += 1
            el.clear()
        elif tag == "ReportHost":
            el.clear()
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "items": items,
        "base_mib": base,
    }


def work_lxml_iterparse(path: str) -> dict[str, Any]:
    from lxml import etree

    base = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    items = 0
    for _event, el in etree.iterparse(
        path, events=("end",), tag=("ReportItem", "ReportHost"), resolve_entities=False
    ):
        if el.tag == "ReportItem":
            items += 1
        el.clear(keep_tail=False)
        parent = el.getparent()
        if parent is not None:
            while el.getprevious() is not None:
                del parent[0]
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "items": items,
        "base_mib": base,
    }


class _Chunks:
    """A file read in 128 KiB blocks whatever size lxml asks for (ways (c') and (c''))."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def read(self, _size: int) -> bytes:
        data: bytes = self.fh.read(128 * 1024)
        return data


def _free(el: Any) -> None:
    """Clear a read element and drop the siblings before it."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        del parent[: parent.index(el)]


def work_lxml_start_events(path: str) -> dict[str, Any]:
    from lxml import etree

    base = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    items = 0
    item = host = None
    with open(path, "rb", buffering=0) as fh:
        for _event, el in etree.iterparse(
            _Chunks(fh), events=("start",), tag=("ReportItem", "ReportHost"), resolve_entities=False
        ):
            # a start ends the item before it (not nested); a host start, the host before
            if item is not None:
                item.clear(keep_tail=False)
                if not items % 128:
                    _free(item)
                item = None
            if el.tag == "ReportItem":
                items += 1
                item = el
            else:
                if host is not None:
                    _free(host)
                host = el
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "items": items,
        "base_mib": base,
    }


def work_lxml_start_attributes(path: str) -> dict[str, Any]:
    """(c'') (c') plus what any summary must read of every item in Python: its severity
    and pluginID attributes (the summary counts the first and needs the second to find the
    authentication plugins), counted per severity text. No per-host work, no children."""
    from lxml import etree

    base = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    items = 0
    by_severity: dict[str | None, int] = {}
    plugin_ids: set[str | None] = set()
    item = host = None
    with open(path, "rb", buffering=0) as fh:
        for _event, el in etree.iterparse(
            _Chunks(fh), events=("start",), tag=("ReportItem", "ReportHost"), resolve_entities=False
        ):
            if item is not None:
                severity = item.get(b"severity")
                by_severity[severity] = by_severity.get(severity, 0) + 1
                plugin_ids.add(item.get(b"pluginID"))
                item.clear(keep_tail=False)
                if not items % 128:
                    _free(item)
                item = None
            if el.tag == "ReportItem":
                items += 1
                item = el
            else:
                if host is not None:
                    _free(host)
                host = el
    if item is not None:
        by_severity[item.get(b"severity")] = 1 + by_severity.get(item.get(b"severity"), 0)
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "items": sum(by_severity.values()),
        "base_mib": base,
    }


def _digest(results: Any) -> str:
    import msgspec

    # repr, not JSON: a NaN score must equal itself
    return hashlib.sha256(repr(msgspec.to_builtins(results)).encode()).hexdigest()[:16]


def work_summary(path: str, tree: str | None = None, exact: bool = False) -> dict[str, Any]:
    if tree:
        sys.path.insert(0, tree)
    from unittest import mock

    from nessus_pool.results import parser

    if tree and not parser.__file__.startswith(tree):
        raise RuntimeError(f"nessus_pool imported from {parser.__file__}, not {tree}")
    base = _rss_mib()
    with contextlib.ExitStack() as stack:
        if exact:  # the exact (end-event) pass: the fast one hands the file back at once
            stack.enter_context(
                mock.patch.object(parser, "_summarise_fast", side_effect=parser._Reread)
            )
        t0, c0 = time.perf_counter(), time.process_time()
        res = parser.parse_export(path, scan_type=None, max_bytes=64 * 1024**3)
        seconds = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "items": res.summary.findings_total,
        "base_mib": base,
        "digest": _digest(res),
    }


def work_ingest(path: str, db_dir: str, tree: str | None = None) -> dict[str, Any]:
    if tree:
        sys.path.insert(0, tree)
    import asyncio

    from nessus_pool.engine.ingest import ingest_export

    async def go() -> dict[str, Any]:
        db = Path(db_dir) / "ingest.db"
        store, task = await open_ingest_store(db, path)
        try:
            base = _rss_mib()
            t0, c0 = time.perf_counter(), time.process_time()
            await ingest_export(store, task)
            seconds = time.perf_counter() - t0
            cpu_s = time.process_time() - c0
            stored = await store.count_findings(task.task_id)
            commits = store.commits
        finally:
            await store.close()
        return {
            "seconds": seconds,
            "cpu_s": cpu_s,
            "items": stored,
            "base_mib": base,
            "commits": commits,
            "db_mib": db.stat().st_size / MIB,
        }

    return asyncio.run(go())


WAYS = (
    ("a", "ElementTree.parse full tree + walk (anchor)", work_etree_full),
    ("b", "stdlib iterparse + clear(), count", work_stdlib_iterparse),
    ("c", "lxml iterparse + clear(), count", work_lxml_iterparse),
    ("c'", "lxml iterparse, start events, 128 KiB reads, count", work_lxml_start_events),
    ("c''", "(c') + each item's severity and pluginID read", work_lxml_start_attributes),
    ("d", "nessus-pool summary (parse_export)", work_summary),
    ("e", "nessus-pool findings extracted + stored (ingest_export)", work_ingest),
)
BEFORE_WAYS = (
    ("d0", "(d) with --before", work_summary),
    ("e0", "(e) with --before", work_ingest),
)


# --- unsafe XML refusal -------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<NessusClientData_v2><Report name="x"><ReportHost name="&lol9;"/></Report></NessusClientData_v2>
"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<NessusClientData_v2><Report name="&xxe;"/></NessusClientData_v2>
"""


def refusal_timings(reps: int, calls: int) -> list[list[str]]:
    from nessus_pool.errors import UnsafeXmlError
    from nessus_pool.results.parser import parse_export

    rows = []
    CACHE.mkdir(parents=True, exist_ok=True)
    for label, body in (("XML bomb (billion laughs)", BOMB), ("XXE (file:///etc/passwd)", XXE)):
        path = CACHE / f"unsafe-{label.split()[0].lower()}.nessus"
        path.write_bytes(body)
        per_call_us = Series()
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(calls):
                try:
                    parse_export(path, scan_type=None)
                except UnsafeXmlError:
                    pass
                else:
                    raise SystemExit(f"error: {label} was NOT refused")
            per_call_us.add((time.perf_counter() - t0) / calls * 1e6)
        rows.append([label, "refused (UnsafeXmlError)", per_call_us.fmt(1)])
    return rows


# --- main ----------------------------------------------------------------------------------


def _way_args(key: str, path: str, db_dir: str, before: str | None) -> tuple[Any, ...]:
    if key == "e":
        return (path, db_dir)
    if key == "d0":
        return (path, before)
    if key == "e0":
        return (path, db_dir, before)
    return (path,)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~24 MiB export, for a < 30 s run")
    ap.add_argument("--size-mib", type=int, default=None, help="export size (default 200)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per way (min 3)")
    ap.add_argument(
        "--before",
        metavar="DIR",
        help="also run (d) and (e) with the nessus_pool of DIR (an unpacked earlier commit)",
    )
    ap.add_argument(
        "--only",
        metavar="KEYS",
        help="run only these ways, comma-separated (a, the anchor, always runs): e.g. c,c',d",
    )
    args = ap.parse_args()
    size_mib = args.size_mib or (24 if args.quick else 200)
    repeat = max(3, args.repeat)
    if not Path("/proc/self/status").exists():
        print("error: needs Linux /proc/self/status for VmHWM", file=sys.stderr)
        return 2
    before = str(Path(args.before).resolve()) if args.before else None
    if before and not (Path(before) / "nessus_pool" / "__init__.py").is_file():
        print(f"error: no nessus_pool package in {before}", file=sys.stderr)
        return 2
    ways = [*WAYS, *(BEFORE_WAYS if before else ())]
    if args.only:
        keep = {"a", *args.only.split(",")}
        keep |= {k + "0" for k in keep} if before else set()
        ways = [w for w in ways if w[0] in keep]

    path, what = build_export(size_mib)
    size = path.stat().st_size
    with path.open("rb") as fh:  # warm the page cache so every way reads from memory
        while fh.read(16 * MIB):
            pass
    print(
        describe(
            DISTS,
            {
                "export": f"{path} ({size / MIB:.1f} MiB; {what})",
                "method": f"each way in a fresh spawned child, {repeat} repetitions, interleaved; "
                "MiB/s = file size / wall time of the work; CPU s = the child's CPU time of the "
                "work (all its threads); peak RSS = the child's VmHWM after it",
                "before": before or "-",
                "load average at start": _loadavg(),
            },
        ),
        flush=True,
    )

    speed = {k: Series() for k, _, _ in ways}
    cpu = {k: Series() for k, _, _ in ways}
    rss = {k: Series() for k, _, _ in ways}
    base = {k: Series() for k, _, _ in ways}
    items: dict[str, int] = {}
    digests: dict[str, set[str]] = {}
    extra: dict[str, Any] = {}
    t_start = time.perf_counter()
    # the exact (end-event) summary pass once: what every (d) must give
    digests["exact pass"] = {run_in_child(work_summary, str(path), None, True)["digest"]}
    with tempfile.TemporaryDirectory(prefix="np-bench-parse-", dir=CACHE) as db_dir:
        for rep in range(repeat):
            for key, label, fn in ways:
                r = run_in_child(fn, *_way_args(key, str(path), db_dir, before), timeout_s=600)
                speed[key].add(size / MIB / r["seconds"])
                cpu[key].add(r["cpu_s"])
                rss[key].add(r["vmhwm_mib"])
                base[key].add(r["base_mib"])
                items[key] = r["items"]
                if "digest" in r:
                    digests.setdefault(key, set()).add(r["digest"])
                if key == "e":
                    extra = r
                print(
                    f"  rep {rep + 1}/{repeat} ({key}) {label}: {size / MIB / r['seconds']:.0f}"
                    f" MiB/s, {r['cpu_s']:.2f} s CPU, peak RSS {r['vmhwm_mib']:.0f} MiB, "
                    f"{r['items']} items, load {_loadavg()}",
                    flush=True,
                )
    anchor = speed["a"].median
    rows = [
        [
            f"({k}) {label}",
            speed[k].fmt(0),
            ratio(speed[k].median, anchor),
            cpu[k].fmt(3),
            ratio(cpu["a"].median, cpu[k].median),
            rss[k].fmt(0),
            f"{base[k].median:.0f}",
            f"{items[k]:,}",
        ]
        for k, label, _ in ways
    ]
    print(
        table(
            f"Parsing a {size / MIB:.0f} MiB export (median (min-max) of {repeat}; "
            f"load average at the end {_loadavg()})",
            [
                "way",
                "MiB/s",
                "vs (a)",
                "CPU s",
                "CPU vs (a)",
                "peak RSS MiB",
                "RSS before work MiB",
                "ReportItems",
            ],
            rows,
        )
    )
    if len(set(items.values())) != 1:
        print(f"\nWARNING: the ways disagree on the ReportItem count: {items}")
    same = len(set().union(*digests.values())) == 1
    print(
        "\nsummary results (whole ScanResults digests): "
        + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in digests.items())
        + (" - identical" if same else " - DIFFERENT")
    )
    if "e" in items:
        print(
            f"\n(e) wrote {items['e']:,} findings in {extra.get('commits', 0)} commits; "
            f"database {extra.get('db_mib', 0):.0f} MiB"
        )
    print(
        table(
            f"Unsafe XML refused before parsing (µs per parse_export call, median (min-max) of "
            f"{repeat} x 200 calls)",
            ["file", "outcome", "µs/call"],
            refusal_timings(repeat, 200),
        )
    )
    print("\nTargets (issues 8 and 18):")
    if "d" in speed:
        s_d, s_a = speed["d"].median, anchor
        for times, issue in ((3, 8), (4, 18)):
            print(
                f"  summary >= {times}x ElementTree parse (issue {issue}): {s_d / s_a:.2f}x, "
                f"CPU {cpu['a'].median / cpu['d'].median:.2f}x  "
                f"[{'met' if s_d >= times * s_a else 'NOT met'}]"
            )
        print(
            f"  summary peak RSS < 64 MiB: {rss['d'].median:.0f} MiB  "
            f"[{'met' if rss['d'].median < 64 else 'NOT met'}]"
        )
    if "e" in speed:
        s_e = speed["e"].median
        print(
            f"  findings extracted + stored >= 100 MiB/s: {s_e:.0f} MiB/s  "
            f"[{'met' if s_e >= 100 else 'NOT met'}]"
        )
    print(f"\ntotal bench time {time.perf_counter() - t_start:.0f} s")
    if not same:
        print("error: the summary pass gave a different result", file=sys.stderr)
        return 1
    return 0


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
