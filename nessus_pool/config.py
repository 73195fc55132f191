"""Configuration: TOML -> validated msgspec Structs, secret references, and diff for SIGHUP.

Pure: no I/O except reading the file and resolving secret references (env vars, files).
Every error names the path in the document (``$.pools[0].scanners[1].max-concurrent-scans``)
and says how to fix it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from nessus_pool.errors import ConfigError, ValidationError
from nessus_pool.models import Escalation, ScanType
from nessus_pool.msgspec_errors import accepted_values
from nessus_pool.notify.ssrf import parse_allow_hosts, url_problem
from nessus_pool.schedules import Overlap, ScheduleSpec, check_schedule
from nessus_pool.targets import parse_targets
from nessus_pool.windows import Calendar, Window, WindowError, build_window

DEFAULT_CONFIG_PATH = "nessus-pool.toml"
CONFIG_ENV = "NESSUS_POOL_CONFIG"

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class SecretSource(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A secret kept out of the config file: ``{ env = "VAR" }`` or ``{ file = "/path" }``
    (systemd ``LoadCredential=`` files live under ``$CREDENTIALS_DIRECTORY``)."""

    env: str | None = None
    file: str | None = None


SecretRef = str | SecretSource


class _Base(msgspec.Struct, forbid_unknown_fields=True, rename="kebab"):
    pass


#: what one address may take in a JSON submit body (see Config.body_limit_bytes)
_BYTES_PER_ADDRESS = 24


class ServerConfig(_Base):
    listen: str = "127.0.0.1:8835"
    #: tokens with read-only access to the admin API and MCP
    read_tokens: list[SecretRef] = []
    #: tokens with full access (submit, cancel, drain, reload, DLQ)
    admin_tokens: list[SecretRef] = []
    max_body_bytes: PositiveInt = 1024 * 1024
    #: Origins allowed to call /mcp from a browser (others get 403)
    allowed_origins: list[str] = []
    #: on SIGTERM, how long exports and result ingestion in flight may run before they are
    #: cancelled (dispatching stops at once; every other state is already committed)
    shutdown_grace_s: PositiveFloat = 20.0
    #: handshake-era MCP sessions (``Mcp-Session-Id``) kept at once, and per bearer token (a
    #: token past its quota loses its own least recently used session, never another's)
    mcp_max_sessions: PositiveInt = 10_000
    mcp_sessions_per_token: PositiveInt = 1_000


class StorageConfig(_Base):
    #: the SQLite file, exports and the directory lock live here (exports too with ``url``)
    path: str = "./nessus-pool-data"
    max_export_bytes: PositiveInt = 2 * 1024**3
    #: ``postgresql://user@host:port/db``: tasks, events and results in PostgreSQL instead
    #: of SQLite; the password goes in ``password``, never in the URL
    url: str | None = None
    password: SecretRef | None = None


class ClusterConfig(_Base):
    """Several daemons sharing pools on one PostgreSQL database (needs ``storage.url``)."""

    #: this daemon's name in the cluster; default: the host name and 8 hex digits of the
    #: storage path (stable across restarts, distinct for two daemons on one host, which
    #: need two storage folders anyway)
    daemon_id: Name | None = None
    #: a scanner lease lasts this long without renewal; a dead daemon's scanners move to
    #: another daemon after at most this long
    lease_s: Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)] = 15.0
    #: heartbeat and lease renewal period; default lease-s / 3
    heartbeat_s: Annotated[float, msgspec.Meta(ge=0.2, le=1200.0)] | None = None
    #: scanner ids (or globs: ``dmz-*``) this daemon may own; default every scanner it has
    zone: list[str] | None = None

    @property
    def heartbeat_period_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3


class SimulatorConfig(_Base):
    """Built-in simulated scanners started in-process; their scanners join ``pool``."""

    scanners: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 2
    scan_seconds: PositiveFloat = 20.0
    pool: Name = "lan"
    max_concurrent_scans: PositiveInt = 2
    scan_api: bool = True
    seed: int | None = None


class MaintenanceWindowConfig(_Base):
    """``[[pools.maintenance-windows]]`` (or under a scanner): no launch inside it.
    Recurring (``days``, ``from``, ``to``, ``timezone``), cron-based (``cron``,
    ``duration-s``, ``timezone``) or one-off (``start``, ``end``)."""

    days: list[str] | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    timezone: str = "UTC"
    start: str | None = None
    end: str | None = None
    #: cron-based: a 5-field expression for when each window starts, and how long it lasts
    cron: str | None = None
    duration_s: float | None = None
    #: what a scan already running when the window starts does: run on, pause until the
    #: window ends, or stop and run again after it
    on_window: Literal["finish", "pause", "stop"] = "finish"
    name: str | None = None

    def window(self) -> Window:
        """The calendar form; :class:`WindowError` naming the field if it cannot work."""
        return build_window(
            days=self.days,
            from_=self.from_,
            to=self.to,
            timezone=self.timezone,
            start=self.start,
            end=self.end,
            cron=self.cron,
            duration_s=self.duration_s,
            on_window=self.on_window,
            name=self.name,
        )


