"""Issue 13 #4-#7: a hostile scanner (a real aiohttp app on 127.0.0.1, driven by the real
client and the real daemon) cannot strand a scan: every bad answer becomes a typed error,
the task ends in a clear state, the slot is freed and nothing hangs."""

from __future__ import annotations

import errno
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from nessus_pool import logs
from nessus_pool.api.mcp.tasks import status_message
from nessus_pool.clock import FakeClock
from nessus_pool.daemon import Daemon
from nessus_pool.errors import ExportError, ScannerError, StorageError, TransientScannerError
from nessus_pool.logs import JsonFormatter
from nessus_pool.models import TERMINAL_STATUSES, ScanSpec, ScanType, status_values
from nessus_pool.nessus import NessusClient
from nessus_pool.nessus import export as export_module
from nessus_pool.nessus import transport as transport_module
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory
from tests.hostile_scanner import HostileScanner

KEYS = {"access-key": "hostile-access-key", "secret-key": "hostile-secret-key"}


@pytest.fixture
async def hostile() -> AsyncIterator[HostileScanner]:
    scanner = await HostileScanner().start()
    yield scanner
    await scanner.close()


def hostile_config(tmp_path: Path, url: str, **pool: Any) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "data")},
        "pools": [
            {
                "name": "lan",
                "poll-interval-s": 0.05,
                "probe-interval-s": 0.2,
                "scanner-lost-after-s": 0.5,
                "export-deadline-s": 1.0,
                "retry-base-delay-s": 0.01,
                "retry-max-delay-s": 0.05,
                "max-attempts": 2,
                "scanners": [{"id": "h1", "url": url, "timeout-s": 5.0, **KEYS}],
                **pool,
            }
        ],
    }


async def _run_one(d: Daemon, req: SubmitRequest) -> Any:
    assert d.service is not None and d.engine is not None
    sub = await d.service.submit(req)
    view = await d.service.wait_for(sub.task_id, 20)
    assert view.status in status_values(TERMINAL_STATUSES), view
    # the slot is free again: nothing holds the scanner
    assert d.engine.scanners["h1"].slots.active == {}
    return view


@pytest.mark.parametrize("attack", ["deep_status", "huge_status", "disconnect"])
async def test_hostile_status_answers_end_the_task_and_free_the_slot(
    attack: str,
    tmp_path: Path,
    hostile: HostileScanner,
    start_daemon: DaemonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "MAX_JSON_BYTES", 1024 * 1024)
    hostile.attack = attack
    hostile.huge_bytes = 8 * 1024 * 1024
    d: Daemon = await start_daemon(hostile_config(tmp_path, hostile.url))
    view = await _run_one(d, SubmitRequest(targets="10.0.0.1"))
    assert (view.status, view.reason) == ("failed", "scanner_lost"), view
    assert hostile.calls.count("details") >= 2  # polled again after a bad answer


async def test_deep_json_is_a_typed_transient_error(hostile: HostileScanner) -> None:
    async with NessusClient("h1", hostile.url, access_key="a" * 8, secret_key="b" * 8) as c:
        scan = await c.create_scan(_spec())
        hostile.attack = "deep_status"
        with pytest.raises(TransientScannerError, match="nested too deeply"):
            await c.scan_details(scan.id)
        hostile.attack = "huge_status"
        hostile.huge_bytes = transport_module.MAX_JSON_BYTES + 1024 * 1024
        with pytest.raises(TransientScannerError, match="larger than the 33554432-byte cap"):
            await c.scan_details(scan.id)


def _spec() -> ScanSpec:
    return ScanSpec(name="hostile", targets=["10.0.0.1"], template="basic")


async def test_a_dripping_download_stops_at_the_export_deadline(
    hostile: HostileScanner, tmp_path: Path
) -> None:
    clock = FakeClock()

    async def three_seconds_per_byte() -> None:
        await clock.advance(3.0)

    hostile.attack = "drip_export"
    hostile.on_drip = three_seconds_per_byte
    async with NessusClient(
        "h1", hostile.url, access_key="a" * 8, secret_key="b" * 8, clock=clock
    ) as c:
        scan = await c.create_scan(_spec())
        await c.launch_scan(scan.id)
        started_s = clock.monotonic_s()
        with pytest.raises(ExportError, match="within its 40s deadline"):
            await c.export_scan(scan.id, tmp_path / "x.nessus", deadline_s=40.0)
        # one deadline for the whole export: at most one drip (3 s) past it, not 60 s
        assert clock.monotonic_s() - started_s <= 40.0 + 3.0
        assert hostile.bytes_sent < 20
    assert not (tmp_path / "x.part").exists()


