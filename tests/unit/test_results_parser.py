"""The streaming .nessus parser against real public exports (numbers from manifest.json) and
against hostile files (XML bomb, XXE, oversize)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import msgspec
import pytest

from nessus_pool.engine.ingest import ingest_export
from nessus_pool.errors import NotNessusExportError, ResultsError, UnsafeXmlError
from nessus_pool.models import ScanType, Task, TaskStatus
from nessus_pool.results.parser import Finding, iter_findings, parse_export
from nessus_pool.store import Store

SEV_NAMES = {"4": "critical", "3": "high", "2": "medium", "1": "low", "0": "info"}


def samples_dir() -> Path:
    env = os.environ.get("NESSUS_SAMPLES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "nessus-samples"


def manifest_entries() -> list[Any]:
    d = samples_dir()
    if not (d / "manifest.json").is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no samples at {d}"))]
    files = json.loads((d / "manifest.json").read_text())["files"]
    return [pytest.param(e, id=Path(e["file"]).name) for e in files]


def sample_path(entry: dict[str, Any]) -> Path:
    d = samples_dir()
    p = d / Path(entry["file"]).name
    return p if p.exists() else d / entry["file"]


def tag_value(tag: str | None) -> str | None:
    return {"true": "yes", "false": "no"}.get((tag or "").lower())


@pytest.mark.parametrize("entry", manifest_entries())
def test_sample_counts_match_manifest(entry: dict[str, Any]) -> None:
    facts = entry["facts"]
    r = parse_export(sample_path(entry), scan_type=None)
    assert r.summary.hosts_scanned == facts["report_hosts"]
    assert r.summary.findings_total == facts["report_items"]
    got = msgspec.to_builtins(r.summary.severity_breakdown)
    assert got == {SEV_NAMES[k]: v for k, v in facts["severity_counts"].items()}
    assert [h.findings_total for h in r.hosts] == facts["per_host_item_counts"]
    for host, want in zip(r.hosts, facts["per_host"], strict=True):
        assert host.name == want["name"]
        assert host.findings_total == want["items"]
        assert msgspec.to_builtins(host.severity_breakdown) == {
            SEV_NAMES[k]: v for k, v in want["sev"].items()
        }
        # 19506 first; the Credentialed_Scan tag only when 19506 is absent
        expected = want["credentialed_checks"] or tag_value(want["credentialed_scan_tag"])
        assert host.credentialed_checks == expected
        assert host.start == want["host_start"]


@pytest.mark.parametrize("entry", manifest_entries())
def test_sample_streams_findings_in_batches(entry: dict[str, Any]) -> None:
    items = entry["facts"]["report_items"]
    batches: list[list[Finding]] = []
    parse_export(
        sample_path(entry), scan_type=ScanType.UNTRUSTED, on_findings=batches.append, batch_size=10
    )
    assert sum(len(b) for b in batches) == items
    assert all(0 < len(b) <= 10 for b in batches)
    assert sum(1 for _ in iter_findings(sample_path(entry))) == items


@pytest.mark.parametrize("entry", manifest_entries())
def test_sample_summary_is_consistent(entry: dict[str, Any]) -> None:
    path = sample_path(entry)
    r = parse_export(path, scan_type=None)
    findings = list(iter_findings(path))
    assert r.summary.vulnerabilities_total == sum(1 for f in findings if f.severity >= 1)
    assert r.summary.exploitable_total == sum(1 for f in findings if f.exploit_available)
    scores = [f.cvss3_base_score for f in findings if f.cvss3_base_score is not None]
    assert r.summary.max_cvss3 == (max(scores) if scores else None)
    assert all(f.host in {h.name for h in r.hosts} for f in findings)


def test_raw_severity_not_cvss_derived() -> None:
    """issue_6992: severity="2" with cvss3_base_score=7.5 stays medium (DefectDojo: High)."""
    path = samples_dir() / "defectdojo__issue_6992.nessus"
    if not path.exists():
        pytest.skip("samples absent")
    (f,) = list(iter_findings(path))
    assert f.severity == 2 and f.cvss3_base_score == 7.5


# --- synthetic exports --------------------------------------------------------------------


def report_item(pid: int, sev: int = 0, output: str | None = None, **children: str) -> str:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in children.items())
    if output is not None:
        body += f"<plugin_output>{output}</plugin_output>"
    return (
        f'<ReportItem port="22" svc_name="ssh" protocol="tcp" severity="{sev}" '
        f'pluginID="{pid}" pluginName="Plugin {pid}" pluginFamily="General">{body}</ReportItem>'
    )


def export(hosts: dict[str, tuple[dict[str, str], list[str]]], head: str = "") -> str:
    parts = []
    for name, (props, items) in hosts.items():
        tags = "".join(f'<tag name="{k}">{v}</tag>' for k, v in props.items())
        parts.append(
            f'<ReportHost name="{name}"><HostProperties>{tags}</HostProperties>'
            + "".join(items)
            + "</ReportHost>"
        )
    return (
        f'<?xml version="1.0" ?>{head}<NessusClientData_v2><Policy><policyName>p'
        f'</policyName></Policy><Report name="r">{"".join(parts)}</Report>'
        "</NessusClientData_v2>"
    )


def test_finding_fields(tmp_path: Path) -> None:
    item = report_item(
        1001,
        3,
        "out",
        cve="CVE-2020-1",
        cvss3_base_score="8.1",
        cvss_base_score="7.5",
        exploit_available="true",
        synopsis="s",
        solution="fix",
        risk_factor="High",
        see_also="https://x",
    ) + report_item(1001, 1).replace(
        "</ReportItem>", "<cve>CVE-1</cve><cve>CVE-2</cve></ReportItem>"
    )
    path = tmp_path / "a.nessus"
    path.write_text(export({"10.0.0.5": ({"host-ip": "10.0.0.5", "host-fqdn": "a.lan"}, [item])}))
    f, g = list(iter_findings(path))
    assert (f.host, f.host_ip, f.host_fqdn, f.port, f.protocol, f.svc_name) == (
        "10.0.0.5",
        "10.0.0.5",
        "a.lan",
        22,
        "tcp",
        "ssh",
    )
    assert (f.severity, f.plugin_id, f.cvss3_base_score, f.cvss_base_score) == (3, 1001, 8.1, 7.5)
    assert f.cves == ["CVE-2020-1"] and f.exploit_available
    assert (f.synopsis, f.solution, f.plugin_output, f.risk_factor, f.see_also) == (
        "s",
        "fix",
        "out",
        "High",
        "https://x",
    )
    assert g.cves == ["CVE-1", "CVE-2"] and not g.exploit_available and g.description is None


def test_empty_export_warns(tmp_path: Path) -> None:
    path = tmp_path / "e.nessus"
    path.write_text(export({}))
    r = parse_export(path, scan_type=ScanType.AUTHENTICATED)
    assert r.summary.hosts_scanned == 0
    assert r.validation.authentication_status == "unknown"
    assert any("no hosts" in w for w in r.validation.warnings)


def test_scan_window_is_earliest_start_latest_end(tmp_path: Path) -> None:
    path = tmp_path / "w.nessus"
    path.write_text(
        export(
            {
                "a": (
                    {
                        "HOST_START": "Mon Jul  1 11:40:00 2013",
                        "HOST_END": "Mon Jul  1 12:00:00 2013",
                    },
                    [],
                ),
                "b": (
                    {
                        "HOST_START": "Mon Jul  1 11:33:11 2013",
                        "HOST_END": "Mon Jul  1 11:50:00 2013",
                    },
                    [],
                ),
            }
        )
    )
    r = parse_export(path, scan_type=ScanType.UNTRUSTED)
    assert (r.summary.scan_start, r.summary.scan_end) == (
        "Mon Jul  1 11:33:11 2013",
        "Mon Jul  1 12:00:00 2013",
    )


# --- hostile files ---------------------------------------------------------------------------

BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<NessusClientData_v2><Report name="r"><ReportHost name="&lol9;"/></Report></NessusClientData_v2>
"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<NessusClientData_v2><Report name="&xxe;"/></NessusClientData_v2>
"""


