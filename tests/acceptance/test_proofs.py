"""The proof scripts (``proofs/*.py``) in their ``--quick`` form: each runs the installed
``nessus-pool`` command (simulator and daemon) as subprocesses and prints a ``RESULT {json}``
line; the promise it checks must hold and the script must exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]


def run_proof(name: str, timeout_s: float = 100) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "proofs" / f"{name}.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    output = proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-4000:]
    assert lines, f"{name} printed no RESULT line:\n{output}"
    return proc.returncode, json.loads(lines[-1][len("RESULT ") :]), output


@pytest.mark.timeout(110)
def test_crash_sigkill_under_load_loses_and_duplicates_nothing() -> None:
    rc, r, out = run_proof("crash")
    assert r["acknowledged"] > 0, out
    assert r["lost"] == 0, out
    assert r["duplicated"] == 0, out
    assert r["completed"] == r["acknowledged"], out
    assert rc == 0, out


@pytest.mark.timeout(110)
def test_faults_nothing_stuck_nothing_duplicated() -> None:
    rc, r, out = run_proof("faults")
    assert r["stuck"] == 0, out
    assert r["lost"] == 0, out
    assert r["duplicated"] == 0, out
    assert r["completed"] > 0, out
    assert rc == 0, out


@pytest.mark.timeout(110)
def test_reload_storm_loses_nothing_and_keeps_serving() -> None:
    rc, r, out = run_proof("reload_storm")
    assert r["lost"] == 0, out
    assert r["duplicated"] == 0, out
    assert r["reloads_applied"] == r["valid_sent"], out
    assert r["reloads_refused"] == r["broken_sent"], out
    assert r["unacknowledged_sighups"] == 0, out
    assert r["healthz_failures"] == 0, out
    assert r["still_serves"], out
    assert r["scanners_match_config"], r["scanners_final"]
    assert rc == 0, out


@pytest.mark.timeout(110)
def test_canary_secrets_appear_nowhere() -> None:
    rc, r, out = run_proof("canary")
    assert r["canary_total"] == 0, out
    assert all(n == 0 for n in r["canary_counts"].values()), out
    assert r["stuck"] == 0, out
    assert rc == 0, out