async def test_error_text_is_redacted_before_it_is_cut(
    tmp_path: Path, hostile: HostileScanner, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(hostile_config(tmp_path, hostile.url))
    hostile.attack = "error_secret"
    for password, offset in (("CANARY-ESC-2b2ca3f19e", 190), ("CANARY  with   runs\tof ws", 20)):
        hostile.echo, hostile.echo_offset = password, offset
        view = await _run_one(
            d,
            SubmitRequest(
                targets="10.0.0.1",
                scan_type=ScanType.AUTHENTICATED_PRIVILEGED,
                ssh_username="audit",
                ssh_password="ssh-" + password,
                escalation_password=password,
            ),
        )
        assert (view.status, view.reason) == ("failed", "scanner_refused")
        error = view.error or ""
        assert "<redacted>" in error, error
        assert "CANARY" not in error, error
    for f in Path(d.config.storage.path).rglob("*"):
        if f.is_file():
            assert b"CANARY" not in f.read_bytes(), f


class _FullDisk(io.BytesIO):
    """A file on a disk that is full: every write fails, and so does the flush on close."""

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_full_disk_during_export_is_a_storage_error(
    hostile: HostileScanner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "_open_part", lambda part: _FullDisk())
    async with NessusClient("h1", hostile.url, access_key="a" * 8, secret_key="b" * 8) as c:
        scan = await c.create_scan(_spec())
        await c.launch_scan(scan.id)
        with pytest.raises(StorageError, match="the disk is full") as err:
            await c.export_scan(scan.id, tmp_path / "x.nessus", deadline_s=5.0)
    assert not isinstance(err.value, ScannerError)  # our disk, not the scanner's fault


async def test_a_full_disk_during_export_ends_the_task_and_frees_the_slot(
    tmp_path: Path,
    hostile: HostileScanner,
    start_daemon: DaemonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export_module, "_open_part", lambda part: _FullDisk())
    d: Daemon = await start_daemon(hostile_config(tmp_path, hostile.url))
    view = await _run_one(d, SubmitRequest(targets="10.0.0.1"))
    # not left "exporting": the engine retries the typed storage error until the export
    # deadline (1 s here), then dead-letters the task, its slot freed
    assert (view.status, view.reason) == ("failed", "export_storage_failed"), view
    assert "the disk is full" in (view.error or ""), view


@pytest.mark.parametrize(
    "encode",
    [
        lambda p: json.dumps(p)[1:-1],
        lambda p: quote(p, safe=""),
        lambda p: quote_plus(p),
    ],
    ids=["json-escaped", "quote", "quote_plus"],
)
async def test_an_echoed_password_in_escaped_or_encoded_form_is_redacted(
    tmp_path: Path,
    hostile: HostileScanner,
    start_daemon: DaemonFactory,
    caplog: pytest.LogCaptureFixture,
    encode: Callable[[str], str],
) -> None:
    """A scanner echoing its request body gives the password back JSON-escaped
    (``CANARY\\"q\\\\b``) or percent-encoded: that form must not reach the task's error, the
    database (WAL included), the MCP status message or a log line."""
    caplog.set_level(logging.DEBUG, logger="nessus_pool")
    d: Daemon = await start_daemon(hostile_config(tmp_path, hostile.url))
    password = 'CANARY"q\\b-' + secrets.token_hex(6) + " &x/y"
    hostile.attack, hostile.echo, hostile.echo_offset = "error_secret", encode(password), 20
    assert hostile.echo != password  # the attack really sends another form
    view = await _run_one(
        d,
        SubmitRequest(
            targets="10.0.0.1",
            scan_type=ScanType.AUTHENTICATED,
            ssh_username="audit",
            ssh_password=password,
        ),
    )
    assert (view.status, view.reason) == ("failed", "scanner_refused")
    error = view.error or ""
    assert "<redacted>" in error and "CANARY" not in error, error
    assert "CANARY" not in status_message(view, 0)
    for f in Path(d.config.storage.path).rglob("*"):
        if f.is_file():
            assert b"CANARY" not in f.read_bytes(), f
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert lines and not [line for line in lines if "CANARY" in line]


def test_every_form_of_a_registered_secret_is_redacted_in_logs() -> None:
    secret = 'CANARY"q\\b-' + secrets.token_hex(6) + " &x/y"
    logs.register_secret(secret, source="test")
    for form in (secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)):
        assert logs.redact(f"said {form} here") == "said [REDACTED] here", form
