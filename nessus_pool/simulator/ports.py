"""Free loopback ports for simulators (and daemons) started later on known ports."""

from __future__ import annotations

import random
import socket

_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def free_port_range(count: int = 1, host: str = "127.0.0.1") -> int:
    """A base port with ``count`` consecutive free ports (``nessus-pool simulate --port``
    puts scanner i on base+i).

    Chosen below the kernel's ephemeral range (32768 and up on Linux), which outgoing
    connections draw from: a port picked with bind(0) could be taken by one of them between
    this check and the server's bind (CI saw it happen)."""
    low, high = 20000, 32000
    try:
        with open(_EPHEMERAL_RANGE) as fh:
            first_ephemeral = int(fh.read().split()[0])
        if first_ephemeral - 1000 > low:
            high = first_ephemeral
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(_bindable(host, p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {low}-{high}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
