"""The composition root: builds and wires everything, owns the lifecycle and signals.

Shutdown order (uvicorn's): stop accepting connections, stop the engine (every state was
persisted as it changed; scans keep running on the scanners and are re-attached at the next
start), close the store, stop the embedded simulator, release the storage lock.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from nessus_pool import __version__
from nessus_pool.api.admin import (
    AUTH,
    METRICS,
    READY,
    SERVICE,
    add_routes,
    guard_routes,
)
from nessus_pool.api.guard import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    CappedSite,
    FrontDoor,
    TokenAuth,
    accept_error_handler,
    connection_cap,
)
from nessus_pool.api.mcp import mount_mcp
from nessus_pool.api.notifications import add_notification_routes
from nessus_pool.api.schedules import add_schedule_routes
from nessus_pool.clock import Clock, SystemClock
from nessus_pool.config import (
    Config,
    LoadedConfig,
    Unavailable,
    check_token,
    check_webhook_secret,
    diff,
    load_config,
    parse_listen,
    preflight,
    resolve_secret,
)
from nessus_pool.engine import Engine, ScannerSpec
from nessus_pool.engine.core import apply_reload
from nessus_pool.engine.housekeeping import housekeeping_loop
from nessus_pool.errors import ConfigError, LockedError, NessusPoolError, StorageError
from nessus_pool.gc_policy import daemon_runtime, full_collections
from nessus_pool.logs import register_secret, route_library_logs, setup_logging
from nessus_pool.metrics import Metrics
from nessus_pool.nessus import NessusClient
from nessus_pool.notify.outbox import OutboxWriter
from nessus_pool.notify.worker import DeliveryWorker
from nessus_pool.service import ReloadOutcome, Service
from nessus_pool.service.notifications import Notifications
from nessus_pool.store import BaseStore, make_store, redact_url
from nessus_pool.store.lock import StorageLock, prepare_storage
from nessus_pool.systemd import sd_notify
from nessus_pool.systemd import watchdog as _watchdog  # the name _load_parts calls
from nessus_pool.wiring import credential_resolver, effective_pools, scanner_specs

log = logging.getLogger("nessus_pool.daemon")


def _warn_unavailable(problems: list[Unavailable]) -> list[str]:
    """Log each credential set that cannot be used (event credential_unavailable)."""
    messages = []
    for p in problems:
        message = (
            f"credential set {p.credential!r} cannot be used: {p.message}; scans that name "
            "it are refused until it can be read"
        )
        log.warning(
            message,
            extra={"event": "credential_unavailable", "credential": p.credential,
                   "path": p.path, "variable": p.variable, "file": p.file},
        )  # fmt: skip
        messages.append(message)
    return messages


def _storage_dir(cfg: Config) -> Path:
    """Absolute: load_config made it relative to the config file; a config parsed from text
    has no folder, so the working directory it is."""
    return Path(os.path.abspath(cfg.storage.path))


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        config_path: str | None = None,
        clock: Clock | None = None,
        setup_logs: bool = False,
        serve_http: bool = True,
    ) -> None:
        self.serve_http = serve_http
        self.loaded = loaded
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.setup_logs = setup_logs
        self.metrics = Metrics()
        self.lock: StorageLock | None = None
        self.store: BaseStore | None = None
        self.engine: Engine | None = None
        self.service: Service | None = None
        self.notifications: Notifications | None = None
        self.runner: web.AppRunner | None = None
        self.sim_cluster: Any = None
        self.port: int = 0
        self.host: str = ""
        self._signals: asyncio.Queue[str] = asyncio.Queue()
        self._signals_installed = False
        self._reload_lock = asyncio.Lock()
        #: 1 when serve_forever stopped because an essential background loop died
        self.exit_code = 0
        self.app: web.Application | None = None
        self.site: CappedSite | None = None
        #: listener limits (tests shrink them): header and body read timeouts, connection
        #: cap (None: from RLIMIT_NOFILE)
        self.header_timeout_s = HEADER_TIMEOUT_S
        self.body_timeout_s = BODY_TIMEOUT_S
        self.max_connections: int | None = None
        self._previous_loop_handler: Any = None
        self._previous_umask: int | None = None
        self._token_auth: TokenAuth | None = None
        #: puts back the collector's thresholds found at start (gc_policy)
        self._restore_gc: Callable[[], None] | None = None

    @property
    def config(self) -> Config:
        return self.loaded.config

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        if self.setup_logs:
            setup_logging(cfg.logging.format, cfg.logging.level)
            route_library_logs()
        for w in self.loaded.warnings:
            log.warning(w, extra={"event": "config_warning"})
        # the same checks `config check` runs; what would stop us raises ConfigError here
        _warn_unavailable(preflight(cfg))
        # tokens are checked before anything starts: a refused one leaves nothing to undo
        self._token_auth = self._auth() if self.serve_http else None
        for i, n in enumerate(cfg.notifications):
            at = f"$.notifications[{i}].secret"
            register_secret(check_webhook_secret(resolve_secret(n.secret, at) or "", at))
        storage = _storage_dir(cfg)
        self._previous_umask = os.umask(0o077)
        try:
            prepare_storage(storage)
            self.lock = StorageLock(storage)
            self.lock.acquire()
        except BaseException:
            os.umask(self._previous_umask)
            self._previous_umask = None
            raise
        log.info(f"storage {storage}", extra={"event": "storage_opened", "path": str(storage)})
        try:
            await self._start_parts(storage)
        except BaseException:
            await self.stop()
            raise

    async def _start_parts(self, storage: Path) -> None:
        # Start-up allocates what lives as long as the daemon (100,000 queued tasks are
        # 100,000+ objects): collect what imports left behind, then keep the collector off
        # until everything is loaded and frozen out of its way (STYLE.md: full collections
        # walking a long-lived heap were the p99 under load).
        gc.collect()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            await self._load_parts(storage)
        finally:
            gc.freeze()
            if gc_was_enabled:
                gc.enable()
        assert self.engine is not None
        # full collections on a timer: each automatic one paused the loop 200-300 ms;
        # a short thread switch interval: the loop waits less for a parsing thread's GIL
        self._restore_gc = daemon_runtime()
        self.engine.spawn(full_collections(self.clock), "gc:full")
        if self.serve_http:
            await self._start_http()
        # the listener is up: now the probes, re-attached runners and dispatchers start
        self.engine.release_background()
        sd_notify("READY=1")
        log.info(
            "serving",
            extra={
                "event": "daemon_ready",
                "url": self.url if self.serve_http else "(embedded, no HTTP listener)",
                "version": __version__,
            },
        )

    async def _load_parts(self, storage: Path) -> None:
        cfg = self.config
        db_password = resolve_secret(cfg.storage.password, "$.storage.password")
        register_secret(db_password, source="$.storage.password")
        self.store = make_store(
            url=cfg.storage.url,
            sqlite_path=storage / "nessus-pool.db",
            password=db_password,
            # one daemon per database, unless [cluster] coordinates several
            exclusive=cfg.cluster is None,
        )
        await self.store.open()
        if cfg.storage.url is not None:
            log.info(
                f"database {redact_url(cfg.storage.url)}",
                extra={"event": "database_opened", "url": redact_url(cfg.storage.url)},
            )
        sim_urls: list[str] = []
        if cfg.simulator is not None:
            from nessus_pool.simulator import SimulatorOptions, start_simulators

            self.sim_cluster = await start_simulators(
                cfg.simulator.scanners,
                options=SimulatorOptions(
                    scan_seconds=cfg.simulator.scan_seconds,
                    scan_api=cfg.simulator.scan_api,
                    seed=cfg.simulator.seed,
                ),
                # HTTPS with the simulator's own CA, pinned below: the TLS path real Nessus takes
                tls_dir=storage / "simulator-tls",
            )
            sim_urls = [s.url for s in self.sim_cluster.scanners]
        metrics = self.metrics

        def make_client(spec: ScannerSpec) -> NessusClient:
            return NessusClient(
                spec.scanner_id,
                spec.url,
                access_key=spec.access_key,
                secret_key=spec.secret_key,
                username=spec.username,
                password=spec.password,
                verify_tls=spec.verify_tls,
                ca_file=spec.ca_file,
                timeout_s=spec.timeout_s,
                clock=self.clock,
                on_request=metrics.on_request,
            )

        self.engine = Engine(
            store=self.store,
            clock=self.clock,
            exports_dir=storage / "exports",
            client_factory=make_client,
            credentials=credential_resolver(lambda: self.config),
            metrics=metrics,
            max_export_bytes=cfg.storage.max_export_bytes,
            default_duration_s=(cfg.simulator.scan_seconds if cfg.simulator else 1800.0),
            shutdown_grace_s=cfg.server.shutdown_grace_s,
        )
        # before start: a task that recovery ends writes its outbox rows too
        outbox = OutboxWriter(lambda: self.config.notifications, self.clock)
        self.engine.final_ops = outbox.rows_for
        if cfg.cluster is not None:
            self._join_cluster()
        # an essential loop died: not ready, and stop (systemd restarts us)
        self.engine.on_death.append(lambda why: self._signals.put_nowait("died"))
        self.engine.delete_remote_scans = cfg.housekeeping.delete_remote_scans
        await self.engine.start(
            effective_pools(cfg),
            scanner_specs(cfg, sim_urls, self._sim_ca_file()),
            hold_background=True,
        )
        self.engine.spawn(
            housekeeping_loop(self.engine, lambda: self.config.housekeeping), "housekeeping"
        )
        self.service = Service(self.engine, lambda: self.config, self.reload)
        self.notifications = Notifications(self.service)
        worker = DeliveryWorker(
            self.store,
            self.clock,
            lambda: self.config.notifications,
            self.notifications.prepare,
            metrics,
            outbox.queued,
            exclusive=getattr(self.store, "exclusive", True),
        )
        self.notifications.worker = worker
        self.engine.on_change.append(worker.poke)
        self.engine.spawn(worker.run(), "notify:outbox")
        self.service.schedules.start()
        from nessus_pool.engine.observe import snapshot

        engine = self.engine
        metrics.set_snapshot(lambda: snapshot(engine))
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec > 0 and os.environ.get("WATCHDOG_PID", str(os.getpid())) == str(
            os.getpid()
        ):
            self.engine.spawn(_watchdog(watchdog_usec / 2e6), "watchdog")

    def _join_cluster(self) -> None:
        """[cluster]: this daemon shares its pools with others on the same database."""
        from nessus_pool.engine.cluster import ClusterMember, settings_from
        from nessus_pool.store.pg import PgStore

        cfg = self.config
        assert cfg.cluster is not None and self.engine is not None
        assert isinstance(self.store, PgStore)  # config validation: [cluster] needs a url
        settings = settings_from(cfg, cfg.cluster, effective_pools(cfg))
        self.engine.cluster = ClusterMember(self.engine, self.store, settings)
        log.info(
            f"cluster member {settings.daemon_id}",
            extra={"event": "cluster_configured", "daemon_id": settings.daemon_id},
        )

    def _auth(self) -> TokenAuth:
        """Resolve the tokens; empty or short ones are refused here too (config check could
        not read an env var or credential file the service sees). Raises ConfigError."""
        s = self.config.server
        tokens: dict[str, list[str]] = {"read": [], "admin": []}
        for kind, refs in (("read", s.read_tokens), ("admin", s.admin_tokens)):
            for k, ref in enumerate(refs):
                at = f"$.server.{kind}-tokens[{k}]"
                value = check_token(resolve_secret(ref, at) or "", at)
                register_secret(value)
                tokens[kind].append(value)
        return TokenAuth(tokens["read"], tokens["admin"])

    async def _start_http(self) -> None:
        cfg = self.config
        door = FrontDoor(cfg.server, body_timeout_s=self.body_timeout_s)
        app = web.Application(client_max_size=cfg.body_limit_bytes)
        assert self.service is not None
        app[SERVICE] = self.service
        assert self._token_auth is not None
        app[AUTH] = self._token_auth
        app[READY] = self.readiness
        app[METRICS] = self.metrics.render
        add_routes(app)
        assert self.notifications is not None
        add_notification_routes(app, self.notifications)
        add_schedule_routes(app)
        max_connections = self.max_connections or connection_cap()
        mount_mcp(app, self.service, cfg, app[AUTH], max_connections)
        # the front door first: a refused request never reaches a route or its error mapping
        guard_routes(app, door)
        self.app = app
        # slowloris: the site gives the first request head header_timeout_s; aiohttp's
        # keep-alive timer, armed after each response, closes a connection still waiting for
        # a complete head when it fires, so the same bound holds for later requests
        self.runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.header_timeout_s,
        )
        await self.runner.setup()
        host, port = parse_listen(cfg.server.listen)
        site = CappedSite(
            self.runner,
            host,
            port,
            max_connections=max_connections,
            header_timeout_s=self.header_timeout_s,
        )
        await site.start()
        self.site = site
        self.host, self.port = host, int(self.runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        self._previous_loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(accept_error_handler())

    async def readiness(self) -> dict[str, Any]:
        assert self.store is not None and self.engine is not None
        writable = await self.store.writable()
        pools = {}
        for name, pool in self.engine.pools.items():
            reach = {sid: sc.slots.reachable for sid, sc in pool.scanners.items()}
            pools[name] = {
                "scanners_reachable": sum(reach.values()),
                "scanners": len(reach),
                "reachable": reach,
            }
        ready = writable and self.engine.started and self.engine.death is None
        return {
            "ready": ready,
            "engine_failure": self.engine.death,
            "database_writable": writable,
            "config_loaded": True,
            "config_source": self.loaded.source,
            "pools": pools,
        }

    async def reload(self) -> ReloadOutcome:
        """Read, validate, diff and apply the config file; on any error keep the old one."""
        async with self._reload_lock:
            sd_notify("RELOADING=1")
            try:
                return await self._reload()
            finally:
                sd_notify("READY=1")

    def _sim_ca_file(self) -> str | None:
        ca_file = self.sim_cluster.ca_file if self.sim_cluster is not None else None
        return None if ca_file is None else str(ca_file)

    async def _reload(self) -> ReloadOutcome:
        assert self.engine is not None
        if self.config_path is None:
            return ReloadOutcome(applied=False, message="no config file to reload")
        try:
            new = load_config(self.config_path)
            d = diff(self.config, new.config)
            sim_urls = [s.url for s in self.sim_cluster.scanners] if self.sim_cluster else []
            # settings that need a restart keep their old values
            keep = new.config
            import msgspec

            keep = msgspec.structs.replace(
                keep,
                server=self.config.server,
                storage=self.config.storage,
                simulator=self.config.simulator,
            )
            unavailable = preflight(keep)
            specs = scanner_specs(keep, sim_urls, self._sim_ca_file())
            assert self.service is not None
            await self.service.schedules.check_config(keep)
            await apply_reload(self.engine, effective_pools(keep), specs)
        except NessusPoolError as exc:
            self.metrics.reloads.labels("refused").inc()
            log.error(
                "reload refused, old config kept",
                extra={"event": "config_reload_refused", "error": str(exc)},
            )
            return ReloadOutcome(applied=False, message=f"reload refused: {exc}")
        self.loaded = LoadedConfig(config=keep, source=new.source, warnings=new.warnings)
        warnings = new.warnings + _warn_unavailable(unavailable)
        self.engine.delete_remote_scans = keep.housekeeping.delete_remote_scans
        self.service.schedules.wake()
        self.metrics.reloads.labels("applied").inc()
        changes = {k: v for k, v in msgspec.structs.asdict(d).items() if v}
        # settings that need a restart kept their old values: an operator must hear of it
        log.log(
            logging.WARNING if d.restart_required else logging.INFO,
            "config reloaded" + ("; restart needed" if d.restart_required else ""),
            extra={"event": "config_reloaded", **changes},
        )
        return ReloadOutcome(
            applied=True,
            message="reloaded"
            + (
                "; restart needed for: " + ", ".join(d.restart_required)
                if d.restart_required
                else ""
            ),
            changes=changes,
            warnings=warnings,
        )

    async def stop(self) -> None:
        sd_notify("STOPPING=1")
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
            asyncio.get_running_loop().set_exception_handler(self._previous_loop_handler)
        if self.engine is not None:
            await self.engine.stop()
        if self.store is not None:
            await self.store.close()
        if self.sim_cluster is not None:
            await self.sim_cluster.close()
            self.sim_cluster = None
        if self.lock is not None:
            self.lock.release()
        if self._previous_umask is not None:
            os.umask(self._previous_umask)
            self._previous_umask = None
        if self._restore_gc is not None:
            self._restore_gc()
            self._restore_gc = None
        log.info("stopped", extra={"event": "daemon_stopped"})

    # --- signals -------------------------------------------------------------------------

    def install_signals(self) -> None:
        if self._signals_installed:
            return
        self._signals_installed = True
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._signals.put_nowait, "hup")
        loop.add_signal_handler(signal.SIGTERM, self._signals.put_nowait, "term")
        loop.add_signal_handler(signal.SIGINT, self._signals.put_nowait, "term")

    def remove_signals(self) -> None:
        self._signals_installed = False
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    async def serve_forever(self, shutdown_deadline_s: float = 30.0) -> None:
        """Run until SIGTERM/SIGINT; SIGHUP reloads. A second stop signal forces exit."""
        self.install_signals()
        try:
            while True:
                sig = await self._signals.get()
                if sig == "hup":
                    outcome = await self.reload()
                    log.info(
                        "sighup handled", extra={"event": "sighup", "applied": outcome.applied}
                    )
                    continue
                if sig == "died":
                    self.exit_code = 1
                break
            log.info("stopping", extra={"event": "daemon_stopping"})
            stopper = asyncio.ensure_future(self.stop())
            forced = asyncio.ensure_future(self._signals.get())
            done, _ = await asyncio.wait(
                {stopper, forced}, timeout=shutdown_deadline_s, return_when=asyncio.FIRST_COMPLETED
            )
            forced.cancel()
            if stopper not in done:
                log.error("forced exit", extra={"event": "daemon_forced_exit"})
                os._exit(1)
        finally:
            self.remove_signals()


async def run_daemon(config_path: str) -> int:
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        setup_logging("text", "info")
        log.error(str(exc), extra={"event": "config_invalid"})
        return 2
    daemon = Daemon(loaded, config_path=config_path, setup_logs=True)
    # Before anything announces readiness (READY=1, the daemon_ready line): from then on a
    # SIGHUP (systemctl reload) or SIGTERM is queued for serve_forever, never the default
    # action, which for SIGHUP would kill the process.
    daemon.install_signals()
    try:
        await daemon.start()
    except LockedError as exc:
        daemon.remove_signals()
        log.error(str(exc), extra={"event": "storage_locked"})
        return 1
    except StorageError as exc:
        daemon.remove_signals()
        log.error(str(exc), extra={"event": "storage_unwritable"})
        return 1
    except ConfigError as exc:
        daemon.remove_signals()
        log.error(str(exc), extra={"event": "config_invalid"})
        return 2
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise
        # start() undid what it had started; one line instead of a 35-line traceback
        daemon.remove_signals()
        listen = daemon.config.server.listen
        log.error(
            f"cannot listen on {listen}: {os.strerror(exc.errno)}; stop the process that holds "
            f"it or set server.listen in {config_path} to another address",
            extra={"event": "listen_failed", "listen": listen},
        )
        return 1
    await daemon.serve_forever(max(30.0, daemon.config.server.shutdown_grace_s + 10.0))
    return daemon.exit_code
