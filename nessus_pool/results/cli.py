"""The offline ``results`` command: summarise, query or compare ``.nessus`` files without a
daemon.

Exit codes: 0 ok; 1 the file could not be read or parsed (message on stderr); 2 a usage or
validation error (the field named), or an XML file that is not a Nessus export.

``--scan-type`` defaults to inferring it: ``authenticated`` when any host's plugin 19506 /
``Credentialed_Scan`` tag says credentials were used or a credential plugin (141118, 110095,
104410, 21745, 110385, 24786) is present, else ``untrusted``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, get_args

import msgspec

from nessus_pool.errors import NotNessusExportError, ResultsError, ValidationError
from nessus_pool.models import ScanType
from nessus_pool.render import (
    dumps_json,
    findings_table,
    findings_text,
    hosts_differ_lines,
    plural,
    safe,
)
from nessus_pool.results.parser import ScanResults, iter_findings, parse_export
from nessus_pool.results.query import (
    PROFILES,
    DiffKey,
    FindingsPage,
    Sort,
    diff_findings,
    diff_key,
    parse_query,
    query_findings,
    severity_value,
)
from nessus_pool.results.types import SEVERITY_NAMES


def add_results_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``results summary``, ``results findings`` and ``results diff`` to a CLI's
    subparsers."""
    results = subparsers.add_parser(
        "results", help="summarise, query or compare .nessus exports offline"
    )
    sub = results.add_subparsers(dest="results_command", metavar="{summary,findings,diff}")
    sub.required = True

    s = sub.add_parser("summary", help="hosts, severities and the authentication verdict")
    s.add_argument("file", metavar="FILE.nessus")
    s.add_argument(
        "--scan-type",
        choices=[t.value for t in ScanType],
        default=None,
        help="the scan type requested (default: inferred from the export)",
    )
    s.add_argument(
        "--targets",
        nargs="+",
        default=None,
        metavar="TARGET",
        help="targets the scan was given (IPs, CIDRs, ranges a-b, hostnames; commas allowed)",
    )
    s.add_argument("--json", action="store_true", help="print one indented JSON object")

    f = sub.add_parser("findings", help="filter, sort and page the findings")
    f.add_argument("file", metavar="FILE.nessus")
    f.add_argument("--min-severity", help="0-4 or critical/high/medium/low/info")
    f.add_argument("--min-cvss3", type=float)
    f.add_argument(
        "--host", help="IP, CIDR or exact host name (hostname, FQDN, or a WAS URL as listed)"
    )
    f.add_argument("--port", type=int)
    f.add_argument("--protocol")
    f.add_argument("--plugin-id", type=int)
    f.add_argument("--plugin-family")
    f.add_argument("--cve")
    f.add_argument("--cwe", help="CWE id, e.g. 79 or CWE-79")
    f.add_argument("--exploit-available", action="store_true", default=None)
    f.add_argument("--text", help="case-insensitive substring of the plugin name")
    f.add_argument("--sort", default="severity", choices=get_args(Sort))
    f.add_argument("--page", type=int, default=1)
    f.add_argument("--page-size", type=int, default=50)
    f.add_argument(
        "--profile",
        choices=[*PROFILES, "custom"],
        help="fields per finding (default: summary; custom with --fields)",
    )
    f.add_argument("--fields", help="comma-separated fields (implies --profile custom)")
    f.add_argument("--json", action="store_true", help="print one indented JSON object")

    d = sub.add_parser(
        "diff",
        help="what changed between two exports: new, fixed and re-rated findings",
        description="Compare two exports of the same targets. A finding is one (host, "
        "plugin, port, protocol); it is new, fixed, changed in severity or unchanged.",
    )
    d.add_argument("old", metavar="OLD.nessus")
    d.add_argument("new", metavar="NEW.nessus")
    d.add_argument(
        "--min-severity",
        help="compare only findings this severe or worse in either export (0-4 or a name): "
        "a medium that became high is a change, not a new finding",
    )
    d.add_argument(
        "--limit",
        type=int,
        default=100,
        help="findings listed per section, worst first (counts are always complete)",
    )
    d.add_argument("--json", action="store_true", help="print one indented JSON object")