def calendar_of(*windows: list[MaintenanceWindowConfig]) -> Calendar:
    """One calendar of every window listed (a scanner's: its pool's and its own)."""
    return Calendar(tuple(w.window() for ws in windows for w in ws))


class ScannerConfig(_Base):
    id: Name
    url: str
    access_key: SecretRef | None = None
    secret_key: SecretRef | None = None
    username: SecretRef | None = None
    password: SecretRef | None = None
    max_concurrent_scans: PositiveInt = 2
    verify_tls: bool = True
    ca_file: str | None = None
    timeout_s: PositiveFloat = 30.0
    enabled: bool = True
    #: Nessus Manager: the id of the linked scanner or agent group to use, if any
    remote_scanner_id: int | None = None
    folder_id: int | None = None
    maintenance_windows: list[MaintenanceWindowConfig] = []


class PoolConfig(_Base):
    name: Name
    scanners: list[ScannerConfig] = []
    max_queued: PositiveInt = 1000
    max_scan_duration_s: PositiveFloat = 86400.0
    max_attempts: PositiveInt = 3
    #: backoff between retries of a failed scanner call: full jitter up to
    #: min(retry-max-delay-s, retry-base-delay-s * 2**(try-1))
    retry_base_delay_s: PositiveFloat = 1.0
    retry_max_delay_s: PositiveFloat = 60.0
    #: a scanner's circuit opens after this many consecutive failures...
    breaker_failures: PositiveInt = 5
    #: ...and lets one probe through after this long
    breaker_reset_s: PositiveFloat = 30.0
    poll_interval_s: PositiveFloat = 10.0
    #: how often each scanner's health and licence are probed
    probe_interval_s: PositiveFloat = 30.0
    #: a running scan whose scanner has not answered for this long is dead-lettered
    scanner_lost_after_s: PositiveFloat = 3600.0
    #: overall deadline for one export (ask, poll, download)
    export_deadline_s: PositiveFloat = 1800.0
    template: str = "basic"
    #: a saved Nessus policy (by name) used when a request names neither policy nor template
    default_policy: str | None = None
    #: CIDRs / addresses and hostname patterns (``*.corp.example``) this pool may scan
    allowed_targets: list[str] = []
    #: never scanned, even when allowed
    denied_targets: list[str] = []
    #: no scan launches inside these (see README "Maintenance windows and pause/resume")
    maintenance_windows: list[MaintenanceWindowConfig] = []


_CREDENTIAL_SECRETS = ("password", "private_key", "private_key_passphrase", "escalation_password")


class CredentialConfig(_Base):
    """A named SSH credential set; tools and the API refer to it by name."""

    username: str
    password: SecretRef | None = None
    private_key: SecretRef | None = None
    private_key_passphrase: SecretRef | None = None
    elevate_privileges_with: Escalation = Escalation.NOTHING
    escalation_account: str | None = None
    escalation_password: SecretRef | None = None


class SecurityConfig(_Base):
    #: allow ssh_username / ssh_password in requests (kept in memory only, never on disk)
    allow_inline_credentials: bool = True
    #: deny by default: every pool with a real scanner must list allowed-targets
    require_scope: bool = False
    #: refuse a scan whose targets cover more addresses than this
    max_addresses_per_task: PositiveInt = 65536


class HousekeepingConfig(_Base):
    """Retention. Never touches queued or running tasks, never deletes a scan on a scanner
    that nessus-pool did not create."""

    interval_s: PositiveFloat = 3600.0
    #: finished tasks, their findings and export files are deleted this long after the end
    finished_ttl_s: PositiveFloat = 30 * 86400.0
    #: dead letters are kept longer, for the operators
    dead_letter_ttl_s: PositiveFloat = 90 * 86400.0
    #: delete the scan on the scanner once its export is downloaded
    delete_remote_scans: bool = False


class LoggingConfig(_Base):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


NotificationEvent = Literal[
    "completed", "failed", "dead_lettered", "authentication_failed", "findings", "new_findings"
]
Severity = Literal["info", "low", "medium", "high", "critical"]


