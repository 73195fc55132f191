"""The ``nessus-pool simulate`` subcommand (wired in by ``nessus_pool.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from nessus_pool.clock import SystemClock
from nessus_pool.gc_policy import daemon_runtime, full_collections
from nessus_pool.simulator.options import SimulatorOptions
from nessus_pool.simulator.server import start_simulators
from nessus_pool.simulator.tls import SimulatorTLSError, default_tls_dir


def add_simulate_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "simulate",
        help="run simulated Nessus scanners (no licence)",
        description="Serve the Nessus REST API from simulated scanners.",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=18834,
        help="first port; scanner i listens on port+i (default 18834)",
    )
    p.add_argument("--scanners", type=int, default=1, help="how many scanners (default 1)")
    p.add_argument(
        "--scan-seconds", type=float, default=20.0, help="how long a scan runs (default 20)"
    )
    p.add_argument(
        "--no-scan-api",
        action="store_true",
        help="restricted licence: scan create/launch answer 412",
    )
    p.add_argument("--seed", type=int, default=None, help="deterministic faults and findings")
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="serve plain HTTP instead of HTTPS (real Nessus only speaks HTTPS)",
    )
    p.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        help="folder of the simulator's CA (ca.pem, reused across runs) and server "
        f"certificate (default {default_tls_dir()})",
    )


async def run_simulate(args: argparse.Namespace) -> int:
    """Start the scanners, print one line each (and the CA file to pin, over HTTPS), run
    until SIGINT/SIGTERM or cancellation. Exit code 2 when the TLS folder cannot be used."""
    options = SimulatorOptions(
        scan_seconds=args.scan_seconds, scan_api=not args.no_scan_api, seed=args.seed
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)  # the handler only sets a flag
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    tls_dir = None if args.plain_http else (args.tls_dir or default_tls_dir())
    try:
        try:
            cluster = await start_simulators(
                args.scanners, host=args.host, port=args.port, options=options, tls_dir=tls_dir
            )
        except SimulatorTLSError as exc:
            print(f"nessus-pool simulate: --tls-dir: {exc}", file=sys.stderr)
            return 2
        async with cluster, _Collector(stop):
            if cluster.ca_file is not None:
                print(
                    f"ca-file {cluster.ca_file}  (pin it: curl --cacert FILE; ca-file = FILE)",
                    flush=True,
                )
            for scanner in cluster.scanners:
                print(
                    f"{scanner.name} {scanner.url}  api-keys {options.access_key}/"
                    f"{options.secret_key}  user {options.username}/{options.password}  "
                    f"target-ssh {options.ssh_username}/{options.ssh_password}  "
                    f"scan-api {'on' if options.scan_api else 'off (412)'}",
                    flush=True,
                )
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    print("simulators stopped", file=sys.stderr)
    return 0


class _Collector:
    """The daemon's garbage-collection policy (:mod:`nessus_pool.gc_policy`) for the
    simulator's process: what is loaded now is frozen, automatic full collections are off
    and one runs every 300 s. One process serving bench/scale.py's 500 scanners otherwise
    stopped 1-2 times a minute for 226-350 ms (gc callbacks), holding every request to any
    scanner: a pause no real scanner makes. (Whether those pauses set the bench's launch p99
    was not shown: one pair with them off gave 109 ms against 72 ms with them.) The
    collecting task ending early stops the simulator (it cannot, short of a bug: then say
    so). With it, the daemon's thread switch interval (:func:`~nessus_pool.gc_policy.
    daemon_runtime`): an export being built in a thread holds the loop's GIL 0.5 ms, not 5."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.task: asyncio.Task[None] | None = None
        self.restore: Callable[[], None] | None = None

    async def __aenter__(self) -> None:
        gc.collect()
        gc.freeze()
        self.restore = daemon_runtime()
        self.task = asyncio.create_task(full_collections(SystemClock()), name="sim:gc")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            print(f"simulators: the collector ended: {task.exception()!r}", file=sys.stderr)
            self.stop.set()

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.remove_done_callback(self._ended)
            self.task.cancel()
        if self.restore is not None:
            self.restore()
        gc.unfreeze()
