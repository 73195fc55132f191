"""The built-in Nessus simulator: real aiohttp apps answering the Nessus REST API, with
lazily clocked scan lifecycles, injected faults and generated ``.nessus`` exports.

Imports flow one way: ``state`` (constants, errors, scans and runs) <- ``policies`` (saved
policies) <- ``scanner`` (one scanner's state and Nessus operations, no HTTP) <- ``views`` and
``catalog`` (JSON bodies) <- ``httputil`` (shared request/answer helpers) <- ``catalog_routes``
<- ``app`` (the scan routes, auth and fault middlewares) <- ``server`` (sockets, TLS, outages,
clusters) <- ``cli``. ``export`` (with ``plugins``), ``reports`` (CSV, HTML), ``tls``,
``targets``, ``options`` and ``ports`` sit below all of these."""

from nessus_pool.simulator.cli import add_simulate_parser, run_simulate
from nessus_pool.simulator.export import generate_export, write_export
from nessus_pool.simulator.options import Faults, ScanSummary, SimulatorOptions, SimulatorStats
from nessus_pool.simulator.server import SimulatedScanner, SimulatorCluster, start_simulators

__all__ = [
    "Faults",
    "ScanSummary",
    "SimulatedScanner",
    "SimulatorCluster",
    "SimulatorOptions",
    "SimulatorStats",
    "add_simulate_parser",
    "generate_export",
    "run_simulate",
    "start_simulators",
    "write_export",
]
