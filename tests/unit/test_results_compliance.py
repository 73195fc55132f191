"""Compliance audit results (``cm:compliance-result`` items) summarised as passed / failed /
warning / error counts next to the severity breakdown."""

from __future__ import annotations

from pathlib import Path

from nessus_pool.results.cli import summary_document
from nessus_pool.results.parser import parse_export
from nessus_pool.results.types import ComplianceBreakdown

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "nessus-samples"


def _item(result: str | None, family: str = "Policy Compliance", severity: int = 0) -> str:
    cm = f"<cm:compliance-result>{result}</cm:compliance-result>" if result else ""
    return (
        f'<ReportItem port="0" svc_name="general" protocol="tcp" severity="{severity}" '
        f'pluginID="21157" pluginName="Unix Compliance Checks" pluginFamily="{family}">'
        f"<cm:compliance-check-name>check</cm:compliance-check-name>{cm}</ReportItem>"
    )


def _export(tmp_path: Path, items: list[str]) -> Path:
    path = tmp_path / "audit.nessus"
    path.write_text(
        '<?xml version="1.0" ?><NessusClientData_v2>'
        '<Report name="audit" xmlns:cm="http://www.nessus.org/cm">'
        '<ReportHost name="192.0.2.1"><HostProperties>'
        '<tag name="host-ip">192.0.2.1</tag></HostProperties>'
        + "".join(items)
        + "</ReportHost></Report></NessusClientData_v2>"
    )
    return path


def test_compliance_results_are_counted_next_to_severities(tmp_path: Path) -> None:
    items = [
        _item("PASSED"),
        _item("PASSED"),
        _item("FAILED", severity=3),
        _item(" warning ", severity=2),
        _item("ERROR"),
        _item(None),  # a compliance-family item without a result is no check result
        _item("FAILED", family="General", severity=1),  # only compliance families count
    ]
    path = _export(tmp_path, items)
    for batched in (False, True):  # the summary pass and the findings pass agree
        r = parse_export(path, scan_type=None, on_findings=(lambda b: None) if batched else None)
        assert r.summary.compliance == ComplianceBreakdown(passed=2, failed=1, warning=1, error=1)
        assert r.summary.severity_breakdown.high == 1 and r.summary.findings_total == 7
    doc = summary_document(r)
    assert doc["compliance"] == {"passed": 2, "failed": 1, "warning": 1, "error": 1}


def test_an_export_without_compliance_checks_has_none() -> None:
    r = parse_export(SAMPLES / "pytenable__example.nessus", scan_type=None)
    assert r.summary.compliance is None
    assert summary_document(r)["compliance"] is None
