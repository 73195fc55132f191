"""proofs/attack.py in its --quick form: the front-door attacks of issue 13 against live
daemons (installed command, 127.0.0.1). Every attack must hold; the numbers it prints (5xx,
loop stall, RSS peak, log volume) are checked against bounds here too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(110)
def test_front_door_attacks_all_hold() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "proofs" / "attack.py"), "--quick", "--front-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    out = proc.stdout[-6000:] + "\n--- stderr ---\n" + proc.stderr[-3000:]
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, out
    result = json.loads(lines[-1][len("RESULT ") :])
    attacks = result["attacks"]
    assert set(attacks) >= {
        "csrf_simple_requests",
        "dns_rebinding_and_origin",
        "empty_and_lookalike_tokens",
        "malformed_requests_with_token",
        "slow_connections",
        "storage_permissions",
        "read_only_storage",
    }, out
    for name, a in attacks.items():
        assert a["held"], (name, out)
        assert a["five_xx"] == 0, (name, out)
        assert a["max_stall_ms"] < 2000, (name, out)
    assert attacks["csrf_simple_requests"]["requests"] >= 200
    slow = attacks["slow_connections"]
    assert slow["still_open_at_end"] == 0 and slow["tracebacks"] == 0, out
    assert slow["opened"] > slow["nofile_limit"], out
    assert slow["answered_503_at_once"] > 0, out
    # the cap holds: no more slow clients kept than connections allowed
    assert 0 < slow["cut_off_by_header_timeout"] <= slow["connection_cap"], out
    leak = attacks["malformed_requests_with_token"]
    assert leak["token_in_log"] == 0 and leak["non_json_lines"] == 0, out
    assert proc.returncode == 0, out