class NotificationConfig(_Base):
    """A webhook target (``[[notifications]]``): events of the listed pools (all when
    ``pools`` is left out) are POSTed to ``url``, signed with ``secret``."""

    name: Name
    url: str
    secret: SecretRef
    events: Annotated[list[NotificationEvent], msgspec.Meta(min_length=1)]
    pools: list[str] | None = None
    min_severity: Severity = "high"
    format: Literal["json", "slack"] = "json"
    #: hosts (names, addresses or networks) this target may reach although they are not
    #: https-and-public or loopback
    allow_hosts: list[str] = []
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    #: attempts before a delivery is ``failed`` (listed and retryable)
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    retry_base_delay_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 5.0
    retry_max_delay_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 3600.0


class ScheduleConfig(_Base):
    """A recurring scan (``[[schedules]]``); read-only through the API. See
    :class:`nessus_pool.schedules.ScheduleSpec` for the meaning of each field."""

    name: Name
    targets: str | list[str]
    pool: str | None = None
    scan_type: ScanType = ScanType.UNTRUSTED
    credential: str | None = None
    template: str | None = None
    policy: str | None = None
    priority: int = 0
    description: str = ""
    cron: str | None = None
    every_s: int | None = None
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    enabled: bool = True
    overlap: Overlap = "skip"
    catch_up_s: int = 3600

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(**msgspec.structs.asdict(self))


class Config(_Base):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    cluster: ClusterConfig | None = None
    simulator: SimulatorConfig | None = None
    pools: list[PoolConfig] = []
    credentials: dict[str, CredentialConfig] = {}
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    housekeeping: HousekeepingConfig = msgspec.field(default_factory=HousekeepingConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    notifications: list[NotificationConfig] = []
    schedules: list[ScheduleConfig] = []

    @property
    def body_limit_bytes(self) -> int:
        """The largest request body taken: ``server.max-body-bytes``, raised to what a submit
        of ``security.max-addresses-per-task`` addresses needs, so the address limit, not the
        body cap, refuses a big list, with its own message. Each address is counted at 24
        bytes: the longest IPv4 spelling (15), its quotes, a comma and some spacing."""
        need = self.security.max_addresses_per_task * _BYTES_PER_ADDRESS + 64 * 1024
        return max(self.server.max_body_bytes, need)

    def pool(self, name: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.name == name), None)


class LoadedConfig(msgspec.Struct, frozen=True):
    """A validated config plus where it came from and the warnings it raised."""

    config: Config
    source: str
    warnings: list[str]


# --- loading ---------------------------------------------------------------------------------

_FIX_HINTS = (
    (">= 1", "use 1 or more"),
    ("Object contains unknown field", "remove it or check its spelling against README"),
    ("Expected `int`", "use a whole number"),
    ("Expected `float`", "use a number"),
    ("Expected `str`", "use a quoted string"),
    ("Expected `bool`", "use true or false"),
    ("Expected `array`", "use a list: [ ... ]"),
    ("must match pattern", "use letters, digits, '.', '_' or '-', starting with a letter/digit"),
    ("Object missing required field", "add it"),
)


def _hint(message: str) -> str:
    for needle, fix in _FIX_HINTS:
        if needle in message:
            return f"{message} (fix: {fix})"
    return message


def _path_of(message: str) -> str | None:
    m = re.search(r"at `(\$[^`]*)`", message)
    return m.group(1) if m else None


