"""Hostname resolution for scope checks: bounded in time, never raises."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

Resolver = Callable[[list[str]], Awaitable[dict[str, list[str]]]]


async def resolve_hosts(hosts: list[str], timeout_s: float = 2.0) -> dict[str, list[str]]:
    """Addresses of each hostname; an unresolvable or slow name maps to []."""
    loop = asyncio.get_running_loop()

    async def one(host: str) -> list[str]:
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout_s
            )
        except (OSError, TimeoutError, UnicodeError):
            return []
        return sorted({str(info[4][0]) for info in infos})

    results = await asyncio.gather(*(one(h) for h in hosts))
    return dict(zip(hosts, results, strict=True))
