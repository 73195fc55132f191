"""Starting and stopping a cluster of simulated scanners."""

from __future__ import annotations

from types import TracebackType

from nessus_pool.clock import Clock, SystemClock
from nessus_pool.simulator.options import SimulatorOptions
from nessus_pool.simulator.scanner import SimulatedScanner


class SimulatorCluster:
    """Running simulated scanners; close with :meth:`close` or ``async with``."""

    def __init__(self, scanners: list[SimulatedScanner]) -> None:
        self.scanners = scanners

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
) -> SimulatorCluster:
    """Start ``count`` scanners named ``sim-1``.. on ``host``: each on its own ephemeral port
    when ``port`` is 0, else on ``port``..``port+count-1``. All share ``clock``."""
    options = options or SimulatorOptions()
    clock = clock or SystemClock()
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
            )
            scanners.append(scanner)
            await scanner.start()
    except BaseException:
        for scanner in scanners:
            await scanner.close()
        raise
    return SimulatorCluster(scanners)
