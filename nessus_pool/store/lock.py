"""The storage directory: created private (0700, earlier files tightened) and held by one
daemon at a time through an exclusive ``flock`` on ``<storage>/.lock``, taken by the daemon
for its life and by ``storage migrate`` while it copies."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from nessus_pool.errors import LockedError, StorageError

#: the daemon's start-up logs this (the component, not the module, names a logger)
log = logging.getLogger("nessus_pool.daemon")


class StorageLock:
    """One engine per storage directory: an exclusive ``flock`` on ``<storage>/.lock``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockedError(
                f"storage directory {self.path.parent} is in use by nessus-pool ({holder}); "
                "stop it first, or point this one at another storage path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def prepare_storage(directory: Path) -> None:
    """Create the storage directory 0700 and tighten what an earlier run outside the systemd
    unit (no ``UMask=0077``) left readable by others: the directory, the database and its
    WAL, exports. Raises StorageError naming the path when it cannot be written."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise StorageError(
            f"storage directory {directory} is not writable ({exc.strerror or exc}); "
            "fix its permissions or set storage.path to a writable directory"
        ) from None
    fixed = 0
    exports = directory / "exports"
    paths = [directory, exports, *sorted(directory.glob("nessus-pool.db*"))]
    if exports.is_dir():
        paths += [p for p in exports.iterdir() if p.is_file()]
    for path in paths:
        with contextlib.suppress(OSError):
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                path.chmod(mode & 0o700)
                fixed += 1
    if fixed:
        log.warning(
            "storage files were readable by other users; permissions tightened",
            extra={"event": "storage_permissions_fixed", "path": str(directory), "files": fixed},
        )
