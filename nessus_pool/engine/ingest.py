"""Turn a downloaded export into stored findings and results, off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from nessus_pool.models import Task
from nessus_pool.results.parser import Finding, ScanResults, parse_export
from nessus_pool.results.types import HostResult, StoredResults
from nessus_pool.store import HostRow, SplitFindingRow, TaskStore
from nessus_pool.store.base import TEXT_FIELDS, text_id_of

_enc = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
FindingRow = tuple[int, int, int, str, bytes]
#: per-host results per stored batch (one commit each; a host's row is about 300 bytes)
HOST_BATCH_SIZE = 2000
#: findings per stored batch (one commit each), and the text (plugin outputs, descriptions)
#: that ends a batch sooner; with one batch being written while the next is parsed, about
#: two batches are in memory at once whatever the export's size
BATCH_SIZE = 2000
BATCH_CHARS = 8 * 1024 * 1024


def finding_rows(findings: list[Finding], start_seq: int) -> list[FindingRow]:
    enc = _enc.encode
    return [
        (seq, f.severity, f.plugin_id, f.host, enc(f)) for seq, f in enumerate(findings, start_seq)
    ]


class _Own(msgspec.Struct, kw_only=True, gc=False):
    """What is a finding's own: where it was found, and the plugin's output there."""

    host: str
    host_ip: str | None
    host_fqdn: str | None
    port: int
    protocol: str
    svc_name: str
    severity: int
    plugin_id: int
    plugin_output: str | None


class _Texts(msgspec.Struct, kw_only=True, gc=False):
    """What a finding shares with the other findings of its plugin (stored once a task)."""

    plugin_name: str
    plugin_family: str
    risk_factor: str | None
    cvss3_base_score: float | None
    cvss_base_score: float | None
    cves: list[str]
    cwes: list[int]
    exploit_available: bool
    synopsis: str | None
    description: str | None
    solution: str | None
    see_also: str | None


assert _Texts.__struct_fields__ == TEXT_FIELDS
assert {*_Own.__struct_fields__, *TEXT_FIELDS} == set(Finding.__struct_fields__)


#: text sets remembered by value per ingest (a lookup spares encoding and hashing one);
#: past this many the memory is cleared, so that an export of distinct texts stays bounded
TEXT_CACHE_ENTRIES = 4096
TextKey = tuple[Any, ...]


def split_rows(
    findings: list[Finding], start_seq: int, seen: dict[TextKey, int]
) -> tuple[list[SplitFindingRow], list[tuple[int, bytes]]]:
    """Findings as rows of their own fields, and the text sets not stored yet for this
    task; ``seen`` (text set -> id) is the caller's, kept across batches."""
    enc = _enc.encode
    rows: list[SplitFindingRow] = []
    texts: list[tuple[int, bytes]] = []
    for seq, f in enumerate(findings, start_seq):
        key = (
            f.plugin_name,
            f.plugin_family,
            f.risk_factor,
            f.cvss3_base_score,
            f.cvss_base_score,
            tuple(f.cves),
            tuple(f.cwes),
            f.exploit_available,
            f.synopsis,
            f.description,
            f.solution,
            f.see_also,
        )
        text_id = seen.get(key)
        if text_id is None:
            text = enc(
                _Texts(
                    plugin_name=f.plugin_name,
                    plugin_family=f.plugin_family,
                    risk_factor=f.risk_factor,
                    cvss3_base_score=f.cvss3_base_score,
                    cvss_base_score=f.cvss_base_score,
                    cves=f.cves,
                    cwes=f.cwes,
                    exploit_available=f.exploit_available,
                    synopsis=f.synopsis,
                    description=f.description,
                    solution=f.solution,
                    see_also=f.see_also,
                )
            )
            text_id = text_id_of(text)
            if len(seen) >= TEXT_CACHE_ENTRIES:
                seen.clear()  # forgotten texts are stored again: the same id, replaced
            seen[key] = text_id
            texts.append((text_id, text))
        own = _Own(
            host=f.host,
            host_ip=f.host_ip,
            host_fqdn=f.host_fqdn,
            port=f.port,
            protocol=f.protocol,
            svc_name=f.svc_name,
            severity=f.severity,
            plugin_id=f.plugin_id,
            plugin_output=f.plugin_output,
        )
        rows.append((seq, f.severity, f.plugin_id, f.host, text_id, enc(own)))
    return rows, texts


