"""``proofs/cluster.py --quick``: daemons of the installed ``nessus-pool`` on one throwaway
PostgreSQL, kill -9 and a PostgreSQL restart under a round-robin submit load. Nothing
acknowledged is lost, no scan is created twice, no scanner runs more than its cap, every task
ends; with several daemons, a killed daemon's scanners are taken over within lease-s + 2 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nessus_pool.config import Config
from tests.pgcluster import binaries_present

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_KNOWN = "cluster" in Config.__struct_fields__


def run_cluster_proof(*extra: str, timeout_s: float = 100) -> tuple[int, dict[str, Any], str]:
    if not binaries_present():
        reason = "no PostgreSQL binaries (the postgresql package)"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set: PostgreSQL tests never skip in CI)")
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "proofs" / "cluster.py"), "--quick", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    output = proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-4000:]
    assert lines, f"cluster.py printed no RESULT line:\n{output}"
    return proc.returncode, json.loads(lines[-1][len("RESULT ") :]), output


def check_common(r: dict[str, Any], out: str) -> None:
    assert r["acknowledged"] == r["tasks"] > 0, out
    assert r["lost"] == 0, out
    assert r["not_ended"] == 0 and r["not_completed"] == 0, out
    assert r["duplicated"] == 0, out
    assert r["scanners_over_cap"] == 0 and r["peak_concurrency_max"] <= 2, out
    assert r["kills"] >= 1 and r["pg_restart_s"] is not None, out
    assert r["clean_exits"] == [0] * r["daemons"], out


@pytest.mark.timeout(110)
def test_one_daemon_survives_kill_9_and_a_postgresql_restart() -> None:
    rc, r, out = run_cluster_proof("--daemons", "1")
    check_common(r, out)
    # the outage was met: submits were refused with a Retry-After, and all got through
    assert r["retry_after_max_s"] is not None and 1 <= r["retry_after_max_s"] <= 10, out
    assert rc == 0, out


@pytest.mark.timeout(110)
@pytest.mark.skipif(
    not CLUSTER_KNOWN,
    reason="[cluster] is unknown to the config loader: several daemons on one database "
    "are refused until issue 14's coordination lands",
)
def test_three_daemons_take_over_a_killed_daemons_scanners() -> None:
    rc, r, out = run_cluster_proof("--daemons", "3")
    check_common(r, out)
    assert r["takeover_max_s"] is not None, out  # a killed daemon held leases
    assert r["takeover_max_s"] <= r["takeover_bound_s"], out
    assert r["status_disagreements"] == 0, out
    assert rc == 0, out
