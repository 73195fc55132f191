"""Dispatcher, task runners, scanner health, recovery and reload."""

from nessus_pool.engine.core import Engine, PoolState
from nessus_pool.engine.scanner import ScannerHandle, ScannerSpec

__all__ = ["Engine", "PoolState", "ScannerHandle", "ScannerSpec"]
