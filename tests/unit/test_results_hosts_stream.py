"""The parser hands per-host results over in batches (``on_hosts``) with the same verdicts,
validation and scan window as when it returns them all; the validation stays the same size
whatever the host count."""

from __future__ import annotations

from pathlib import Path

import pytest

from nessus_pool.models import ScanType
from nessus_pool.results.auth import MAX_HOST_LINES, HostFacts, Validator, assess_host
from nessus_pool.results.parser import HostResult, parse_export
from tests.unit.test_results_auth import OUT_104410, samples_dir


def _samples() -> list[Path]:
    d = samples_dir()
    return sorted(p for p in d.glob("*") if p.suffix in (".nessus", ".xml")) if d.is_dir() else []


@pytest.mark.parametrize("scan_type", [None, ScanType.AUTHENTICATED, ScanType.UNTRUSTED])
def test_batched_hosts_match_the_returned_list(scan_type: ScanType | None) -> None:
    samples = _samples()
    if not samples:
        pytest.skip("samples absent")
    for path in samples:
        whole = parse_export(path, scan_type=scan_type, targets=["10.0.0.1", "example.com"])
        batches: list[list[HostResult]] = []
        streamed = parse_export(
            path,
            scan_type=scan_type,
            targets=["10.0.0.1", "example.com"],
            on_hosts=lambda b, out=batches: out.append(list(b)),  # type: ignore[misc]
            host_batch_size=2,
        )
        assert streamed.hosts == []
        assert [h for b in batches for h in b] == whole.hosts, path.name
        assert all(len(b) <= 2 for b in batches)
        assert streamed.validation == whole.validation, path.name
        assert streamed.summary == whole.summary, path.name
        assert streamed.auth_plugins_found == sum(len(h.evidence) for h in whole.hosts)


def test_validation_lines_are_capped_not_grown_with_hosts() -> None:
    v = Validator(scan_type=ScanType.AUTHENTICATED, targets=["11.0.0.0/8", "10.2.0.7"])
    n = 3 * MAX_HOST_LINES
    for i in range(n):
        facts = HostFacts(name=f"10.2.{i // 250}.{i % 250}", outputs={104410: [OUT_104410]})
        v.add(facts, assess_host(facts, ScanType.AUTHENTICATED))
    result = v.result()
    assert result.hosts_by_status == {"failed": n}
    # every host has its own troubleshooting lines: kept to the cap plus one "more" line
    assert len(result.troubleshooting) == MAX_HOST_LINES + 1
    assert result.troubleshooting[-1].startswith("(+")
    assert "1 target has no results" in " ".join(result.warnings)
    assert "absent on 300 hosts" in " ".join(result.warnings)
