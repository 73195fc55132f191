"""Config to engine inputs, for the composition root: scanner specs with their secrets
resolved, the pools the engine runs (with the simulator's), and the named credential sets
resolved when a scan needs them."""

from __future__ import annotations

from collections.abc import Callable

from nessus_pool.config import Config, PoolConfig, resolve_secret
from nessus_pool.engine import ScannerSpec
from nessus_pool.logs import register_secret
from nessus_pool.models import SshCredential

SIM_ACCESS_KEY = "sim-access-key"
SIM_SECRET_KEY = "sim-secret-key"


def scanner_specs(
    cfg: Config, sim_urls: list[str], sim_ca_file: str | None = None
) -> list[ScannerSpec]:
    """Resolve secrets and turn config into engine specs (the embedded simulators at
    ``sim_urls``, pinned to ``sim_ca_file`` when they serve HTTPS). Raises ConfigError."""
    specs: list[ScannerSpec] = []
    for i, pool in enumerate(cfg.pools):
        for j, sc in enumerate(pool.scanners):
            at = f"$.pools[{i}].scanners[{j}]"
            access_key, secret_key, username, password = (
                resolve_secret(getattr(sc, k), f"{at}.{k.replace('_', '-')}")
                for k in ("access_key", "secret_key", "username", "password")
            )
            for v in (access_key, secret_key, password):
                register_secret(v)
            specs.append(
                ScannerSpec(
                    scanner_id=sc.id,
                    pool=pool.name,
                    url=sc.url,
                    capacity=sc.max_concurrent_scans,
                    verify_tls=sc.verify_tls,
                    ca_file=sc.ca_file,
                    timeout_s=sc.timeout_s,
                    enabled=sc.enabled,
                    remote_scanner_id=sc.remote_scanner_id,
                    folder_id=sc.folder_id,
                    access_key=access_key,
                    secret_key=secret_key,
                    username=username,
                    password=password,
                )
            )
    if cfg.simulator is not None:
        for k, url in enumerate(sim_urls, start=1):
            specs.append(
                ScannerSpec(
                    scanner_id=f"sim-{k}",
                    pool=cfg.simulator.pool,
                    url=url,
                    capacity=cfg.simulator.max_concurrent_scans,
                    access_key=SIM_ACCESS_KEY,
                    secret_key=SIM_SECRET_KEY,
                    simulated=True,
                    timeout_s=10.0,
                    ca_file=sim_ca_file,
                )
            )
    return specs


def effective_pools(cfg: Config) -> list[PoolConfig]:
    pools = list(cfg.pools)
    if cfg.simulator is not None and cfg.pool(cfg.simulator.pool) is None:
        pools.append(
            PoolConfig(
                name=cfg.simulator.pool,
                poll_interval_s=max(0.05, min(2.0, cfg.simulator.scan_seconds / 5)),
            )
        )
    return pools


def credential_resolver(get_config: Callable[[], Config]) -> Callable[[str], SshCredential | None]:
    """Resolve a named credential set when a scan needs it (secrets are read then, so a
    rotated file or env var is picked up without a reload)."""

    def resolve(name: str) -> SshCredential | None:
        cfg = get_config()
        cred = cfg.credentials.get(name)
        if cred is None:
            return None
        at = f"$.credentials.{name}"
        values = {
            k: resolve_secret(getattr(cred, k), f"{at}.{k}")
            for k in ("password", "private_key", "private_key_passphrase", "escalation_password")
        }
        for v in values.values():
            register_secret(v)
        return SshCredential(
            username=cred.username,
            elevate_privileges_with=cred.elevate_privileges_with,
            escalation_account=cred.escalation_account,
            **values,
        )

    return resolve
