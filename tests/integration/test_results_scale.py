"""Issue 13: an export with very many hosts. A child process parses and stores a synthetic
export (a tiny generator below: one ReportHost with its properties and plugin 19506 per
host) through ``ingest_export`` into a real SQLite file, and reports its peak RSS (VmHWM);
the peak must not grow with the host count (two sizes compared). Then the daemon starts on
that database and the first status read of the task is timed: it reads the summary row,
never the hosts. The acceptance layer runs the same at 200,000 hosts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config

REPO = Path(__file__).resolve().parents[2]
TASK_ID = "bigscan00001"
#: peak RSS may differ by this much between the two sizes (allocator noise, SQLite page
#: cache); holding the hosts costs about 1 KiB each, so 35,000 more hosts would add ~35 MiB
RSS_SLACK_KIB = 12 * 1024
#: the cursor of the page read after the restart (within the larger size)
PAGE_AT = 39_990
_INFO = (
    "Information about this scan : \n\nNessus version : 10.8.3\nPlugin feed version : "
    "202411300000\nScan type : Normal\nScan name : big\nCredentialed checks : yes, as "
    "'audit' via ssh\nPatch management checks : None\n"
)


def _ip(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def write_export(path: Path, hosts: int) -> None:
    """A NessusClientData_v2 file with ``hosts`` hosts (10.x.y.z), streamed to disk."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" ?>\n<NessusClientData_v2><Report name="big">\n')
        for i in range(hosts):
            ip = _ip(i)
            fh.write(
                f'<ReportHost name="{ip}"><HostProperties>'
                f'<tag name="host-ip">{ip}</tag>'
                '<tag name="HOST_START">Mon Nov 30 10:00:00 2026</tag>'
                '<tag name="HOST_END">Mon Nov 30 10:05:00 2026</tag>'
                "</HostProperties>"
                '<ReportItem port="0" svc_name="general" protocol="tcp" severity="0" '
                'pluginID="19506" pluginName="Nessus Scan Information" '
                'pluginFamily="Settings"><plugin_output>'
                f"{_INFO}</plugin_output></ReportItem>"
                '<ReportItem port="22" svc_name="ssh" protocol="tcp" severity="2" '
                'pluginID="70658" pluginName="SSH Server CBC Mode Ciphers Enabled" '
                'pluginFamily="Misc."><risk_factor>Low</risk_factor></ReportItem>'
                "</ReportHost>\n"
            )
        fh.write("</Report></NessusClientData_v2>\n")


def _child(export: str, storage: str) -> None:
    """Runs in the child: store a completed task and ingest its export; print VmHWM."""
    from nessus_pool.engine.ingest import ingest_export
    from nessus_pool.models import ScanType, Task, TaskStatus
    from nessus_pool.store import Store

    async def main() -> dict[str, Any]:
        store = Store(Path(storage) / "nessus-pool.db")
        await store.open()
        t = Task(
            task_id=TASK_ID,
            seq=1,
            pool="lan",
            name="big",
            targets=["10.0.0.0/8"],
            scan_type=ScanType.AUTHENTICATED,
            status=TaskStatus.COMPLETED,
            export_path=export,
            created_at_ms=1,
            updated_at_ms=1,
            finished_at_ms=2,
        )
        started = time.perf_counter()
        result = await ingest_export(store, t)
        took_s = time.perf_counter() - started
        t.authentication_status = result.validation.authentication_status.value
        await store.save_task(t)
        await store.close()
        return {"hosts": result.summary.hosts_scanned, "ingest_s": took_s}

    out = asyncio.run(main())
    status = Path("/proc/self/status").read_text()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    out["hwm_kib"] = int(hwm.split()[1])
    print(json.dumps(out))


def ingest_in_child(tmp: Path, hosts: int) -> dict[str, Any]:
    export = tmp / f"big-{hosts}.nessus"
    write_export(export, hosts)
    storage = tmp / f"data-{hosts}"
    storage.mkdir()
    code = f"from {__name__} import _child; _child({str(export)!r}, {str(storage)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hosts"] == hosts
    out["storage"] = str(storage)
    out["export_mib"] = export.stat().st_size / 2**20
    return out


async def first_status_read_s(start_daemon: DaemonFactory, tmp: Path, storage: str) -> float:
    """Start the daemon on ``storage`` and time its first status read of the big task."""
    cfg = sim_config(tmp) | {"storage": {"path": storage}}
    d: Daemon = await start_daemon(cfg)
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        async with http.get(f"{d.url}/api/v1/scans/{TASK_ID}") as r:
            took_s = time.perf_counter() - started
            assert r.status == 200, await r.text()
            view = await r.json()
        async with http.get(
            f"{d.url}/api/v1/scans/{TASK_ID}/hosts",
            params={"cursor": str(PAGE_AT), "page_size": "3"},
        ) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
    assert view["results"]["hosts_total"] == view["results"]["summary"]["hosts_scanned"]
    assert view["authentication_status"] == "success"
    assert [h["ip"] for h in page["hosts"]] == [_ip(i) for i in range(PAGE_AT + 1, PAGE_AT + 4)]
    return took_s


async def check_scale(
    tmp_path: Path, start_daemon: DaemonFactory, small: int, large: int
) -> dict[str, Any]:
    a = ingest_in_child(tmp_path, small)
    b = ingest_in_child(tmp_path, large)
    read_s = await first_status_read_s(start_daemon, tmp_path, b["storage"])
    report = {
        "hosts": (small, large),
        "export_mib": (round(a["export_mib"], 1), round(b["export_mib"], 1)),
        "peak_rss_mib": (round(a["hwm_kib"] / 1024, 1), round(b["hwm_kib"] / 1024, 1)),
        "ingest_s": (round(a["ingest_s"], 2), round(b["ingest_s"], 2)),
        "first_status_read_ms": round(read_s * 1000, 1),
    }
    print(f"\nmany hosts: {report}")
    assert b["hwm_kib"] - a["hwm_kib"] < RSS_SLACK_KIB, report
    assert read_s < 0.05, report
    return report


async def test_peak_memory_does_not_grow_with_hosts(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    await check_scale(tmp_path, start_daemon, 2_000, 40_000)