def config_path_from(arg: str | None) -> str:
    """``--config`` wins, then ``$NESSUS_POOL_CONFIG``, then ./nessus-pool.toml."""
    return arg or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def parse_config(
    text: str, source: str = "<string>", base_dir: str | os.PathLike[str] | None = None
) -> LoadedConfig:
    """Parse and validate TOML text. Raises :class:`ConfigError` naming the path and fix.

    With ``base_dir`` (the config file's folder), relative paths in the file are made
    absolute against it; see :func:`absolute_paths`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        config = msgspec.convert(raw, Config, str_keys=True)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        accepted = accepted_values(Config, msg)
        if accepted:
            msg += f" (accepted: {', '.join(accepted)})"
        raise ConfigError(f"{source}: {_hint(msg)}", path=_path_of(msg)) from None
    if base_dir is not None:
        config = absolute_paths(config, Path(base_dir))
    warnings = validate(config)
    return LoadedConfig(config=config, source=source, warnings=warnings)


def absolute_paths(config: Config, base_dir: Path) -> Config:
    """Relative paths in the file, resolved against its folder (as nginx and systemd do), not
    against the working directory: ``storage.path``, every scanner's ``ca-file``, and secret
    ``{ file = ... }`` references. A relative secret file is left as it is while
    ``$CREDENTIALS_DIRECTORY`` is set: systemd's ``LoadCredential=`` names are read from there."""
    base = base_dir.absolute()

    def path(value: str) -> str:
        return value if os.path.isabs(value) else os.path.normpath(base / value)

    def secret(ref: SecretRef | None) -> SecretRef | None:
        if not isinstance(ref, SecretSource) or ref.file is None or os.path.isabs(ref.file):
            return ref
        if os.environ.get("CREDENTIALS_DIRECTORY"):
            return ref
        return SecretSource(file=path(ref.file))

    def secrets_of(struct: _Base, keys: tuple[str, ...]) -> dict[str, SecretRef | None]:
        return {k: secret(getattr(struct, k)) for k in keys}

    def scanner(sc: ScannerConfig) -> ScannerConfig:
        return msgspec.structs.replace(
            sc,
            ca_file=None if sc.ca_file is None else path(sc.ca_file),
            **secrets_of(sc, ("access_key", "secret_key", "username", "password")),
        )

    server = config.server
    return msgspec.structs.replace(
        config,
        storage=msgspec.structs.replace(
            config.storage,
            path=path(config.storage.path),
            password=secret(config.storage.password),
        ),
        pools=[
            msgspec.structs.replace(p, scanners=[scanner(sc) for sc in p.scanners])
            for p in config.pools
        ],
        credentials={
            name: msgspec.structs.replace(cred, **secrets_of(cred, _CREDENTIAL_SECRETS))
            for name, cred in config.credentials.items()
        },
        server=msgspec.structs.replace(
            server,
            read_tokens=[secret(t) or t for t in server.read_tokens],
            admin_tokens=[secret(t) or t for t in server.admin_tokens],
        ),
        notifications=[
            msgspec.structs.replace(n, secret=secret(n.secret) or n.secret)
            for n in config.notifications
        ],
    )


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file (fix: pass --config, set {CONFIG_ENV}, "
            "or run `nessus-pool config init`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_config(text, str(p), base_dir=p.parent)


def _err(path: str, message: str) -> ConfigError:
    return ConfigError(f"{message} - at `{path}`", path=path)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port)."""
    m = re.fullmatch(r"\[(?P<h6>[^\]]+)\]:(?P<p6>\d+)|(?P<h>[^:\[\]]+):(?P<p>\d+)", listen)
    if not m:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8835")
    host = m.group("h6") or m.group("h")
    port = int(m.group("p6") or m.group("p"))
    if not 0 <= port <= 65535:
        raise ValueError("port must be 0..65535")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(config: Config) -> list[str]:
    """Cross-field checks msgspec cannot express. Returns warnings; raises ConfigError."""
    warnings: list[str] = []
    try:
        host, _ = parse_listen(config.server.listen)
    except ValueError as exc:
        raise _err("$.server.listen", f"{exc}") from None
    if not is_loopback(host) and not config.server.admin_tokens:
        raise _err(
            "$.server.admin-tokens",
            f"listen address {config.server.listen} is not loopback: set at least one admin "
            'token (admin-tokens = [{ env = "NESSUS_POOL_ADMIN_TOKEN" }])',
        )
    warnings += check_storage(config.storage)
    if config.cluster is not None:
        check_cluster(config.cluster, config.storage)
        if config.simulator is not None:
            raise _err(
                "$.simulator",
                "the embedded simulator lives and dies with one daemon, so daemons of a "
                "cluster cannot share its scanners: run `nessus-pool simulator` on its own "
                "and list its scanners in [[pools.scanners]], or remove [cluster]",
            )
    seen_pools: set[str] = set()
    seen_scanners: dict[str, str] = {}
    for i, pool in enumerate(config.pools):
        if pool.name in seen_pools:
            raise _err(f"$.pools[{i}].name", f"duplicate pool name {pool.name!r}")
        seen_pools.add(pool.name)
        for j, sc in enumerate(pool.scanners):
            at = f"$.pools[{i}].scanners[{j}]"
            if sc.id in seen_scanners:
                raise _err(
                    f"{at}.id",
                    f"scanner id {sc.id!r} already used in pool "
                    f"{seen_scanners[sc.id]!r}; scanner ids must be unique",
                )
            seen_scanners[sc.id] = pool.name
            if not re.match(r"^https?://[^/\s]+", sc.url):
                raise _err(f"{at}.url", f"{sc.url!r} is not an http(s) URL")
            has_keys = sc.access_key is not None or sc.secret_key is not None
            has_login = sc.username is not None or sc.password is not None
            if has_keys and (sc.access_key is None or sc.secret_key is None):
                raise _err(at, "set both access-key and secret-key")
            if has_login and (sc.username is None or sc.password is None):
                raise _err(at, "set both username and password")
            if not has_keys and not has_login:
                raise _err(at, "set access-key and secret-key (or username and password)")
            for key in ("access_key", "secret_key", "password"):
                warnings += _check_secret(getattr(sc, key), f"{at}.{key.replace('_', '-')}")
            if not sc.verify_tls:
                warnings.append(f"{at}.verify-tls = false: TLS certificates are not verified")
            _check_windows(sc.maintenance_windows, f"{at}.maintenance-windows")
        _check_windows(pool.maintenance_windows, f"$.pools[{i}].maintenance-windows")
        for kind in ("allowed_targets", "denied_targets"):
            for k, entry in enumerate(getattr(pool, kind)):
                if not _SCOPE_ENTRY.match(entry.strip()):
                    raise _err(
                        f"$.pools[{i}].{kind.replace('_', '-')}[{k}]",
                        f"{entry!r} is not a CIDR, address or hostname pattern",
                    )
                if re.match(r"^[0-9.:/]+$", entry.strip()):
                    try:
                        ipaddress.ip_network(entry.strip(), strict=False)
                    except ValueError as exc:
                        raise _err(
                            f"$.pools[{i}].{kind.replace('_', '-')}[{k}]", str(exc)
                        ) from None
        if config.security.require_scope and pool.scanners and not pool.allowed_targets:
            raise _err(
                f"$.pools[{i}].allowed-targets",
                f"security.require-scope is on and pool {pool.name!r} has real "
                "scanners: list the targets it may scan",
            )
    sim = config.simulator
    if sim is not None:
        for k in range(1, sim.scanners + 1):
            if f"sim-{k}" in seen_scanners:
                raise _err("$.simulator", f"scanner id 'sim-{k}' is reserved for the simulator")
    for name, cred in config.credentials.items():
        at = f"$.credentials.{name}"
        if cred.password is None and cred.private_key is None:
            raise _err(at, "set password or private-key")
        for key in _CREDENTIAL_SECRETS:
            warnings += _check_secret(getattr(cred, key), f"{at}.{key.replace('_', '-')}")
    for kind in ("read_tokens", "admin_tokens"):
        for k, ref in enumerate(getattr(config.server, kind)):
            at = f"$.server.{kind.replace('_', '-')}[{k}]"
            warnings += _check_secret(ref, at)
            _check_token_ref(ref, at)
    if not config.pools and sim is None:
        warnings.append("no pools and no simulator: nothing can be scanned")
    warnings += check_notifications(config, seen_pools | ({sim.pool} if sim else set()))
    check_schedules(config)
    return warnings


# --- notifications ---------------------------------------------------------------------------

#: webhook secrets shorter than this are refused (``openssl rand -hex 32`` gives 64)
MIN_WEBHOOK_SECRET_CHARS = 24


def check_notifications(config: Config, pools: set[str]) -> list[str]:
    """``[[notifications]]``: unique names, safe URLs (see ``notify.ssrf``), known pools,
    a long enough secret where it can be read now (else at start)."""
    warnings: list[str] = []
    seen: set[str] = set()
    for i, n in enumerate(config.notifications):
        at = f"$.notifications[{i}]"
        if n.name in seen:
            raise _err(f"{at}.name", f"duplicate notification name {n.name!r}")
        seen.add(n.name)
        try:
            allow = parse_allow_hosts(n.allow_hosts)
        except ValueError as exc:
            raise _err(f"{at}.allow-hosts", str(exc)) from None
        problem = url_problem(n.url, allow)
        if problem is not None:
            raise _err(f"{at}.url", problem)
        for k, pool in enumerate(n.pools or []):
            if pool not in pools:
                raise _err(f"{at}.pools[{k}]", f"no pool named {pool!r}")
        if len(set(n.events)) != len(n.events):
            raise _err(f"{at}.events", "an event is listed twice")
        warnings += _check_secret(n.secret, f"{at}.secret")
        try:
            value = resolve_secret(n.secret, f"{at}.secret")
        except ConfigError:
            continue  # an env var or credential file only the service sees: checked at start
        check_webhook_secret(value or "", f"{at}.secret")
    return warnings


def check_webhook_secret(value: str, path: str) -> str:
    """Raises ConfigError naming the path (never the value) for a secret that is too short."""
    if len(value) < MIN_WEBHOOK_SECRET_CHARS:
        raise _err(
            path,
            f"webhook secret is {len(value)} characters; at least "
            f"{MIN_WEBHOOK_SECRET_CHARS} are required (e.g. openssl rand -hex 32)",
        )
    return value


def _check_windows(windows: list[MaintenanceWindowConfig], at: str) -> None:
    for k, w in enumerate(windows):
        try:
            w.window()
        except WindowError as exc:
            raise _err(f"{at}[{k}].{exc.field}", str(exc)) from None


def check_schedules(config: Config) -> None:
    """Each ``[[schedules]]`` entry on its own (the checks the API runs too) and against the
    file: unique names, a pool and a credential set that the file defines."""
    pools = {p.name for p in config.pools} | (
        {config.simulator.pool} if config.simulator is not None else set()
    )
    seen: set[str] = set()
    for i, sc in enumerate(config.schedules):
        at = f"$.schedules[{i}]"
        if sc.name in seen:
            raise _err(f"{at}.name", f"duplicate schedule name {sc.name!r}")
        seen.add(sc.name)
        try:
            check_schedule(sc.spec())
            parse_targets(sc.targets, max_addresses=config.security.max_addresses_per_task)
        except ValidationError as exc:
            field = exc.field if exc.field in ScheduleConfig.__struct_fields__ else "targets"
            raise _err(f"{at}.{field.replace('_', '-')}", exc.message) from None
        if sc.pool is not None and sc.pool not in pools:
            raise _err(
                f"{at}.pool",
                f"pool {sc.pool!r} is not defined (pools: {', '.join(sorted(pools)) or 'none'})",
            )
        if sc.credential is not None and sc.credential not in config.credentials:
            raise _err(
                f"{at}.credential",
                f"credential set {sc.credential!r} is not defined under [credentials]",
            )


_PG_URL = re.compile(r"^postgres(?:ql)?://(?P<auth>[^@/?#]*@)?(?P<host>[^/?#@]*)(?P<rest>[/?].*)?$")


def check_storage(storage: StorageConfig) -> list[str]:
    """``url`` is a PostgreSQL URL with a host and without a password."""
    if storage.url is None:
        if storage.password is not None:
            raise _err("$.storage.password", "a password needs storage.url (PostgreSQL)")
        return []
    m = _PG_URL.match(storage.url)
    if m is None:
        raise _err(
            "$.storage.url",
            "not a PostgreSQL URL: use postgresql://user@host:port/database "
            "(leave it out for the embedded SQLite store)",
        )
    if m.group("auth") and ":" in m.group("auth"):
        raise _err(
            "$.storage.url",
            "the URL holds a password: remove it and set storage.password = "
            '{ env = "NESSUS_POOL_PG_PASSWORD" } (or { file = ... })',
        )
    if not m.group("host"):
        raise _err("$.storage.url", "the URL names no host (a host or 127.0.0.1 and a port)")
    return _check_secret(storage.password, "$.storage.password")


def check_cluster(cluster: ClusterConfig, storage: StorageConfig) -> None:
    """``[cluster]`` needs PostgreSQL, and a heartbeat shorter than the lease."""
    if storage.url is None:
        raise _err(
            "$.cluster",
            "several daemons share pools through PostgreSQL only: set storage.url "
            "(postgresql://user@host:port/db), or remove [cluster] for one daemon on SQLite",
        )
    if cluster.heartbeat_period_s >= cluster.lease_s:
        raise _err(
            "$.cluster.heartbeat-s",
            f"heartbeat-s ({cluster.heartbeat_period_s:g}) must be shorter than lease-s "
            f"({cluster.lease_s:g}), else leases expire between renewals (default: lease-s / 3)",
        )
    for k, entry in enumerate(cluster.zone or []):
        if not re.fullmatch(r"[A-Za-z0-9_.*?\[\]-]{1,64}", entry):
            raise _err(f"$.cluster.zone[{k}]", f"{entry!r} is not a scanner id or glob")


_SCOPE_ENTRY = re.compile(r"^[A-Za-z0-9*?.:/_-]+$")


def _check_secret(ref: SecretRef | None, path: str) -> list[str]:
    if ref is None:
        return []
    if isinstance(ref, str):
        return [
            f"{path} is a plain string in the config file; prefer {{ env = ... }} or "
            "{ file = ... }"
        ]
    if (ref.env is None) == (ref.file is None):
        raise _err(path, "a secret reference needs exactly one of env or file")
    return []


def _secret_file(ref: SecretSource) -> str:
    assert ref.file is not None
    creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds_dir and not os.path.isabs(ref.file):
        return os.path.join(creds_dir, ref.file)
    return ref.file


#: bearer tokens shorter than this are refused (``openssl rand -hex 32`` gives 64)
MIN_TOKEN_CHARS = 16
_TOKEN = re.compile(r"[\x21-\x7e]+")


def check_token(value: str, path: str) -> str:
    """A bearer token as resolved: at least MIN_TOKEN_CHARS visible ASCII characters (no
    spaces: a header value's edges are trimmed in transit, so such a token could never match
    as configured). Raises ConfigError naming the path, never the value."""
    if len(value) < MIN_TOKEN_CHARS:
        raise _err(
            path,
            f"token is {len(value)} characters; at least {MIN_TOKEN_CHARS} are required "
            "(e.g. openssl rand -hex 32)",
        )
    if not _TOKEN.fullmatch(value):
        raise _err(path, "token must be printable ASCII without spaces or control characters")
    return value


def _check_token_ref(ref: SecretRef, path: str) -> None:
    """Check the token where it can be read now; a reference that cannot (an env var or a
    credential file only the service sees) is checked when the daemon starts."""
    try:
        value = resolve_secret(ref, path)
    except ConfigError:
        return
    assert value is not None
    check_token(value, path)


def resolve_secret(ref: SecretRef | None, path: str = "") -> str | None:
    """Read the secret a reference points to. Raises ConfigError (without the value)."""
    if ref is None:
        return None
    if isinstance(ref, str):
        return ref
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise _err(path, f"environment variable {ref.env} is not set")
        return value
    file = _secret_file(ref)
    try:
        return Path(file).read_text(encoding="utf-8").strip()
    except OSError:
        raise _err(path, f"secret file {file} {_file_problem(file)}") from None


class Unavailable(msgspec.Struct, frozen=True):
    """Something the config points to that cannot be used now: a secret reference, a CA file
    or the storage folder. ``variable`` or ``file`` says which; never a secret's value."""

    path: str
    message: str
    variable: str | None = None
    file: str | None = None
    #: the credential set it belongs to, if any
    credential: str | None = None


