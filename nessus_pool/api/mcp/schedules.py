"""MCP tools for schedules: ``create_schedule``, ``list_schedules`` (read tokens too) and
``delete_schedule``. Arguments are a terse subset of ``POST /api/v1/schedules`` (tools/list is
read into every model's context); the bodies call the service's schedule operations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from nessus_pool.api.mcp.schemas import NoArgs, Pool, Targets, open_object
from nessus_pool.api.mcp.tools import ToolContext, ToolSpec
from nessus_pool.models import ScanType
from nessus_pool.schedules import NAME_PATTERN, ScheduleSpec

if TYPE_CHECKING:
    from nessus_pool.service import Service

ScheduleName = Annotated[str, Meta(pattern=NAME_PATTERN)]


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CreateScheduleArgs(_Args):
    name: ScheduleName
    targets: Targets
    cron: Annotated[str | None, Meta(description="5 fields, e.g. '0 2 * * 1'")] = None
    every_s: Annotated[int | None, Meta(description="Or: an interval")] = None
    timezone: Annotated[str, Meta(description="IANA, for cron")] = "UTC"
    scanner_pool: Pool = None
    credential: Annotated[str | None, Meta(description="A credential set: authenticated")] = None
    policy: str | None = None
    priority: Annotated[int, Meta(ge=-100, le=100)] = 0
    overlap: Literal["skip", "queue"] = "skip"


class ScheduleNameArgs(_Args):
    name: ScheduleName


async def create_schedule(svc: Service, a: CreateScheduleArgs, ctx: ToolContext) -> Any:
    spec = ScheduleSpec(
        name=a.name,
        targets=a.targets,
        cron=a.cron,
        every_s=a.every_s,
        timezone=a.timezone,
        pool=a.scanner_pool,
        scan_type=ScanType.AUTHENTICATED if a.credential else ScanType.UNTRUSTED,
        credential=a.credential,
        policy=a.policy,
        priority=a.priority,
        overlap=a.overlap,
    )
    view = await svc.schedules.create(spec)
    view.pop("runs", None)
    return view


_LIST_KEYS = ("name", "targets", "cron", "every_s", "timezone", "pool", "enabled",
              "next_run_at", "last_slot_at", "active_task_id", "source")  # fmt: skip


async def list_schedules(svc: Service, a: NoArgs, ctx: ToolContext) -> Any:
    rows = await svc.schedules.list()
    return {"schedules": [{k: r[k] for k in _LIST_KEYS} for r in rows], "total": len(rows)}


async def delete_schedule(svc: Service, a: ScheduleNameArgs, ctx: ToolContext) -> Any:
    return await svc.schedules.delete(a.name)


SCHEDULE_TOOLS: list[ToolSpec] = [
    ToolSpec("create_schedule", "Create schedule",
             "Scan targets on a cron or every_s; runs are tasks with schedule_id.",
             CreateScheduleArgs, open_object(("name", "next_run_at")), create_schedule,
             read_only=False),
    ToolSpec("list_schedules", "List schedules", "Schedules with their next run.",
             NoArgs, open_object(("schedules", "total")), list_schedules,
             read_only=True, idempotent=True),
    ToolSpec("delete_schedule", "Delete schedule", "Delete an API-created schedule.",
             ScheduleNameArgs, open_object(("name", "deleted")), delete_schedule,
             read_only=False, destructive=True, idempotent=True),
]  # fmt: skip
