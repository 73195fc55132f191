"""README's simulator walkthrough ("The built-in simulator") runs as written, over HTTPS with
the simulator's CA pinned, against a simulator started the way ``nessus-pool simulate`` does."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nessus_pool.simulator import SimulatorOptions, start_simulators

README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The built-in simulator") :]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m is not None, "the simulator section has no sh block"
    return m.group(1)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash")), reason="needs curl")
async def test_the_simulator_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = walkthrough()
    default_ca = "~/.local/state/nessus-pool/simulator-tls/ca.pem"
    assert f"CA={default_ca}" in script and "B=https://127.0.0.1:18834" in script
    async with await start_simulators(
        1, options=SimulatorOptions(scan_seconds=2.0, seed=5), tls_dir=tmp_path / "tls"
    ) as sims:
        assert sims.ca_file is not None
        script = script.replace(default_ca, str(sims.ca_file))
        script = script.replace("https://127.0.0.1:18834", sims.scanners[0].url)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            "set -euo pipefail\n" + script.replace("curl -s ", "curl -sSf "),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
        stats = sims.scanners[0].stats()
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "['Tuned TCP ports', 'Linux CIS audit']" in out
    assert (stats.created, stats.launched) == (1, 1)
    nessus = (tmp_path / "demo_5.nessus").read_bytes()
    assert b"as 'audit' via ssh" in nessus
    rows = list(csv.DictReader(io.StringIO((tmp_path / "demo_5.csv").read_text())))
    hosts = {h.get("name") for h in ET.fromstring(nessus).iter("ReportHost")}
    assert len(hosts) == 3 and {r["Host"] for r in rows} == hosts