def secret_unavailable(ref: SecretRef | None, path: str) -> Unavailable | None:
    """Why ``ref`` cannot be read now, or None. Reads no secret value: an environment lookup
    or an access check on the file, cheap enough for every submit."""
    if ref is None or isinstance(ref, str):
        return None
    if ref.env is not None:
        if ref.env in os.environ:
            return None
        return Unavailable(path, f"environment variable {ref.env} is not set", variable=ref.env)
    file = _secret_file(ref)
    if os.path.isfile(file) and os.access(file, os.R_OK):
        return None
    return Unavailable(path, f"secret file {file} {_file_problem(file)}", file=file)


def _file_problem(file: str) -> str:
    """Why a secret file cannot be read, and how to fix it."""
    if not os.path.exists(file):
        return (
            "does not exist (fix: write the secret alone into it, readable only by the "
            "daemon's user: chmod 600; a relative path is read from the config file's folder)"
        )
    return "is not a readable file (fix: make it a file the daemon's user can read, chmod 600)"


def credential_unavailable(config: Config, name: str) -> Unavailable | None:
    """The first secret of credential set ``name`` that cannot be read now, or None."""
    cred = config.credentials.get(name)
    if cred is None:
        return None
    for key in _CREDENTIAL_SECRETS:
        problem = secret_unavailable(
            getattr(cred, key), f"$.credentials.{name}.{key.replace('_', '-')}"
        )
        if problem is not None:
            return msgspec.structs.replace(problem, credential=name)
    return None


