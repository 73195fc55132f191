"""A real webhook receiver on 127.0.0.1 (aiohttp, port 0) for notification tests: it
verifies each delivery's signature with the README's snippet logic, answers with the status
its script says, and lets a test wait for deliveries with a bound."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nessus_pool.notify.signing import DELIVERY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Delivery:
    delivery_id: str
    event: str
    body: bytes
    signature_ok: bool
    status: int
    headers: dict[str, str]

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str
    #: statuses to answer, in order; 200 once the script is used up
    script: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    #: hold requests (recorded, never answered) while true
    hold: bool = False
    url: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(self.secret, request.headers.get(SIGNATURE_HEADER, ""), body, int(time.time()))
        status = self.script.pop(0) if self.script else 200
        self.deliveries.append(
            Delivery(
                delivery_id=request.headers.get(DELIVERY_HEADER, ""),
                event=request.headers.get("X-Nessus-Pool-Event", ""),
                body=body,
                signature_ok=ok,
                status=status,
                headers=dict(request.headers),
            )
        )
        self._changed.set()
        if self.hold:
            await self._released.wait()  # no answer until close: the client times out or dies
        if 300 <= status < 400:
            raise web.HTTPFound(location="http://169.254.169.254/latest/meta-data/")
        return web.Response(status=status, text="ok" if status < 300 else "boom " * 2000)

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{bound}/hook"
        return self

    async def close(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_for(self, pred: Any, timeout_s: float = 20.0) -> list[Delivery]:
        """Wait until ``pred(deliveries)`` is true (bounded); returns the deliveries."""
        async with asyncio.timeout(timeout_s):
            while not pred(self.deliveries):
                self._changed.clear()
                await self._changed.wait()
        return self.deliveries
