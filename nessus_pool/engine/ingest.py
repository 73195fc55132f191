"""Turn a downloaded export into stored findings and results, off the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from nessus_pool.models import Task
from nessus_pool.results.parser import Finding, ScanResults, parse_export
from nessus_pool.store import Store

_enc = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
FindingRow = tuple[int, int, int, str, bytes]


def finding_rows(findings: list[Finding], start_seq: int) -> list[FindingRow]:
    return [
        (start_seq + i, f.severity, f.plugin_id, f.host, _enc.encode(f))
        for i, f in enumerate(findings)
    ]


async def ingest_export(store: Store, t: Task) -> ScanResults:
    """Parse ``t.export_path`` in a worker thread; findings are written to the store in
    batches as the parser streams them (the thread waits for each batch's commit, so memory
    stays flat); results are stored as JSON."""
    assert t.export_path is not None
    loop = asyncio.get_running_loop()
    await store.replace_findings(t.task_id, [])
    seq = 0

    def on_findings(batch: list[Finding]) -> None:
        nonlocal seq
        rows = finding_rows(batch, seq)
        seq += len(rows)
        asyncio.run_coroutine_threadsafe(store.add_findings(t.task_id, rows), loop).result()

    result = await asyncio.to_thread(
        parse_export,
        Path(t.export_path),
        scan_type=t.scan_type,
        targets=t.targets,
        on_findings=on_findings,
        batch_size=2000,
    )
    await store.save_results(t.task_id, _json.encode(result))
    return result