def preflight(config: Config, *, offline: bool = False) -> list[Unavailable]:
    """The checks ``serve`` runs before it starts, run by ``config check`` too, so that a
    file that passes the check starts. Raises :class:`ConfigError` listing everything that
    would stop the daemon: a scanner key or API token that cannot be read, a ``ca-file`` that
    does not load, a storage path that cannot be created. Returns the credential sets whose
    secrets cannot be read: the daemon starts and refuses scans that name them.
    ``offline`` skips everything that looks outside the file (secrets, files, folders)."""
    if offline:
        return []
    errors: list[Unavailable | None] = []
    for k, ref in enumerate(config.server.admin_tokens):
        errors.append(secret_unavailable(ref, f"$.server.admin-tokens[{k}]"))
    for k, ref in enumerate(config.server.read_tokens):
        errors.append(secret_unavailable(ref, f"$.server.read-tokens[{k}]"))
    for i, pool in enumerate(config.pools):
        for j, sc in enumerate(pool.scanners):
            at = f"$.pools[{i}].scanners[{j}]"
            for key in ("access_key", "secret_key", "username", "password"):
                errors.append(secret_unavailable(getattr(sc, key), f"{at}.{key.replace('_', '-')}"))
            if sc.ca_file is not None:
                errors.append(_ca_file_problem(sc.ca_file, f"{at}.ca-file"))
    errors.append(_storage_problem(config.storage.path))
    errors.append(secret_unavailable(config.storage.password, "$.storage.password"))
    for i, n in enumerate(config.notifications):
        errors.append(secret_unavailable(n.secret, f"$.notifications[{i}].secret"))
    found = [e for e in errors if e is not None]
    if found:
        lines = "\n  ".join(f"{e.message} - at `{e.path}`" for e in found)
        raise ConfigError(
            f"{len(found)} problem(s) would stop the daemon:\n  {lines}", path=found[0].path
        )
    return [p for name in config.credentials if (p := credential_unavailable(config, name))]


