"""One daemon per storage directory: an exclusive ``flock`` on ``<storage>/.lock``, taken
by the daemon for its life and by ``storage migrate`` while it copies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from nessus_pool.errors import LockedError


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
