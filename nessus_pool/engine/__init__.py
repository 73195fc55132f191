"""The engine: one owner of task state (core), dispatch, runners, scanner health, recovery,
reload and supervision. See ``core`` for the map."""

from nessus_pool.engine.core import Engine
from nessus_pool.engine.pool import PoolState
from nessus_pool.engine.scanner import ScannerHandle, ScannerSpec

__all__ = ["Engine", "PoolState", "ScannerHandle", "ScannerSpec"]
