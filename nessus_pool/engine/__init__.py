"""Dispatcher, task runners, scanner health, recovery and reload."""

from nessus_pool.engine.core import Engine
from nessus_pool.engine.pool import PoolState
from nessus_pool.engine.scanner import ScannerHandle, ScannerSpec

__all__ = ["Engine", "PoolState", "ScannerHandle", "ScannerSpec"]