def host_rows(hosts: list[HostResult], start_seq: int) -> list[HostRow]:
    enc = _json.encode
    rows: list[HostRow] = []
    for seq, h in enumerate(hosts, start_seq):
        b = h.severity_breakdown
        rows.append(
            (
                seq,
                h.name,
                h.authentication_status.value,
                b.critical,
                b.high,
                b.medium,
                b.low,
                b.info,
                enc(h),
            )
        )
    return rows


class _Stopped(Exception):
    """Raised in the parser thread to abandon the parse once the caller has gone."""


class _BatchWriter:
    """Runs in the parser thread: encodes each batch (of findings or of hosts) and hands it
    to the store on the event loop, keeping exactly one batch in flight, so parsing the next
    batch overlaps the commit of this one and memory stays flat. A failed write surfaces at
    the next batch."""

    def __init__(self, store: TaskStore, task_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.task_id = task_id
        self.loop = loop
        self.seq = 0
        self.host_seq = 0
        #: the text sets stored so far for this task (bounded: TEXT_CACHE_ENTRIES)
        self.texts: dict[TextKey, int] = {}
        self.in_flight: concurrent.futures.Future[None] | None = None
        self.stopped = False
        self._lock = threading.Lock()

    def __call__(self, batch: list[Finding]) -> None:
        rows, texts = split_rows(batch, self.seq, self.texts)
        self.seq += len(rows)
        batch.clear()  # ours now (parse_export hands over each list): free the texts early
        self._submit(lambda: self.store.add_split_findings(self.task_id, rows, texts))

    def hosts(self, batch: list[HostResult]) -> None:
        rows = host_rows(batch, self.host_seq)
        self.host_seq += len(rows)
        batch.clear()
        self._submit(lambda: self.store.add_host_results(self.task_id, rows))

    def _submit(self, write: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.wait()
        with self._lock:  # held only to check and submit, never across a wait
            if self.stopped:
                raise _Stopped
            self.in_flight = asyncio.run_coroutine_threadsafe(write(), self.loop)

    def wait(self) -> None:
        """Wait for the batch in flight (raising its error), from the parser thread."""
        fut = self.in_flight
        if fut is not None:
            fut.result()
            self.in_flight = None

    async def settle(self) -> None:
        """From the event loop after a failed or cancelled parse: stop the parser thread at
        its next batch and let the batch in flight finish, ignoring its outcome."""
        with self._lock:
            self.stopped = True
            fut = self.in_flight
        if fut is not None:
            done = asyncio.wrap_future(fut)
            await asyncio.wait([done])
            if not done.cancelled():
                done.exception()  # retrieved: the parse's own error is the one raised


async def ingest_export(store: TaskStore, t: Task) -> ScanResults:
    """Parse ``t.export_path`` in a worker thread; findings and per-host results are
    written to the store in batches as the parser streams them (one batch committing while
    the next is parsed, so memory stays flat whatever the host count); the results row
    holds only the summary and validation (:class:`StoredResults`), as JSON. The returned
    results have no ``hosts``: they are in the store."""
    assert t.export_path is not None
    export_path = Path(t.export_path)
    await store.clear_results(t.task_id)
    writer = _BatchWriter(store, t.task_id, asyncio.get_running_loop())

    def parse() -> ScanResults:
        result = parse_export(
            export_path,
            scan_type=t.scan_type,
            targets=t.targets,
            on_findings=writer,
            on_hosts=writer.hosts,
            batch_size=BATCH_SIZE,
            batch_chars=BATCH_CHARS,
            host_batch_size=HOST_BATCH_SIZE,
        )
        writer.wait()
        return result

    try:
        result = await asyncio.to_thread(parse)
    except BaseException:
        await asyncio.shield(writer.settle())
        raise
    stored = StoredResults(
        summary=result.summary,
        validation=result.validation,
        hosts_total=result.summary.hosts_scanned,
        auth_plugins_found=result.auth_plugins_found,
    )
    await store.save_results(t.task_id, _json.encode(stored))
    return result
