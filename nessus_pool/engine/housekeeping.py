"""Retention: delete finished tasks, their findings and export files, and old dead letters.

Only terminal tasks are ever touched. Scans on scanners are deleted only through the remote
id nessus-pool stored when it created them (see the runner), never by listing a scanner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from nessus_pool.config import HousekeepingConfig
from nessus_pool.engine.core import Engine
from nessus_pool.errors import StorageUnavailableError
from nessus_pool.models import TERMINAL_STATUSES, status_values
from nessus_pool.store import TaskFilter

log = logging.getLogger("nessus_pool.engine")

#: stored status strings of finished tasks (the only ones housekeeping touches)
TERMINAL = status_values(TERMINAL_STATUSES)


class HousekeepingRun(msgspec.Struct, kw_only=True):
    tasks_deleted: int = 0
    dead_letters_deleted: int = 0
    export_files_deleted: int = 0


async def housekeeping_once(
    engine: Engine, cfg: HousekeepingConfig, now_ms: int | None = None
) -> HousekeepingRun:
    now_ms = engine.clock.now_ms() if now_ms is None else now_ms
    run = HousekeepingRun()
    for dead_letter, ttl_s in ((False, cfg.finished_ttl_s), (True, cfg.dead_letter_ttl_s)):
        cutoff = now_ms - int(ttl_s * 1000)
        while True:
            batch = await engine.store.list_tasks(
                TaskFilter(statuses=TERMINAL, dead_letter=dead_letter, finished_before_ms=cutoff),
                limit=500,
            )
            batch = [t for t in batch if t.task_id not in engine.tasks]
            if not batch:
                break
            run.export_files_deleted += sum(1 for t in batch if t.export_path)
            await engine.purge(batch)
            if dead_letter:
                run.dead_letters_deleted += len(batch)
            else:
                run.tasks_deleted += len(batch)
    for kind, n in msgspec.structs.asdict(run).items():
        if n:
            engine.metrics.housekeeping.labels(kind).inc(n)
    log.info("housekeeping", extra={"event": "housekeeping_run", **msgspec.structs.asdict(run)})
    return run


async def housekeeping_loop(engine: Engine, get_cfg: Callable[[], HousekeepingConfig]) -> None:
    """Run :func:`housekeeping_once` every ``interval-s`` (read again each round, so a
    reload applies). Essential: a failure here stops the daemon (see ``Engine.spawn``)."""
    while True:
        cfg = get_cfg()
        await engine.clock.sleep(cfg.interval_s)
        try:
            if engine.cluster is None:
                await housekeeping_once(engine, cfg)
            else:
                await housekeeping_turn(engine, cfg)
        except StorageUnavailableError as exc:  # the database is reconnecting: next round
            log.warning(
                "housekeeping skipped", extra={"event": "housekeeping_skipped", "error": str(exc)}
            )


async def housekeeping_turn(engine: Engine, cfg: HousekeepingConfig) -> HousekeepingRun | None:
    """[cluster] One daemon at a time (an advisory lock); None when another has the turn."""
    from nessus_pool.store.pg import HOUSEKEEPING_LOCK_KEY, PgStore

    store = engine.store
    assert isinstance(store, PgStore)
    async with store.exclusive_turn(HOUSEKEEPING_LOCK_KEY) as mine:
        if not mine:
            log.info("housekeeping skipped", extra={"event": "housekeeping_skipped"})
            return None
        return await housekeeping_once(engine, cfg)
