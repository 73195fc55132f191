"""Notifications for the API and the delivery worker: the failed deliveries to list and
retry, and the findings parts of a payload, built at its first delivery attempt from the
stored findings (committed before the task's final row, so the answer is the one the
final transition would have given)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from nessus_pool.config import NotificationConfig
from nessus_pool.errors import ConflictError, NotFoundError, ValidationError
from nessus_pool.notify import payload as pl
from nessus_pool.notify.worker import DeliveryWorker
from nessus_pool.results.parser import Finding
from nessus_pool.results.query import PROFILES, diff_findings
from nessus_pool.service.reads import Reads
from nessus_pool.store import outbox as ob
from nessus_pool.store.outbox import OutboxRow

_DELIVERY_ID = re.compile(r"dlv-[0-9a-f]{24}")
_finding_dec = msgspec.msgpack.Decoder(Finding)
MAX_LIST = 1000


class DeliveryView(msgspec.Struct, kw_only=True):
    """A delivery as the API shows it: never the target's URL or secret."""

    delivery_id: str
    target: str
    event: str
    task_id: str
    state: str
    attempts: int
    last_error: str | None
    created_at_ms: int
    updated_at_ms: int


def delivery_view(row: OutboxRow) -> DeliveryView:
    return DeliveryView(
        delivery_id=row.delivery_id,
        target=row.target,
        event=row.event,
        task_id=row.task_id,
        state=row.state,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at_ms=row.created_at_ms,
        updated_at_ms=row.updated_at_ms,
    )


def _top(findings: list[Finding]) -> list[dict[str, Any]]:
    ranked = sorted(findings, key=lambda f: (-f.severity, f.host, f.plugin_id))
    return [
        {
            "host": f.host,
            "port": f.port,
            "severity": pl.SEVERITIES[max(0, min(4, f.severity))],
            "plugin_id": f.plugin_id,
            "plugin_name": f.plugin_name,
        }
        for f in ranked[: pl.TOP_FINDINGS]
    ]


class Notifications:
    """The notification operations over the service's reads (``Reads``) and the worker
    (None when no daemon runs one: listing still works)."""

    def __init__(self, reads: Reads, worker: DeliveryWorker | None = None) -> None:
        self.reads = reads
        self.worker = worker

    @property
    def _store(self) -> Any:
        return self.reads.engine.store

    async def _findings(self, task_id: str) -> list[Finding]:
        return [_finding_dec.decode(b) for b in await self._store.get_findings_blobs(task_id)]

    async def prepare(self, row: OutboxRow, target: NotificationConfig) -> bytes | None:
        """The payload with its findings parts (counts; for ``findings`` and
        ``new_findings`` the matching count and the top findings), or None when a findings
        event has nothing at or above the minimum severity (the row is then skipped)."""
        doc = pl.decode(row.payload)
        if doc["task"].get("authentication_status") is None:
            return row.payload  # no results were stored: nothing to add
        findings = await self._findings(row.task_id)
        doc["counts"] = pl.count_by_severity([f.severity for f in findings])
        floor = pl.SEVERITY_RANK[doc["min_severity"]]
        if row.event == "findings":
            hits = [f for f in findings if f.severity >= floor]
        elif row.event == "new_findings":
            hits, base_id = await self._new_findings(row.task_id, findings, floor)
            if hits:
                doc["new_findings"] = {"base_task_id": base_id, "count": len(hits)}
        else:
            return pl.encode(doc)
        if not hits:
            return None
        doc["matching"] = len(hits)
        doc["top_findings"] = _top(hits)
        return pl.encode(doc)

    async def _new_findings(
        self, task_id: str, findings: list[Finding], floor: int
    ) -> tuple[list[Finding], str | None]:
        """Findings at or above ``floor`` that the previous completed run of the same
        targets did not have (all of them when there is no previous run)."""
        t = await self._store.get_task(task_id)
        # the base compare_scans picks: a scheduled run's previous run of its schedule, else
        # the previous completed scan of the same pool and targets
        base = None if t is None else await self.reads._previous_same_targets(t)
        if base is None:
            return [f for f in findings if f.severity >= floor], None
        old = await self._findings(base.task_id)
        diff = diff_findings(old, findings, limit=len(findings) + 1, fields=PROFILES["minimal"])
        new_keys = {(d["host"], d["port"], d["plugin_id"]) for d in diff.new}
        hits = [
            f for f in findings if f.severity >= floor and (f.host, f.port, f.plugin_id) in new_keys
        ]
        return hits, base.task_id

    # --- the API's operations --------------------------------------------------------------

    async def failed(self, *, limit: int = 100, target: str | None = None) -> dict[str, Any]:
        """Deliveries that used up their attempts, most recent first, and the outbox counts."""
        if not 1 <= limit <= MAX_LIST:
            raise ValidationError(f"limit must be 1..{MAX_LIST}", field="limit")
        # counts first: a delivery that fails between the two reads is then listed without
        # being counted yet, never counted without being listed (failed is final until a retry)
        counts = await ob.counts(self._store)
        rows = await ob.by_state(self._store, ob.FAILED, MAX_LIST if target else limit)
        if target is not None:
            rows = [r for r in rows if r.target == target][:limit]
        return {
            "deliveries": [msgspec.to_builtins(delivery_view(r)) for r in rows],
            "counts": counts,
        }

    async def retry(self, delivery_id: str) -> dict[str, Any]:
        """A failed delivery back to pending with fresh attempts, sent at once."""
        if not _DELIVERY_ID.fullmatch(delivery_id):
            raise ValidationError(
                "delivery_id is not valid: use an id from GET /api/v1/notifications/failed",
                field="delivery_id",
            )
        row = await ob.get(self._store, delivery_id)
        if row is None:
            raise NotFoundError(f"delivery {delivery_id} not found", field="delivery_id")
        if row.state != ob.FAILED:
            raise ConflictError(
                f"delivery {delivery_id} is {row.state}; only failed deliveries are retried",
                field="delivery_id",
            )
        await ob.retry(self._store, delivery_id, self.reads.engine.clock.now_ms())
        if self.worker is not None:
            self.worker.wake()
        updated = await ob.get(self._store, delivery_id)
        assert updated is not None
        return msgspec.to_builtins(delivery_view(updated))  # type: ignore[no-any-return]
