"""The dead-letter queue: tasks the engine gave up on, to list, inspect, retry or purge."""

from __future__ import annotations

from typing import Any

import msgspec

from nessus_pool.errors import ConflictError, NotFoundError, ValidationError
from nessus_pool.service.ids import check_task_id
from nessus_pool.service.reads import Reads
from nessus_pool.service.views import TaskPage, TaskView
from nessus_pool.store import TaskFilter

#: a purge age beyond this (100 years) is a typo, not a policy
MAX_PURGE_AGE_S = 100 * 365 * 86400.0


class DeadLetters(Reads):
    """The dead-letter operations, over the reads they are made of (a dead letter is a task
    with its ``dead_letter`` mark)."""

    async def dlq_list(
        self, *, pool: str | None = None, page_size: int = 50, cursor: str | None = None
    ) -> TaskPage:
        return await self.list_tasks(
            pool=pool, dead_letter=True, page_size=page_size, cursor=cursor
        )

    async def dlq_get(self, task_id: str) -> dict[str, Any]:
        t = await self.task(task_id)
        if not t.dead_letter:
            raise NotFoundError(f"task {task_id} is not in the dead-letter queue", field="task_id")
        events = await self.engine.store.events(task_id)
        return {**msgspec.to_builtins(self.view(t)), "events": msgspec.to_builtins(events)}

    async def dlq_retry(self, task_id: str) -> TaskView:
        """A fresh attempt that really runs: the task goes back to its pool's queue with its
        attempt count reset and its dead-letter mark cleared."""
        self.writable_now()
        t = await self.task(task_id)
        if not t.dead_letter:
            raise ConflictError(
                f"task {task_id} is not in the dead-letter queue (status {t.status.value})",
                field="task_id",
            )
        if t.pool not in self.engine.pools:
            raise ConflictError(f"pool {t.pool!r} no longer exists")
        await self.engine.revive(t)
        return self.view(t)

    async def dlq_purge(
        self,
        *,
        task_ids: list[str] | None = None,
        pool: str | None = None,
        older_than_s: float | None = None,
        confirm: bool = False,
    ) -> dict[str, Any]:
        """Delete dead letters by id, or in bulk by pool and/or age. A bulk purge without
        ``confirm`` is a dry run that lists what it would delete."""
        self.writable_now()
        if task_ids:
            for tid in task_ids:
                check_task_id(tid, "task_ids")
            victims = [
                t
                for t in [await self.engine.store.get_task(i) for i in task_ids]
                if t is not None and t.dead_letter
            ]
            dry = False
        else:
            if pool is None and older_than_s is None:
                raise ValidationError("give task_ids, pool or older_than_s", field="task_ids")
            if older_than_s is not None and not 0 <= older_than_s <= MAX_PURGE_AGE_S:
                raise ValidationError(
                    f"older_than_s must be 0..{MAX_PURGE_AGE_S:.0f} seconds",
                    field="older_than_s",
                )
            cutoff = (
                None
                if older_than_s is None
                else (self.engine.clock.now_ms() - int(older_than_s * 1000))
            )
            victims = await self.engine.store.list_tasks(
                TaskFilter(pool=pool, dead_letter=True, finished_before_ms=cutoff), limit=100_000
            )
            dry = not confirm
        ids = [t.task_id for t in victims]
        if not dry:
            await self.engine.purge(victims)
        return {"purged": 0 if dry else len(ids), "task_ids": ids, "dry_run": dry}
