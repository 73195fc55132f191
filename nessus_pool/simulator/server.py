"""Listening sockets of simulated scanners: one scanner's socket (up, down, outage) and a
cluster of them. This is the only module that builds the HTTP app."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from types import TracebackType

from aiohttp import web

from nessus_pool.clock import Clock, SystemClock
from nessus_pool.simulator.app import build_app
from nessus_pool.simulator.options import Faults, SimulatorOptions
from nessus_pool.simulator.scanner import ScannerState
from nessus_pool.simulator.tls import load_or_create


class SimulatedScanner(ScannerState):
    """One scanner's state and operations (:class:`ScannerState`) served by its aiohttp app on
    ``host:port``; :meth:`start` listens, :meth:`close` stops for good."""

    def __init__(
        self,
        name: str,
        *,
        options: SimulatorOptions,
        clock: Clock,
        index: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(name, options=options, clock=clock, index=index)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.url = ""
        self.app: web.Application = build_app(self)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.release = asyncio.Event()
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        await self._site.start()
        self.port = int(self._runner.addresses[-1][1])
        scheme = "http" if self.ssl_context is None else "https"
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._site is not None

    async def go_down(self) -> None:
        """Stop listening and drop open connections; state is kept."""
        if self._site is None or self._runner is None:
            return
        await self._site.stop()
        self._site = None
        if self.release is not None:  # wake hung handlers so that they drop their connection
            self.release.set()
            self.release = asyncio.Event()
        if self._runner.server is not None:
            await self._runner.server.shutdown(0.5)

    async def come_up(self) -> None:
        """Listen again on the same port."""
        if self._site is None and self._runner is not None:
            await self._listen()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.release is not None:
            self.release.set()
        if self._runner is not None:
            self._abort_connections()
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    def _abort_connections(self) -> None:
        """Drop open connections at once. A TLS connection closed gracefully waits (up to
        30 s) for the client's close_notify, which HTTP clients rarely send; a fake server
        that stops for good has nothing to flush, and the wait would outlive its loop."""
        server = self._runner.server if self._runner is not None else None
        if server is None:
            return
        for handler in server.connections:
            if handler.transport is not None:
                handler.transport.abort()

    def set_faults(self, faults: Faults) -> None:
        """Replace the active faults. ``expire_sessions`` and ``down_for_s`` act once, now."""
        super().set_faults(faults)
        if faults.down_for_s > 0:
            task = asyncio.get_running_loop().create_task(
                self._outage(faults.down_for_s), name=f"sim-outage:{self.name}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # loud, via the loop's handler

    async def _outage(self, down_for_s: float) -> None:
        await self.go_down()
        await self.clock.sleep(down_for_s)
        await self.come_up()


class SimulatorCluster:
    """Running simulated scanners; close with :meth:`close` or ``async with``. ``ca_file`` is
    the CA that signed their certificates (None when they serve plain HTTP)."""

    def __init__(self, scanners: list[SimulatedScanner], ca_file: Path | None = None) -> None:
        self.scanners = scanners
        self.ca_file = ca_file

    async def close(self) -> None:
        for scanner in self.scanners:
            await scanner.close()

    async def __aenter__(self) -> SimulatorCluster:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_simulators(
    count: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    options: SimulatorOptions | None = None,
    clock: Clock | None = None,
    tls_dir: Path | None = None,
) -> SimulatorCluster:
    """Start ``count`` scanners named ``sim-1``.. on ``host``: each on its own ephemeral port
    when ``port`` is 0, else on ``port``..``port+count-1``. All share ``clock``. With
    ``tls_dir`` they serve HTTPS with a certificate signed by the CA kept there (created on
    first use; pin ``cluster.ca_file``), else plain HTTP."""
    options = options or SimulatorOptions()
    clock = clock or SystemClock()
    ssl_context: ssl.SSLContext | None = None
    ca_file: Path | None = None
    if tls_dir is not None:
        tls = await asyncio.to_thread(load_or_create, tls_dir, [host])
        ssl_context, ca_file = tls.server_context(), tls.ca_file
    scanners: list[SimulatedScanner] = []
    try:
        for index in range(count):
            scanner = SimulatedScanner(
                f"sim-{index + 1}",
                options=options,
                clock=clock,
                index=index,
                host=host,
                port=port + index if port else 0,
                ssl_context=ssl_context,
            )
            scanners.append(scanner)
            await scanner.start()
    except BaseException:
        for scanner in scanners:
            await scanner.close()
        raise
    return SimulatorCluster(scanners, ca_file)
