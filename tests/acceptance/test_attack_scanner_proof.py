"""``proofs/attack_scanner.py --quick``: a live daemon against a hostile fake scanner per
attack (deep JSON, huge body, dropped connection, export stuck loading, dripping download,
error text echoing the password); every attack must hold."""

from __future__ import annotations

import pytest

from tests.acceptance.test_proofs import run_proof

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(110)
def test_hostile_scanner_attacks_hold() -> None:
    rc, r, out = run_proof("attack_scanner")
    assert set(r["attacks"]) == {
        "deep_status",
        "huge_status",
        "disconnect",
        "stuck_loading",
        "drip_export",
        "error_secret",
    }, out
    for name, attack in r["attacks"].items():
        assert attack["held"] and attack["stranded"] == 0, (name, out)
    assert r["errors_5xx"] == 0 and r["requests"] > 0, out
    assert r["secret_in_log"] == 0 and r["secret_in_files"] == 0, out
    # 64 MiB status bodies are read at most up to the 32 MiB cap, one poll at a time
    assert r["rss_peak_mib"] - r["rss_start_mib"] < 128, out
    assert rc == 0, out