@pytest.mark.parametrize("content", [BOMB, XXE], ids=["billion-laughs", "xxe"])
def test_hostile_xml_refused_fast(tmp_path: Path, content: str) -> None:
    path = tmp_path / "evil.nessus"
    path.write_text(content)
    t0 = time.monotonic()
    with pytest.raises(UnsafeXmlError, match="DOCTYPE"):
        parse_export(path, scan_type=ScanType.UNTRUSTED)
    with pytest.raises(UnsafeXmlError):
        list(iter_findings(path))
    assert time.monotonic() - t0 < 1.0


def test_doctype_after_comment_and_utf16_refused(tmp_path: Path) -> None:
    p1 = tmp_path / "c.nessus"
    p1.write_text("<?xml version='1.0'?><!-- hi --><!DOCTYPE x SYSTEM 'http://e/x.dtd'><x/>")
    p2 = tmp_path / "u.nessus"
    p2.write_bytes(XXE.replace('"1.0"?>', '"1.0" encoding="utf-16"?>').encode("utf-16"))
    for p in (p1, p2):
        with pytest.raises(UnsafeXmlError):
            parse_export(p, scan_type=ScanType.UNTRUSTED)


def test_oversize_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.nessus"
    path.write_text(export({"h": ({}, [report_item(1)] * 50)}))
    t0 = time.monotonic()
    with pytest.raises(ResultsError, match="over the 1024-byte limit"):
        parse_export(path, scan_type=ScanType.UNTRUSTED, max_bytes=1024)
    assert time.monotonic() - t0 < 1.0


