"""README's "Try it with curl" block, run as written (bash + curl + python3) against a real
daemon: every command must answer 2xx (curl -f), the cancel must hit a scan that is still
running or queued, and the results must come from the scan the walkthrough submitted."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from nessus_pool.simulator import SimulatorOptions, start_simulators
from tests.conftest import DaemonFactory, sim_config

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Try it with curl") :]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m is not None, "the curl walkthrough has no sh block"
    return m.group(1)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash")), reason="needs curl")
async def test_the_curl_walkthrough_runs_as_written(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    # README's daemon: the shipped config's simulator (2 scanners x 2 slots, pool lan);
    # scans of 3 s instead of 20 s keep the cancel on a running scan and the test short
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=3.0))
    script = walkthrough()
    assert "localhost:8835" in script
    port = d.url.rsplit(":", 1)[1]
    script = script.replace("localhost:8835", f"127.0.0.1:{port}")
    # -f: an HTTP error (the 409 of canceling an ended scan) fails the command
    script = script.replace("curl -s ", "curl -sSf ")
    traced = "set -euo pipefail\nset -x\n" + script + '\necho "CANCEL_ID=$CANCEL_ID"\n'
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        traced,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 90)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert re.search(r'"status":"(cancelling|canceled)"', out), out
    assert '"items":[' in out and '"page_size":10' in out
    assert (tmp_path / "scan.nessus").read_bytes()[:200].find(b"NessusClientData_v2") >= 0
    cancel_id = out.rsplit("CANCEL_ID=", 1)[1].strip()
    assert d.service is not None
    assert (await d.service.wait_for(cancel_id, 30)).status == "canceled"


def sh_block(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m is not None, f"{heading} has no sh block"
    return m.group(1)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash")), reason="needs curl")
async def test_the_curl_walkthroughs_wait_ends_on_any_final_status(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    # the wait loop grepped for "completed" only and spun forever on a failed scan
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=30.0))
    assert d.service is not None
    sub = await d.service.submit(SubmitRequest(targets=["10.0.0.1"]))
    await d.service.cancel(sub.task_id)
    assert (await d.service.wait_for(sub.task_id, 30)).status == "canceled"
    wait = next(line for line in walkthrough().splitlines() if line.startswith("until "))
    port = d.url.rsplit(":", 1)[1]
    script = f"TASK_ID={sub.task_id}\n" + wait.replace("localhost:8835", f"127.0.0.1:{port}")
    proc = await asyncio.create_subprocess_exec("bash", "-euo", "pipefail", "-c", script)
    try:
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:  # still looping: the test failed; leave no orphan
            proc.kill()
            await proc.wait()


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash")), reason="needs curl")
async def test_the_simulator_walkthrough_runs_as_written(tmp_path: Path) -> None:
    # README's `nessus-pool simulate --port 18834` (HTTPS, its CA pinned), with 1 s scans
    script = sh_block("## The built-in simulator")
    default_ca = "~/.local/state/nessus-pool/simulator-tls/ca.pem"
    assert f"CA={default_ca}" in script and "B=https://127.0.0.1:18834" in script
    options = SimulatorOptions(seed=7, scan_seconds=1.0)
    async with await start_simulators(1, options=options, tls_dir=tmp_path / "tls") as cluster:
        assert cluster.ca_file is not None
        url = cluster.scanners[0].url
        script = script.replace(default_ca, str(cluster.ca_file))
        traced = "set -euo pipefail\nset -x\n" + script.replace("https://127.0.0.1:18834", url)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            traced,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert (tmp_path / "demo.nessus").read_bytes().find(b"<NessusClientData_v2") >= 0
    assert not (tmp_path / "download").exists()
    # the summary of the downloaded export: 10.0.0.0/30's two hosts and db.example.com
    assert re.search(r"^hosts scanned\s+3$", out, re.M), out
    assert re.search(r"^authentication\s+success$", out, re.M), out
    assert '"launched":1' in out
    assert "['Tuned TCP ports', 'Linux CIS audit']" in out
    # the CSV export carries the same hosts as the .nessus
    nessus_hosts = set(
        re.findall(r'<ReportHost name="([^"]+)"', (tmp_path / "demo.nessus").read_text())
    )
    csv_rows = list(csv.DictReader(io.StringIO((tmp_path / "demo.csv").read_text())))
    assert len(nessus_hosts) == 3 and {r["Host"] for r in csv_rows} == nessus_hosts