def _ca_file_problem(ca_file: str, path: str) -> Unavailable | None:
    try:
        ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        return Unavailable(path, f"cannot load the CA file {ca_file}: {exc}", file=ca_file)
    return None


def _storage_problem(storage: str) -> Unavailable | None:
    """Can the daemon create and write ``storage``? Checked without creating anything."""
    p = Path(storage).absolute()
    existing = next((a for a in (p, *p.parents) if a.exists()), None)
    if existing is None or not existing.is_dir():
        return Unavailable(
            "$.storage.path", f"{existing or p} is not a directory: cannot use storage {p}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        return Unavailable("$.storage.path", f"{existing} is not writable: storage {p}")
    return None


# --- SIGHUP diff ---------------------------------------------------------------------------


class ConfigDiff(msgspec.Struct, frozen=True):
    pools_added: list[str] = []
    pools_removed: list[str] = []
    pools_changed: list[str] = []
    scanners_added: list[str] = []
    scanners_removed: list[str] = []
    scanners_changed: list[str] = []
    restart_required: list[str] = []
    schedules_added: list[str] = []
    schedules_removed: list[str] = []
    schedules_changed: list[str] = []

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f) for f in self.__struct_fields__)


def diff(old: Config, new: Config) -> ConfigDiff:
    """What a reload changes. Settings that cannot change without restart are listed in
    ``restart_required`` and keep their old values."""
    old_pools = {p.name: p for p in old.pools}
    new_pools = {p.name: p for p in new.pools}
    old_sc = {s.id: s for p in old.pools for s in p.scanners}
    new_sc = {s.id: s for p in new.pools for s in p.scanners}

    def strip(p: PoolConfig) -> PoolConfig:
        return msgspec.structs.replace(p, scanners=[])

    restart = [
        name
        for name in ("listen", "max_body_bytes")
        if getattr(old.server, name) != getattr(new.server, name)
    ]
    restart = [f"server.{n.replace('_', '-')}" for n in restart]
    if old.storage != new.storage:
        restart.append("storage")
    if old.simulator != new.simulator:
        restart.append("simulator")
    if old.cluster != new.cluster:
        restart.append("cluster")
    return ConfigDiff(
        pools_added=sorted(new_pools.keys() - old_pools.keys()),
        pools_removed=sorted(old_pools.keys() - new_pools.keys()),
        pools_changed=sorted(
            n
            for n in old_pools.keys() & new_pools.keys()
            if strip(old_pools[n]) != strip(new_pools[n])
        ),
        scanners_added=sorted(new_sc.keys() - old_sc.keys()),
        scanners_removed=sorted(old_sc.keys() - new_sc.keys()),
        scanners_changed=sorted(s for s in old_sc.keys() & new_sc.keys() if old_sc[s] != new_sc[s]),
        restart_required=restart,
        **_schedules_diff(old, new),
    )


def _schedules_diff(old: Config, new: Config) -> dict[str, list[str]]:
    was = {s.name: s for s in old.schedules}
    now = {s.name: s for s in new.schedules}
    return {
        "schedules_added": sorted(now.keys() - was.keys()),
        "schedules_removed": sorted(was.keys() - now.keys()),
        "schedules_changed": sorted(n for n in was.keys() & now.keys() if was[n] != now[n]),
    }


# --- init ----------------------------------------------------------------------------------


DEFAULT_CONFIG_RESOURCE = "default-config.toml"


def render_starter_config() -> str:
    """The file `nessus-pool config init` writes: the commented one the repository ships as
    ``nessus-pool.toml`` (package data, so both stay one text)."""
    return (
        resources.files("nessus_pool").joinpath(DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8")
    )
