"""Pause and resume for people (issue #17): the service side of ``engine.windows``.

A paused scan keeps its slot on the scanner; its status says since when (``paused_at_ms``)
and for how long (``paused_for_s``). Where Nessus cannot pause (a scan queued or not
launched yet, exporting, or ended) the request is refused with a conflict naming the status.
"""

from __future__ import annotations

from nessus_pool.engine import Engine
from nessus_pool.service.ids import check_task_id
from nessus_pool.service.views import TaskView, task_view


async def pause(engine: Engine, task_id: str) -> TaskView:
    """Pause a running scan on its scanner; returns once the scanner has paused it."""
    check_task_id(task_id)
    return task_view(engine, await engine.windows.pause(task_id))


async def resume(engine: Engine, task_id: str) -> TaskView:
    """Resume a paused scan; refused while its scanner is inside a maintenance window."""
    check_task_id(task_id)
    return task_view(engine, await engine.windows.resume(task_id))
