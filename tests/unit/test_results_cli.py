"""The offline ``results`` CLI, run in-process."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from nessus_pool.results.cli import add_results_parser, run_results

SUMMARY_KEYS = {
    "hosts_scanned", "severity_breakdown", "findings_total", "vulnerabilities_total",
    "authentication_status", "warnings", "troubleshooting", "max_cvss3", "exploitable_total",
    "scan_start", "scan_end", "hosts",
}  # fmt: skip
SEV_NAMES = {"4": "critical", "3": "high", "2": "medium", "1": "low", "0": "info"}


def samples_dir() -> Path:
    env = os.environ.get("NESSUS_SAMPLES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "nessus-samples"


def manifest() -> list[Any]:
    d = samples_dir()
    if not (d / "manifest.json").is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no samples at {d}"))]
    files = json.loads((d / "manifest.json").read_text())["files"]
    return [pytest.param(e, id=Path(e["file"]).name) for e in files]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nessus-pool")
    add_results_parser(parser.add_subparsers(dest="command", required=True))
    return run_results(parser.parse_args(argv))


def sample(name: str) -> Path:
    p = samples_dir() / name
    if not p.exists():
        pytest.skip(f"sample {name} absent")
    return p


@pytest.mark.parametrize("entry", manifest())
def test_summary_json_matches_manifest(entry: dict[str, Any], capsys: Any) -> None:
    path = samples_dir() / Path(entry["file"]).name
    assert run(["results", "summary", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2) + "\n"  # indented like every other --json
    assert set(doc) >= SUMMARY_KEYS
    facts = entry["facts"]
    assert doc["hosts_scanned"] == facts["report_hosts"]
    assert doc["findings_total"] == facts["report_items"]
    assert doc["severity_breakdown"] == {
        SEV_NAMES[k]: v for k, v in facts["severity_counts"].items()
    }
    assert [h["findings_total"] for h in doc["hosts"]] == facts["per_host_item_counts"]
    for h, want in zip(doc["hosts"], facts["per_host"], strict=True):
        assert set(h) >= {
            "name",
            "findings_total",
            "severity_breakdown",
            "credentialed_checks",
            "authentication_status",
            "evidence",
        }
        if want["credentialed_checks"] is not None:
            assert h["credentialed_checks"] == want["credentialed_checks"]


def test_summary_v_unknown_failed_with_troubleshooting(capsys: Any) -> None:
    path = sample("defectdojo__nessus_v_unknown.xml")
    assert (
        run(
            [
                "results",
                "summary",
                str(path),
                "--json",
                "--targets",
                "10.31.112.21-22,qa3app09",
                "10.31.112.99",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["authentication_status"] == "failed"
    assert all(h["credentialed_checks"] == "no" and 24786 in h["evidence"] for h in doc["hosts"])
    assert any("ADMIN$" in t and "qa3app09" in t for t in doc["troubleshooting"])
    assert any("1 target has no results" in w and "10.31.112.99" in w for w in doc["warnings"])


def test_summary_scan_type_override(capsys: Any) -> None:
    path = sample("defectdojo__nessus_with_cvssv3.nessus")
    assert run(["results", "summary", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["authentication_status"] == "not_applicable"
    assert run(["results", "summary", str(path), "--json", "--scan-type", "authenticated"]) == 0
    assert json.loads(capsys.readouterr().out)["authentication_status"] == "failed"


def test_summary_human_output(capsys: Any) -> None:
    path = sample("pytenable__example.nessus")
    assert run(["results", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hosts scanned   1" in out and "authentication  success" in out
    header = next(line for line in out.splitlines() if line.startswith("HOST"))
    row = next(line for line in out.splitlines() if line.startswith("adam"))
    assert header.index("FINDINGS") + len("FINDINGS") == row.index("230") + 3


def test_findings_json_and_filters(capsys: Any) -> None:
    path = sample("pytenable__example.nessus")
    argv = [
        "results",
        "findings",
        str(path),
        "--min-severity",
        "critical",
        "--page-size",
        "3",
        "--profile",
        "minimal",
        "--json",
    ]
    assert run(argv) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["total"] == 7 and page["pages"] == 3 and page["has_more"]
    assert all(i["severity"] == 4 for i in page["items"])
    assert (
        run(
            [
                "results",
                "findings",
                str(path),
                "--exploit-available",
                "--text",
                "flash",
                "--profile",
                "custom",
                "--fields",
                "plugin_id,exploit_available",
                "--json",
            ]
        )
        == 0
    )
    page = json.loads(capsys.readouterr().out)
    assert page["total"] > 0 and all(i["exploit_available"] for i in page["items"])
    assert run(["results", "findings", str(path), "--port", "445", "--page-size", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("page 1/")


def test_findings_table_speaks_like_scan_results(capsys: Any) -> None:
    """Severity by name, yes/no, the PLUGIN header and plurals, as the online table."""
    path = sample("pytenable__example.nessus")
    assert run(["results", "findings", str(path), "--profile", "full", "--json"]) == 0
    every = json.loads(capsys.readouterr().out)["items"]
    argv = ["results", "findings", str(path), "--min-severity", "critical", "--page-size", "2"]
    assert run(argv) == 0
    head, *rows, foot = capsys.readouterr().out.splitlines()
    assert head.split() == [
        "SEVERITY", "HOST", "PORT", "PROTO", "PLUGIN", "CVSS3", "EXPLOIT", "FAMILY", "CVES", "CWES",
        "NAME",
    ]  # fmt: skip
    criticals = [i for i in every if i["severity"] == 4]
    assert len(rows) == 2 and all(r.startswith("critical  adam  445 ") for r in rows)
    exploit = {True: "yes", False: "no"}
    by_id = {i["plugin_id"]: i for i in criticals}
    for r in rows:
        plugin_id = int(r.split()[4])
        assert r.split()[6] == exploit[by_id[plugin_id]["exploit_available"]]
    pages = -(-len(criticals) // 2)
    assert foot == f"page 1/{pages}, {len(criticals)} findings (next: --page 2)"
    assert run(["results", "findings", str(path), "--plugin-id", "19506"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("info  ") and out[-1] == "page 1/1, 1 finding"
    empty = ["results", "findings", str(path), "--plugin-id", "1", "--json"]
    assert run(empty[:-1]) == 0
    assert capsys.readouterr().out == "page 1/1, 0 findings\n"
    assert run(empty) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(json.loads(out), indent=2) + "\n"


def test_exit_codes(tmp_path: Path, capsys: Any) -> None:
    assert run(["results", "summary", str(tmp_path / "missing.nessus")]) == 1
    assert "cannot read" in capsys.readouterr().err
    bomb = tmp_path / "bomb.nessus"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "a">]><x>&a;</x>')
    assert run(["results", "findings", str(bomb)]) == 1
    assert "DOCTYPE" in capsys.readouterr().err
    ok = tmp_path / "ok.nessus"
    ok.write_text("<NessusClientData_v2><Report name='r'/></NessusClientData_v2>")
    assert run(["results", "findings", str(ok), "--min-severity", "severe"]) == 2
    assert "error (min_severity)" in capsys.readouterr().err
    assert run(["results", "findings", str(ok), "--page-size", "0"]) == 2
    assert "(page_size)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse choices: the accepted values listed
        run(["results", "findings", str(ok), "--profile", "wide"])
    assert exit_.value.code == 2
    assert "--profile: invalid choice: 'wide'" in capsys.readouterr().err


def test_xml_that_is_not_an_export_exits_2(tmp_path: Path, capsys: Any) -> None:
    foo = tmp_path / "foo.xml"
    foo.write_text("<foo/>")
    for command in ("summary", "findings"):
        assert run(["results", command, str(foo)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("error: foo.xml is not a NessusClientData_v2 file")


#: the shape of defectdojo__nessus_was_no_vuln.xml (a Web App Scanning export, BSD-3-Clause,
#: DefectDojo) with one ReportItem added, since that sample has none
WAS_EXPORT = """<?xml version="1.0" ?>
<NessusClientData_v2>
  <Report xmlns:cm="http://www.nessus.org/cm" name="google.com" version="1.1" type="was">
    <ReportHost name="http://google.com/">
      <HostProperties>
        <tag name="host-fqdn">http://google.com/</tag>
        <tag name="system-type">web_application</tag>
        <tag name="HOST_START">2021-03-12T12:34:30.12031+00:00</tag>
      </HostProperties>
      <ReportItem port="443" svc_name="www" protocol="tcp" severity="2" pluginID="98115"
          pluginName="Cross-Site Request Forgery" pluginFamily="Cross Site Request Forgery">
        <cvss3_base_score>4.3</cvss3_base_score>
      </ReportItem>
    </ReportHost>
    <ReportHost name="http://example.com/">
      <ReportItem port="443" svc_name="www" protocol="tcp" severity="0" pluginID="98000"
          pluginName="Scan Information" pluginFamily="General"/>
    </ReportHost>
  </Report>