def run_results(args: argparse.Namespace) -> int:
    """Run ``results summary|findings|diff``; returns the exit code."""
    try:
        if args.results_command == "summary":
            return _summary(args)
        if args.results_command == "diff":
            return _diff(args)
        return _findings(args)
    except ValidationError as exc:
        field = f" ({exc.field})" if exc.field else ""
        print(f"error{field}: {exc.message}", file=sys.stderr)
        return 2
    except NotNessusExportError as exc:
        # the wrong file was given: a usage error, like a bad option value
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ResultsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def summary_document(r: ScanResults) -> dict[str, Any]:
    """The ``summary --json`` object."""
    s, v = r.summary, r.validation
    return {
        "hosts_scanned": s.hosts_scanned,
        "severity_breakdown": msgspec.to_builtins(s.severity_breakdown),
        "compliance": msgspec.to_builtins(s.compliance),
        "findings_total": s.findings_total,
        "vulnerabilities_total": s.vulnerabilities_total,
        "authentication_status": v.authentication_status.value,
        "hosts_by_status": v.hosts_by_status,
        "warnings": v.warnings,
        "troubleshooting": v.troubleshooting,
        "max_cvss3": s.max_cvss3,
        "exploitable_total": s.exploitable_total,
        "scan_start": s.scan_start,
        "scan_end": s.scan_end,
        "hosts": [
            {
                "name": h.name,
                "ip": h.ip,
                "findings_total": h.findings_total,
                "severity_breakdown": msgspec.to_builtins(h.severity_breakdown),
                "credentialed_checks": h.credentialed_checks,
                "authentication_status": h.authentication_status.value,
                "evidence": h.evidence,
            }
            for h in r.hosts
        ],
    }


def _summary(args: argparse.Namespace) -> int:
    scan_type = ScanType(args.scan_type) if args.scan_type else None
    r = parse_export(args.file, scan_type=scan_type, targets=args.targets)
    doc = summary_document(r)
    if args.json:
        print_json(doc)
        return 0
    sev = doc["severity_breakdown"]
    rows = [
        ("hosts scanned", str(doc["hosts_scanned"])),
        ("findings", f"{doc['findings_total']} ({doc['vulnerabilities_total']} low or above)"),
        ("severity", "  ".join(f"{k} {sev[k]}" for k in SEVERITY_NAMES.values())),
        *(
            [("compliance", "  ".join(f"{k} {v}" for k, v in doc["compliance"].items()))]
            if doc["compliance"]
            else []
        ),
        ("max CVSS v3", "-" if doc["max_cvss3"] is None else str(doc["max_cvss3"])),
        ("exploitable", str(doc["exploitable_total"])),
        ("scan window", safe(f"{doc['scan_start'] or '?'} .. {doc['scan_end'] or '?'}")),
        ("authentication", doc["authentication_status"]),
    ]
    for label, value in rows:
        print(f"{label:<16}{value}")
    if doc["hosts"]:
        print()
        names = [safe(h["name"]) for h in doc["hosts"]]
        name_w = max(4, *map(len, names))
        print(f"{'HOST':<{name_w}}  {'FINDINGS':>8}  {'C/H/M/L/I':<16}  {'CRED':<4}  AUTH")
        for name, h in zip(names, doc["hosts"], strict=True):
            b = h["severity_breakdown"]
            counts = "/".join(str(b[k]) for k in SEVERITY_NAMES.values())
            cred = h["credentialed_checks"] or "-"
            print(
                f"{name:<{name_w}}  {h['findings_total']:>8}  {counts:<16}  {cred:<4}  "
                f"{h['authentication_status']}"
            )
    for title, lines in (
        ("warnings", doc["warnings"]),
        ("troubleshooting", doc["troubleshooting"]),
    ):
        if lines:
            print(f"\n{title}:")
            for line in lines:
                print(f"  - {safe(line)}")
    return 0