def test_malformed_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "bad.nessus"
    path.write_text("<NessusClientData_v2><Report><ReportHost name='x'>")
    with pytest.raises(ResultsError, match="not well-formed"):
        parse_export(path, scan_type=ScanType.UNTRUSTED)
    with pytest.raises(ResultsError, match="cannot read"):
        parse_export(tmp_path / "nope.nessus", scan_type=ScanType.UNTRUSTED)


def test_doctype_behind_a_long_comment_refused(tmp_path: Path) -> None:
    lol = "".join(f'<!ENTITY l{i + 1} "' + f"&l{i};" * 10 + '">' for i in range(9))
    for pad in (70_000, 2_000_000):
        path = tmp_path / f"late{pad}.nessus"
        path.write_text(
            f'<?xml version="1.0"?><!--{"x" * pad}--><!DOCTYPE r [<!ENTITY l0 "lol">{lol}]>'
            '<NessusClientData_v2><Report name="&l9;"/></NessusClientData_v2>'
        )
        t0 = time.monotonic()
        with pytest.raises(UnsafeXmlError):
            parse_export(path, scan_type=ScanType.UNTRUSTED)
        assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize(
    ("content", "root"),
    [
        ("<foo/>", "foo"),
        ('<?xml version="1.0"?>\n<!-- c --><NessusClientData><Report/></NessusClientData>',
         "NessusClientData"),
        ("<html><body><ReportItem pluginID='1'/></body></html>", "html"),
    ],
    ids=["foo", "v1-root", "html-with-items"],
)  # fmt: skip
def test_xml_that_is_not_an_export_is_refused(tmp_path: Path, content: str, root: str) -> None:
    path = tmp_path / "other.xml"
    path.write_text(content)
    msg = f"other.xml is not a NessusClientData_v2 file \\(its root element is <{root}>\\)"
    with pytest.raises(NotNessusExportError, match=msg):
        parse_export(path, scan_type=None)
    with pytest.raises(NotNessusExportError, match=msg):
        list(iter_findings(path))


async def test_ingest_of_a_file_that_is_not_an_export_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "t1.nessus"
    path.write_text("<foo/>")
    task = Task(
        task_id="t00001",
        seq=1,
        pool="lan",
        name="scan",
        targets=["10.0.0.1"],
        status=TaskStatus.EXPORTING,
        export_path=str(path),
        created_at_ms=1,
        updated_at_ms=1,
    )
    store = Store(tmp_path / "np.db")
    await store.open()
    try:
        await store.write([Store.op_save_task(task)])
        with pytest.raises(NotNessusExportError, match="not a NessusClientData_v2 file"):
            await ingest_export(store, task)
        assert await store.get_findings_blobs(task.task_id) == []
    finally:
        await store.close()


def test_cwes_match_the_export(tmp_path: Path) -> None:
    """with_cvssv3 (DefectDojo, BSD-3-Clause) carries <cwe> elements; every finding's cwes
    equal its <cwe> children read by the stdlib parser, in order."""
    path = samples_dir() / "defectdojo__nessus_with_cvssv3.nessus"
    if not path.exists():
        pytest.skip("samples absent")
    want = [
        [int(c.text or "") for c in item.iter("cwe")]
        for item in ElementTree.parse(path).getroot().iter("ReportItem")
    ]
    got = [f.cwes for f in iter_findings(path)]
    assert got == want
    assert sum(map(len, got)) == path.read_text().count("<cwe>") > 0


def test_cwe_forms_and_old_stored_findings(tmp_path: Path) -> None:
    item = report_item(7).replace(
        "</ReportItem>", "<cwe>CWE-79</cwe><cwe> 352 </cwe><cwe>n/a</cwe></ReportItem>"
    )
    path = tmp_path / "c.nessus"
    path.write_text(export({"h": ({}, [item])}))
    (f,) = iter_findings(path)
    assert f.cwes == [79, 352]
    # findings stored before cwes existed decode with none
    old = msgspec.msgpack.encode({k: v for k, v in msgspec.to_builtins(f).items() if k != "cwes"})
    assert msgspec.msgpack.decode(old, type=Finding).cwes == []
