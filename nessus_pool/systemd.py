"""The systemd notify protocol: ``READY=1``, ``RELOADING=1``, ``STOPPING=1`` and the
watchdog's ``WATCHDOG=1``. Every call is a no-op outside systemd (no ``$NOTIFY_SOCKET``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket


def sd_notify(message: str) -> None:
    """systemd notify protocol; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())


async def watchdog(interval_s: float) -> None:
    """Tell systemd the event loop still turns (WatchdogSec=)."""
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
