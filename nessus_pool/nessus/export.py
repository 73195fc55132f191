"""Exporting a scan as a ``.nessus`` file: ask, wait until ready, stream to disk.

``POST /scans/{id}/export`` answers at once with a file id; the export is built in the
background and ``GET .../export/{file}/status`` says ``loading``, then ``ready`` or ``error``
(an HTTP 200 alone does not mean ready). Exports expire on the scanner: a 404 while waiting
or downloading means "ask again", which we do at most :data:`EXPORT_REASKS` times.

One deadline covers the whole export: asking, every status poll, every download attempt and
every byte of it (a scanner dripping one byte every few seconds is cut off at the deadline).
It is checked on the injected clock between steps and per chunk, and is also each HTTP
call's time limit, so a call that hangs cannot outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from nessus_pool.errors import (
    ExportError,
    ExportTooLargeError,
    PermanentScannerError,
    RemoteNotFoundError,
    ScannerError,
    StorageError,
)
from nessus_pool.nessus.transport import Transport
from nessus_pool.nessus.types import ExportResult

log = logging.getLogger("nessus_pool.nessus")

#: how many times an export that expired (404) is asked for again before giving up
EXPORT_REASKS = 2
_CHUNK_BYTES = 256 * 1024
_EP_EXPORT = "POST /scans/{id}/export"
_EP_STATUS = "GET /scans/{id}/export/{file_id}/status"
_EP_DOWNLOAD = "GET /scans/{id}/export/{file_id}/download"


async def export_scan(
    t: Transport,
    scan_id: int,
    dest: Path,
    *,
    deadline_s: float,
    deadline_at_s: float | None = None,
    max_bytes: int,
    poll_interval_s: float,
) -> ExportResult:
    """See :meth:`NessusClient.export_scan`."""
    at_s = t.clock.monotonic_s() + deadline_s
    if deadline_at_s is not None and deadline_at_s < at_s:
        at_s = deadline_at_s
    dl = _Deadline(t, at_s, deadline_s)
    for ask in range(1, EXPORT_REASKS + 2):
        file_id = await _request_export(t, scan_id, dl)
        try:
            await _wait_ready(t, scan_id, file_id, dl, poll_interval_s)
            return await _download_retrying(
                t, scan_id, file_id, dest, max_bytes, poll_interval_s, dl
            )
        except RemoteNotFoundError as exc:
            if ask > EXPORT_REASKS:
                raise ExportError(
                    f"the export expired on the scanner {ask} times before it was downloaded",
                    scanner_id=t.scanner_id,
                    endpoint=exc.endpoint,
                    status=exc.status,
                ) from exc
            log.info(
                "export expired on the scanner; asking for a new one",
                extra={"event": "export_expired", "scanner": t.scanner_id, "scan_id": scan_id},
            )
    raise AssertionError("unreachable")


class _Deadline:
    """The one deadline of an export, on the transport's clock."""

    def __init__(self, t: Transport, at_s: float, deadline_s: float) -> None:
        self.t = t
        self.at_s = at_s
        self.deadline_s = deadline_s

    def left_s(self) -> float:
        return self.at_s - self.t.clock.monotonic_s()

    def check(self, endpoint: str, doing: str) -> float:
        """The seconds left, or ExportError once there are none."""
        left_s = self.left_s()
        if left_s <= 0:
            raise ExportError(
                f"the export did not finish within its {self.deadline_s:g}s deadline ({doing})",
                scanner_id=self.t.scanner_id,
                endpoint=endpoint,
            )
        return left_s


async def _request_export(t: Transport, scan_id: int, dl: _Deadline) -> int | str:
    try:
        reply = await t.request_json(
            "POST",
            f"/scans/{scan_id}/export",
            _EP_EXPORT,
            json={"format": "nessus"},
            timeout_s=dl.check(_EP_EXPORT, "asking for it"),
        )
    except PermanentScannerError as exc:
        if exc.status != 409:
            raise
        raise ExportError(
            "the scan is still running and Nessus cannot export running scans; "
            f"try again when it has ended ({exc.message})",
            scanner_id=t.scanner_id,
            endpoint=_EP_EXPORT,
            status=409,
        ) from exc
    file_id = reply.get("file") if isinstance(reply, dict) else None
    if isinstance(file_id, bool) or not isinstance(file_id, int | str) or file_id == "":
        raise ExportError(
            "the export answer carried no file id", scanner_id=t.scanner_id, endpoint=_EP_EXPORT
        )
    return file_id


def _export_path(scan_id: int, file_id: int | str, what: str) -> str:
    return f"/scans/{scan_id}/export/{quote(str(file_id), safe='')}/{what}"


