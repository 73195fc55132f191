"""Exporting a scan as a ``.nessus`` file: ask, wait until ready, stream to disk.

``POST /scans/{id}/export`` answers at once with a file id; the export is built in the
background and ``GET .../export/{file}/status`` says ``loading``, then ``ready`` or ``error``
(an HTTP 200 alone does not mean ready). Exports expire on the scanner: a 404 while waiting
or downloading means "ask again", which we do at most :data:`EXPORT_REASKS` times.
"""

from __future__ import annotations

import asyncio
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
    max_bytes: int,
    poll_interval_s: float,
) -> ExportResult:
    """See :meth:`NessusClient.export_scan`."""
    deadline = t.clock.monotonic_s() + deadline_s
    for ask in range(1, EXPORT_REASKS + 2):
        file_id = await _request_export(t, scan_id)
        try:
            await _wait_ready(t, scan_id, file_id, deadline, deadline_s, poll_interval_s)
            return await _download_retrying(t, scan_id, file_id, dest, max_bytes, poll_interval_s)
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


async def _request_export(t: Transport, scan_id: int) -> int | str:
    try:
        reply = await t.request_json(
            "POST", f"/scans/{scan_id}/export", _EP_EXPORT, json={"format": "nessus"}
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
    deadline: float,
    deadline_s: float,
    poll_interval_s: float,
) -> None:
    path = _export_path(scan_id, file_id, "status")
    while True:
        # a status poll is idempotent: a transient failure is just a missed poll
        try:
            reply: Any = await t.request_json("GET", path, _EP_STATUS)
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
        remaining_s = deadline - t.clock.monotonic_s()
        if remaining_s <= 0:
            raise ExportError(
                f"the export was not ready within {deadline_s:g}s (last status: {status!r})",
                scanner_id=t.scanner_id,
                endpoint=_EP_STATUS,
            )
        await t.clock.sleep(min(poll_interval_s, remaining_s))


async def _download_retrying(
    t: Transport,
    scan_id: int,
    file_id: int | str,
    dest: Path,
    max_bytes: int,
    poll_interval_s: float,
    tries: int = 3,
) -> ExportResult:
    """The download is idempotent: a dropped or failed transfer is tried again."""
    for attempt in range(1, tries + 1):
        try:
            return await _download(t, scan_id, file_id, dest, max_bytes)
        except ScannerError as exc:
            if not exc.transient or attempt == tries:
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


async def _download(
    t: Transport, scan_id: int, file_id: int | str, dest: Path, max_bytes: int
) -> ExportResult:
    part = dest.with_suffix(".part")
    try:
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        fh: IO[bytes] = await asyncio.to_thread(part.open, "wb")
    except OSError as exc:
        raise StorageError(f"cannot write the export to {part}: {exc}") from exc
    hasher = hashlib.sha256()
    size = 0
    try:
        async with t.open(
            "GET",
            _export_path(scan_id, file_id, "download"),
            _EP_DOWNLOAD,
            client_timeout=t.download_timeout(),
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
    except OSError as exc:  # our own disk, not the scanner
        _discard(fh, part)
        raise StorageError(f"cannot write the export to {part}: {exc}") from exc
    except BaseException:
        _discard(fh, part)
        raise
    return ExportResult(path=str(dest), size_bytes=size, sha256=hasher.hexdigest(), file_id=file_id)


def _discard(fh: IO[bytes], part: Path) -> None:
    fh.close()
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
