"""nessus-pool: one asyncio daemon that runs fleets of Tenable Nessus scanners."""

__version__ = "0.1.0"