def _findings(args: argparse.Namespace) -> int:
    raw: dict[str, Any] = {
        "min_severity": args.min_severity,
        "min_cvss3": args.min_cvss3,
        "host": args.host,
        "port": args.port,
        "protocol": args.protocol,
        "plugin_id": args.plugin_id,
        "plugin_family": args.plugin_family,
        "cve": args.cve,
        "cwe": args.cwe,
        "exploit_available": args.exploit_available,
        "text": args.text,
        "sort": args.sort,
        "page": args.page,
        "page_size": args.page_size,
        "profile": args.profile,
        "fields": None,
    }
    if args.fields is not None:
        # as `scan results --fields`: the fields are the profile
        if args.profile not in (None, "custom"):
            raise ValidationError(
                f"--fields sets the fields; leave out --profile {args.profile}", field="fields"
            )
        raw["fields"] = [f.strip() for f in args.fields.split(",") if f.strip()]
        raw["profile"] = "custom"
    q = parse_query({k: v for k, v in raw.items() if v is not None})
    page = query_findings(list(iter_findings(args.file)), q)
    if args.json:
        print_json(page)
    else:
        _print_page(page)
    return 0


#: the columns of the diff tables (the JSON carries the summary profile)
_DIFF_COLUMNS = ["severity", "host", "port", "protocol", "plugin_id", "plugin_name"]


def _diff(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValidationError(f"limit must be >= 1; got {args.limit}", field="limit")
    floor = None if args.min_severity is None else severity_value(args.min_severity)
    old, new = list(iter_findings(args.old)), list(iter_findings(args.new))
    if floor is not None:
        # by the worse of the two exports, so medium -> high is a change, not a new finding
        worst: dict[DiffKey, int] = {}
        for f in (*old, *new):
            k = diff_key(f)
            worst[k] = max(worst.get(k, 0), f.severity)
        old = [f for f in old if worst[diff_key(f)] >= floor]
        new = [f for f in new if worst[diff_key(f)] >= floor]
    # the hosts each export scanned (its ReportHost list, findings or not): a host the new
    # one did not scan is "not rescanned", never "fixed"
    diff = diff_findings(
        old,
        new,
        limit=args.limit,
        old_hosts=scanned_hosts(args.old),
        new_hosts=scanned_hosts(args.new),
    )
    if args.json:
        print_json({"old": args.old, "new": args.new, "diff": diff})
        return 0
    print(f"old  {args.old}  ({plural(len(old), 'finding')})")
    print(f"new  {args.new}  ({plural(len(new), 'finding')})")
    print(
        f"{diff.new_total} new, {diff.fixed_total} fixed, "
        f"{diff.not_rescanned_total} not rescanned, "
        f"{diff.changed_severity_total} changed severity, {diff.unchanged_total} unchanged"
    )
    for line in hosts_differ_lines(msgspec.to_builtins(diff), "old", "new"):
        print(line)
    for title, items, total in (
        ("new", diff.new, diff.new_total),
        ("fixed", diff.fixed, diff.fixed_total),
        ("not rescanned: host not in the new scan", diff.not_rescanned, diff.not_rescanned_total),
    ):
        if items:
            print(f"\n{title} ({_shown(len(items), total)}):")
            rows = [msgspec.to_builtins(f) for f in items]
            print(_indent(findings_table(rows, _DIFF_COLUMNS)))
    if diff.changed_severity:
        shown = _shown(len(diff.changed_severity), diff.changed_severity_total)
        print(f"\nchanged severity ({shown}):")
        rows = [msgspec.to_builtins(c) for c in diff.changed_severity]
        print(_indent(findings_table(rows, ["old_severity", "new_severity", *_DIFF_COLUMNS[1:]])))
    return 0


def scanned_hosts(path: str) -> list[str]:
    """The ``ReportHost`` names of an export: every host it scanned, findings or not."""
    return [h.name for h in parse_export(path, scan_type=None).hosts]


def _indent(table: str) -> str:
    return "\n".join(f"  {line}" for line in table.splitlines())


def _shown(listed: int, total: int) -> str:
    return str(total) if listed == total else f"{listed} of {total}; raise --limit for more"


def print_json(data: Any) -> None:
    """Indented JSON, like every other ``--json`` of the CLI."""
    print(dumps_json(msgspec.to_builtins(data)))


def _print_page(page: FindingsPage) -> None:
    print(findings_text(msgspec.to_builtins(page)))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m nessus_pool.results.cli results ...``)."""
    parser = argparse.ArgumentParser(prog="nessus-pool")
    sub = parser.add_subparsers(dest="command", required=True)
    add_results_parser(sub)
    return run_results(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