</NessusClientData_v2>
"""


def test_findings_host_filter_takes_a_was_url(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "was.nessus"
    path.write_text(WAS_EXPORT)
    assert run(["results", "summary", str(path), "--json"]) == 0
    hosts = [h["name"] for h in json.loads(capsys.readouterr().out)["hosts"]]
    assert hosts == ["http://google.com/", "http://example.com/"]
    assert run(["results", "findings", str(path), "--host", hosts[0], "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [(i["host"], i["plugin_id"]) for i in page["items"]] == [(hosts[0], 98115)]
    real = sample("defectdojo__nessus_was_no_vuln.xml")
    assert run(["results", "findings", str(real), "--host", "http://google.com/", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 0
    assert run(["results", "findings", str(path), "--host", "10.0.0.0/33"]) == 2
    assert "error (host): invalid CIDR '10.0.0.0/33'" in capsys.readouterr().err


def test_findings_cwe_filter_on_a_real_export(capsys: Any) -> None:
    path = sample("defectdojo__nessus_with_cvssv3.nessus")
    assert run(["results", "findings", str(path), "--profile", "full", "--json"]) == 0
    every = json.loads(capsys.readouterr().out)["items"]
    assert run(["results", "findings", str(path), "--cwe", "CWE-79", "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    with_79 = sorted(i["plugin_id"] for i in every if 79 in i["cwes"])
    assert sorted(i["plugin_id"] for i in page["items"]) == with_79 and with_79
    assert all("cwes" in i for i in page["items"])
    assert run(["results", "findings", str(path), "--cwe", "XSS"]) == 2
    assert "error (cwe)" in capsys.readouterr().err


def mini_export(items: list[tuple[str, int, int, int]], also: tuple[str, ...] = ()) -> str:
    """An export of (host, plugin id, port, severity) items (and hosts ``also`` scanned
    without a finding)."""
    hosts: dict[str, list[str]] = {h: [] for h in also}
    for host, pid, port, sev in items:
        hosts.setdefault(host, []).append(
            f'<ReportItem port="{port}" svc_name="x" protocol="tcp" severity="{sev}" '
            f'pluginID="{pid}" pluginName="Plugin {pid}" pluginFamily="General"/>'
        )
    body = "".join(
        f'<ReportHost name="{h}"><HostProperties/>{"".join(its)}</ReportHost>'
        for h, its in hosts.items()
    )
    return f'<NessusClientData_v2><Report name="r">{body}</Report></NessusClientData_v2>'


def test_diff_tables_and_json(tmp_path: Path, capsys: Any) -> None:
    old, new = tmp_path / "old.nessus", tmp_path / "new.nessus"
    old.write_text(
        mini_export(
            [("a", 1, 22, 2), ("a", 2, 443, 3), ("a", 3, 0, 0), ("a", 6, 25, 2), ("b", 4, 80, 1)]
        )
    )
    new.write_text(
        mini_export(
            [("a", 1, 22, 2), ("a", 2, 443, 4), ("a", 6, 25, 3), ("b", 4, 80, 1), ("b", 5, 80, 3)]
        )
    )
    assert run(["results", "diff", str(old), str(new), "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2) + "\n"
    assert (doc["old"], doc["new"]) == (str(old), str(new))
    d = doc["diff"]
    assert (d["new_total"], d["fixed_total"], d["changed_severity_total"]) == (1, 1, 2)
    assert d["unchanged_total"] == 2 and not d["truncated"]
    assert [(i["host"], i["plugin_id"]) for i in d["new"]] == [("b", 5)]
    assert [(i["host"], i["plugin_id"]) for i in d["fixed"]] == [("a", 3)]
    assert [
        (c["plugin_id"], c["old_severity"], c["new_severity"]) for c in d["changed_severity"]
    ] == [
        (2, 3, 4),
        (6, 2, 3),
    ]

    assert run(["results", "diff", str(old), str(new)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "1 new, 1 fixed, 0 not rescanned, 2 changed severity, 2 unchanged"
    sections = {
        title: lines[i + 1 : i + 3] for i, title in enumerate(lines) if title.endswith("):")
    }
    assert [ln.split() for ln in sections["new (1):"]] == [
        ["SEVERITY", "HOST", "PORT", "PROTO", "PLUGIN", "NAME"],
        ["high", "b", "80", "tcp", "5", "Plugin", "5"],
    ]
    assert sections["fixed (1):"][1].split()[:5] == ["info", "a", "0", "tcp", "3"]
    assert [ln.split()[:4] for ln in sections["changed severity (2):"]] == [
        ["WAS", "NOW", "HOST", "PORT"],
        ["high", "critical", "a", "443"],
    ]

    # only what is high or worse in either export: medium -> high stays a change
    assert run(["results", "diff", str(old), str(new), "--min-severity", "high", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["diff"]
    assert (d["new_total"], d["fixed_total"], d["changed_severity_total"]) == (1, 0, 2)
    assert d["unchanged_total"] == 0
    # lists bounded, counts complete
    assert run(["results", "diff", str(new), str(old), "--limit", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["diff"]
    assert (d["changed_severity_total"], len(d["changed_severity"]), d["truncated"]) == (2, 1, True)
    assert d["changed_severity"][0]["new_severity"] == 3  # the worst first: critical -> high


def test_diff_of_a_host_the_new_export_did_not_scan_is_not_rescanned(
    tmp_path: Path, capsys: Any
) -> None:
    old, new = tmp_path / "old.nessus", tmp_path / "new.nessus"
    old.write_text(
        mini_export([("10.0.0.1", 1, 22, 2), ("10.0.0.1", 2, 80, 3), ("10.0.0.2", 3, 443, 4)])
    )
    # 10.0.0.3 was scanned and had nothing: a host with no finding is still a scanned host
    new.write_text(mini_export([("10.0.0.1", 1, 22, 2)], also=("10.0.0.3",)))
    assert run(["results", "diff", str(old), str(new), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["diff"]
    assert [(i["host"], i["plugin_id"]) for i in d["fixed"]] == [("10.0.0.1", 2)]
    assert [(i["host"], i["plugin_id"]) for i in d["not_rescanned"]] == [("10.0.0.2", 3)]
    assert (d["fixed_total"], d["not_rescanned_total"]) == (1, 1)
    assert (d["hosts_not_rescanned"], d["hosts_new"]) == (["10.0.0.2"], ["10.0.0.3"])
    assert run(["results", "diff", str(old), str(new)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "0 new, 1 fixed, 1 not rescanned, 0 changed severity, 1 unchanged"
    assert lines[3].startswith("hosts differ: new did not scan 10.0.0.2")
    assert lines[4] == "hosts differ: old did not scan 10.0.0.3"
    title = lines.index("not rescanned: host not in the new scan (1):")
    assert lines[title + 2].split()[:5] == ["critical", "10.0.0.2", "443", "tcp", "3"]
    # the same exports: the same hosts, no such line
    assert run(["results", "diff", str(old), str(old)]) == 0
    assert "hosts differ" not in capsys.readouterr().out


def test_diff_of_a_real_export_with_itself_and_bad_input(tmp_path: Path, capsys: Any) -> None:
    path = sample("libnessus__nessus_report_local2.nessus")
    assert run(["results", "diff", str(path), str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["diff"]
    keys = run(["results", "findings", str(path), "--page-size", "500", "--json"])
    items = json.loads(capsys.readouterr().out)["items"]
    distinct = {(i["host"], i["plugin_id"], i["port"], i["protocol"]) for i in items}
    assert keys == 0 and d["unchanged_total"] == len(distinct) > 0
    assert d["new_total"] == d["fixed_total"] == d["changed_severity_total"] == 0
    foo = tmp_path / "foo.xml"
    foo.write_text("<foo/>")
    for argv, message in (
        ([str(path), str(foo)], "foo.xml is not a NessusClientData_v2 file"),
        ([str(path), str(path), "--limit", "0"], "error (limit): limit must be >= 1"),
        ([str(path), str(path), "--min-severity", "bad"], "error (min_severity)"),
    ):
        assert run(["results", "diff", *argv]) == 2
        assert message in capsys.readouterr().err
    assert run(["results", "diff", str(path), str(tmp_path / "nope.nessus")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_terminal_controls_from_an_export_are_shown_escaped(tmp_path: Path, capsys: Any) -> None:
    """XML 1.0 allows C1 controls (U+009B is CSI) and bidi overrides in names; the human
    output must not hand them to the terminal. JSON escapes them anyway."""
    path = tmp_path / "c1.nessus"
    path.write_text(
        '<?xml version="1.0"?><NessusClientData_v2><Report name="r">'
        '<ReportHost name="h&#x9b;2Jx&#x202e;cba"><ReportItem port="1" protocol="tcp" '
        'svc_name="x" severity="1" pluginID="1" pluginName="a&#x9b;31mb&#x85;c" '
        'pluginFamily="f"/></ReportHost></Report></NessusClientData_v2>',
        encoding="utf-8",
    )
    empty = tmp_path / "empty.nessus"
    empty.write_text("<NessusClientData_v2/>")
    outputs = []
    for argv in (["summary", path], ["findings", path], ["diff", empty, path]):
        assert run(["results", *map(str, argv)]) == 0
        outputs.append(capsys.readouterr().out)
    text = "".join(outputs)
    assert not any(0x7F <= ord(c) < 0xA0 or 0x202A <= ord(c) <= 0x202E for c in text)
    host = "h\\x9b2Jx\\u202ecba"
    assert all(host in out for out in outputs)
    assert "a\\x9b31mb c" in outputs[1]  # U+0085 is whitespace: collapsed like a newline