async def _wait_ready(
    t: Transport,
    scan_id: int,
    file_id: int | str,
    dl: _Deadline,
    poll_interval_s: float,
) -> None:
    path = _export_path(scan_id, file_id, "status")
    status: Any = None
    while True:
        left_s = dl.check(_EP_STATUS, f"last status: {status!r}")
        # a status poll is idempotent: a transient failure is just a missed poll
        try:
            reply: Any = await t.request_json("GET", path, _EP_STATUS, timeout_s=left_s)
        except ScannerError as exc:
            if not exc.transient or isinstance(exc, RemoteNotFoundError):
                raise
            reply = {"status": f"unknown ({exc.code})"}
        status = reply.get("status") if isinstance(reply, dict) else None
        if status == "ready":
            return
        if status == "error":
            raise ExportError(
                "the scanner failed to generate the export",
                scanner_id=t.scanner_id,
                endpoint=_EP_STATUS,
            )
        left_s = dl.check(_EP_STATUS, f"not ready, last status: {status!r}")
        await t.clock.sleep(min(poll_interval_s, left_s))


async def _download_retrying(
    t: Transport,
    scan_id: int,
    file_id: int | str,
    dest: Path,
    max_bytes: int,
    poll_interval_s: float,
    dl: _Deadline,
    tries: int = 3,
) -> ExportResult:
    """The download is idempotent: a dropped or failed transfer is tried again, within the
    export's deadline."""
    for attempt in range(1, tries + 1):
        try:
            return await _download(t, scan_id, file_id, dest, max_bytes, dl)
        except ScannerError as exc:
            if not exc.transient or attempt == tries or dl.left_s() <= poll_interval_s:
                raise
            log.info(
                "export download failed; trying again",
                extra={
                    "event": "export_download_retry",
                    "scanner": t.scanner_id,
                    "scan_id": scan_id,
                    "error": str(exc),
                },
            )
            await t.clock.sleep(poll_interval_s)
    raise AssertionError("unreachable")


def _open_part(part: Path) -> IO[bytes]:
    """The file-write seam: where the export's bytes go (tests inject a full disk here)."""
    return part.open("wb")


def _storage_error(part: Path, exc: OSError) -> StorageError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
    return StorageError(f"cannot write the export to {part}: {reason}")


async def _download(
    t: Transport, scan_id: int, file_id: int | str, dest: Path, max_bytes: int, dl: _Deadline
) -> ExportResult:
    part = dest.with_suffix(".part")
    left_s = dl.check(_EP_DOWNLOAD, "before the download")
    try:
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        fh: IO[bytes] = await asyncio.to_thread(_open_part, part)
    except OSError as exc:
        raise _storage_error(part, exc) from exc
    hasher = hashlib.sha256()
    size = 0
    try:
        async with t.open(
            "GET",
            _export_path(scan_id, file_id, "download"),
            _EP_DOWNLOAD,
            client_timeout=t.download_timeout(left_s),
            extra_headers={"Accept": "*/*"},
        ) as resp:
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise _too_large(t, max_bytes, resp.content_length)
            # small chunk writes go to the page cache quickly; the slow part (fsync) is
            # done in a thread below
            async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(t, max_bytes, None)
                dl.check(_EP_DOWNLOAD, f"{size} bytes downloaded")
                hasher.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise ExportError(
                "the scanner sent an empty export", scanner_id=t.scanner_id, endpoint=_EP_DOWNLOAD
            )
        await asyncio.to_thread(_commit, fh, part, dest)
    except ScannerError as exc:
        _discard(fh, part)
        if exc.status == 409 and not exc.transient:
            raise ExportError(
                f"the scanner refused the download: {exc.message}",
                scanner_id=t.scanner_id,
                endpoint=_EP_DOWNLOAD,
                status=409,
            ) from exc
        raise
    except OSError as exc:  # our own disk, not the scanner (ENOSPC, EIO, EDQUOT)
        _discard(fh, part)
        raise _storage_error(part, exc) from exc
    except BaseException:
        _discard(fh, part)
        raise
    return ExportResult(path=str(dest), size_bytes=size, sha256=hasher.hexdigest(), file_id=file_id)


def _discard(fh: IO[bytes], part: Path) -> None:
    """Drop a partial export. Never raises: closing flushes the buffer, which fails again
    on a full disk, and that must not hide the error being handled."""
    with contextlib.suppress(OSError):
        fh.close()
    with contextlib.suppress(OSError):
        part.unlink(missing_ok=True)


def _too_large(t: Transport, max_bytes: int, announced: int | None) -> ExportTooLargeError:
    size = f" ({announced} bytes)" if announced is not None else ""
    return ExportTooLargeError(
        f"the export is larger than the {max_bytes}-byte cap{size}",
        scanner_id=t.scanner_id,
        endpoint=_EP_DOWNLOAD,
    )


def _commit(fh: IO[bytes], part: Path, dest: Path) -> None:
    """Make the file durable, then put it in place atomically."""
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    os.replace(part, dest)
    try:
        dir_fd = os.open(dest.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
