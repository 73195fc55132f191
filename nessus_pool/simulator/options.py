"""Configuration and reporting Structs of the simulator: options, faults and stats."""

from __future__ import annotations

import msgspec


class SimulatorOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How every simulated scanner behaves. Time values are in the injected clock's seconds."""

    #: pending -> running -> completed takes this long (paused time excluded)
    scan_seconds: float = 20.0
    #: False = restricted licence (Nessus Professional/Essentials): scan writes answer 412
    scan_api: bool = True
    #: makes faults and generated findings deterministic
    seed: int | None = None
    access_key: str = "sim-access-key"
    secret_key: str = "sim-secret-key"
    username: str = "nessus"
    password: str = "nessus"
    #: simulated targets accept these SSH credentials
    ssh_username: str = "audit"
    ssh_password: str = "audit"
    #: target expansion bound (CIDRs and ranges are cut here)
    max_hosts_per_scan: int = 256
    #: after this an export file id answers 404
    export_ttl_s: float = 600.0


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Faults injected into one scanner's API; all default off. Rates are fractions 0..1."""

    #: fraction of API calls answering 500/502/503
    error_rate: float = 0.0
    #: added to every API call (slept on the injected clock)
    latency_s: float = 0.0
    #: fraction of calls that never answer (until the client gives up or the scanner goes down)
    hang_rate: float = 0.0
    #: fraction of calls whose connection is dropped without a response
    drop_rate: float = 0.0
    #: fraction answering 429 with ``Retry-After: 1``
    rate_limit_rate: float = 0.0
    #: invalidate all session tokens now (the next call with an old token answers 401)
    expire_sessions: bool = False
    #: fraction of exports whose status goes to "error"
    export_error_rate: float = 0.0
    #: fraction of launched scans that end "aborted" instead of "completed"
    abort_rate: float = 0.0
    #: go down now and come back after this long
    down_for_s: float = 0.0


class ScanSummary(msgspec.Struct, kw_only=True):
    id: int
    name: str
    status: str


class SimulatorStats(msgspec.Struct, kw_only=True):
    """What one scanner saw, for assertions in tests and demos."""

    #: scans created through ``POST /scans`` (foreign scans excluded)
    created: int
    #: launches through ``POST /scans/{id}/launch`` or ``launch_now``
    launched: int
    #: the most runs ever active (pending .. stopping, paused included) at one time
    peak_running: int
    #: runs active now
    running: int
    #: how many distinct scan names were created more than once
    duplicates: int
    scans: list[ScanSummary]
