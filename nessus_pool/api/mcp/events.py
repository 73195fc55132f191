"""Change notifications from the service's task-change hook, never by polling.

A :class:`ChangeFeed` collects the ids of tasks that changed (coalesced, bounded) and wakes
one consumer. :func:`pump_changes` turns them into MCP notifications for one stream:

- 2025-11-25 (a stdio connection, or a session's ``GET /mcp`` stream):
  ``notifications/resources/updated`` for subscribed scan resources,
  ``notifications/resources/list_changed`` when a scan finishes (the list is of finished
  scans), ``notifications/tasks/status`` for the tasks this session created as MCP tasks.
- 2026-07-28 (``subscriptions/listen``): the same events within the acknowledged filter,
  stamped with the subscription id, plus ``notifications/tasks`` for acknowledged task ids.

Task event log lines (``notifications/message``) ride the response stream of a request that
waits for a scan (:class:`TaskLog`), at the level the client chose, in the era that has them.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from nessus_pool.errors import NessusPoolError

if TYPE_CHECKING:
    from nessus_pool.api.mcp.tasks import TaskModel
    from nessus_pool.service import Service, TaskView

SUBSCRIPTION_ID_META: Final = "io.modelcontextprotocol/subscriptionId"
#: changed ids kept between two reads of a feed (a slow reader loses the oldest)
FEED_MAX: Final = 4096
#: resources one session or stream may subscribe to
MAX_SUBSCRIPTIONS: Final = 256
MAX_URI_CHARS: Final = 512
#: resource subscriptions one bearer token may hold over all its sessions, and all tokens
#: together (listen streams count against the global budget): at most 65,536 URIs of 512
#: characters, ~40 MB, where 256 per session x 10,000 sessions was ~1.4 GB
SUBSCRIPTIONS_PER_TOKEN: Final = 4096
SUBSCRIPTIONS_TOTAL: Final = 65_536
#: an SSE comment this often tells a stream whose client left (the write fails)
KEEPALIVE_S: Final = 15.0
LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_REPORT_KINDS: Final = ("report", "findings")

Send = Callable[[bytes], Awaitable[None]]
_enc = msgspec.json.Encoder()


def notification_bytes(method: str, params: dict[str, Any]) -> bytes:
    return _enc.encode({"jsonrpc": "2.0", "method": method, "params": params})


class ChangeFeed:
    """Task ids changed since the last :meth:`take`, oldest first, each once."""

    def __init__(self, svc: Service) -> None:
        self._pending: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._ready = asyncio.Event()
        self._stop = svc.on_task_change(self._offer)
        self.closed = False

    def _offer(self, task_id: str) -> None:
        self._pending[task_id] = None
        self._pending.move_to_end(task_id)
        if len(self._pending) > FEED_MAX:
            self._pending.popitem(last=False)
        self._ready.set()

    async def take(self, timeout_s: float | None = None) -> list[str]:
        """The changed ids; [] when ``timeout_s`` passes first."""
        if not self._pending:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        out = list(self._pending)
        self._pending.clear()
        return out

    def close(self) -> None:
        """Stop collecting and wake the reader, which then ends."""
        self.closed = True
        self._stop()
        self._ready.set()


class SharedReads:
    """The reads a task change's notifications are built from (its view, its DetailedTask),
    done once per change and shared by every stream that reports it: 999 streams on one
    task made each change cost 999 reads. Keyed by the change's sequence number (from the
    same change hook as the feeds), so a later change is never answered from an earlier
    read; the memo is bounded."""

    MEMO_MAX: Final = 256

    def __init__(self, svc: Service, tasks: TaskModel) -> None:
        self.svc = svc
        self.tasks = tasks
        self._seq = 0
        #: task id -> sequence number of its last change (bounded, oldest dropped)
        self._changed: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._memo: collections.OrderedDict[tuple[str, int, str], asyncio.Future[Any]] = (
            collections.OrderedDict()
        )
        self.reads = 0
        # never removed: a memo keyed by change numbers that stopped moving would go stale
        svc.on_task_change(self._on_change)

    def _on_change(self, task_id: str) -> None:
        self._seq += 1
        self._changed[task_id] = self._seq
        self._changed.move_to_end(task_id)
        if len(self._changed) > FEED_MAX:
            self._changed.popitem(last=False)

    async def _once(self, task_id: str, what: str, make: Callable[[], Awaitable[Any]]) -> Any:
        seq = self._changed.get(task_id)
        if seq is None:  # no change seen (or forgotten): nothing to share it with
            self.reads += 1
            return await make()
        key = (task_id, seq, what)
        fut = self._memo.get(key)
        if fut is None:
            self.reads += 1
            fut = asyncio.ensure_future(make())
            fut.add_done_callback(_retrieve)
            self._memo[key] = fut
            if len(self._memo) > self.MEMO_MAX:
                self._memo.popitem(last=False)
        # shielded: one stream that leaves must not cancel the read the others wait for
        return await asyncio.shield(fut)

    async def view(self, task_id: str, with_results: bool) -> TaskView:
        result: TaskView = await self._once(
            task_id,
            "view+results" if with_results else "view",
            lambda: self.svc.get_task(task_id, with_results=with_results),
        )
        return result

    async def detailed(self, v: TaskView) -> dict[str, Any]:
        result: dict[str, Any] = await self._once(
            v.task_id, "detailed", lambda: self.tasks.detailed(v)
        )
        return result


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a shared read's error as seen (its streams may all have left)."""
    if not fut.cancelled():
        fut.exception()


class Interest:
    """What one stream wants to hear about. Mutable: ``resources/subscribe`` adds to it."""

    __slots__ = (
        "close_stream",
        "finished_seen",
        "list_changed",
        "resource_uris",
        "task_ids",
        "tasks_modern",
    )

    def __init__(self) -> None:
        #: ends the stream that serves this interest (a session deleted while streaming)
        self.close_stream: Callable[[], None] | None = None
        self.resource_uris: set[str] = set()
        self.list_changed = False
        self.task_ids: set[str] = set()
        self.tasks_modern = False
        #: finished scans already announced by list_changed (bounded)
        self.finished_seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def empty(self) -> bool:
        return not (self.resource_uris or self.list_changed or self.task_ids)


class SubscriptionBudget:
    """Resource subscriptions held, per token and in all: each session's limit
    (``MAX_SUBSCRIPTIONS``) times the number of sessions would be too much memory."""

    def __init__(self, per_token_max: int | None = None, total_max: int | None = None) -> None:
        self.per_token_max = per_token_max or SUBSCRIPTIONS_PER_TOKEN
        self.total_max = total_max or SUBSCRIPTIONS_TOTAL
        self.total = 0
        self._by_key: dict[bytes, int] = {}

    def take(self, key: bytes | None, n: int = 1) -> str | None:
        """Take ``n`` places for ``key`` (None: a listen stream, global budget only), or say
        which budget is spent (nothing is taken then)."""
        if self.total + n > self.total_max:
            return (
                f"the server holds {self.total} resource subscriptions, its limit is "
                f"{self.total_max}; unsubscribe or end a session and retry"
            )
        if key is not None:
            held = self._by_key.get(key, 0)
            if held + n > self.per_token_max:
                return (
                    f"this token holds {held} resource subscriptions over its sessions, its "
                    f"limit is {self.per_token_max}; unsubscribe or end a session and retry"
                )
            self._by_key[key] = held + n
        self.total += n
        return None

    def give_back(self, key: bytes | None, n: int = 1) -> None:
        if n <= 0:
            return
        if key is not None:
            left = self._by_key.get(key, 0) - n
            if left > 0:
                self._by_key[key] = left
            else:
                self._by_key.pop(key, None)
        self.total = max(0, self.total - n)

    def held(self, key: bytes) -> int:
        return self._by_key.get(key, 0)


def check_uri(uri: Any) -> str:
    """A subscribable URI: a bounded string (any scheme: one we do not serve never fires)."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS:
        raise ValueError(f"params.uri must be a string of 1..{MAX_URI_CHARS} characters")
    return uri


async def pump_changes(
    reads: SharedReads,
    interest: Interest,
    send: Send,
    feed: ChangeFeed,
    *,
    subscription_id: Any = None,
    keepalive: Send | None = None,
) -> None:
    """Send the notifications ``interest`` asks for until cancelled, ``feed`` is closed or
    a write fails (the client left). ``subscription_id`` marks a 2026-07-28 listen stream."""
    meta = {SUBSCRIPTION_ID_META: subscription_id} if subscription_id is not None else None
    try:
        while not feed.closed:
            changed = await feed.take(KEEPALIVE_S)
            if feed.closed:
                break
            if not changed:
                if keepalive is not None:
                    await keepalive(b": keepalive\n\n")
                continue
            for task_id in changed:
                for method, params in await _events(reads, interest, task_id):
                    if meta is not None:  # a copy: the params may be shared by streams
                        params = {**params, "_meta": meta}
                    await send(notification_bytes(method, params))
    finally:
        feed.close()


async def _events(
    reads: SharedReads, interest: Interest, task_id: str
) -> list[tuple[str, dict[str, Any]]]:
    if interest.empty():
        return []
    uris = [f"nessus-pool://scans/{task_id}/{k}" for k in _REPORT_KINDS]
    wanted = [u for u in uris if u in interest.resource_uris]
    if not (wanted or interest.list_changed or task_id in interest.task_ids):
        return []
    out: list[tuple[str, dict[str, Any]]] = [
        ("notifications/resources/updated", {"uri": u}) for u in wanted
    ]
    try:
        v = await reads.view(task_id, task_id in interest.task_ids)
    except NessusPoolError:  # deleted by retention: gone from the list of finished scans
        interest.finished_seen.pop(task_id, None)
        if interest.list_changed:
            out.append(("notifications/resources/list_changed", {}))
        return out
    if interest.list_changed and v.finished_at_ms is not None:
        seen = interest.finished_seen
        if task_id not in seen:
            seen[task_id] = None
            if len(seen) > FEED_MAX:
                seen.popitem(last=False)
            out.append(("notifications/resources/list_changed", {}))
    if task_id in interest.task_ids:
        if interest.tasks_modern:
            out.append(("notifications/tasks", await reads.detailed(v)))
        else:
            out.append(("notifications/tasks/status", reads.tasks.task(v, False)))
    return out


class TaskLog:
    """``notifications/message`` for one scan's events at or above ``level``, sent on the
    stream of the request that waits for it. Only our own words and fields: never
    arguments, credentials or scanner replies."""

    __slots__ = ("_floor", "_last_status", "_send")

    def __init__(self, send: Send, level: str) -> None:
        self._send = send
        self._floor = LEVELS.index(level)
        self._last_status: str | None = None

    async def __call__(self, v: TaskView, message: str) -> None:
        if v.status == self._last_status:
            level = "debug"  # progress only
        elif v.status in ("failed", "timed_out"):
            level = "warning"
        elif v.status in ("completed", "canceled"):
            level = "notice"
        else:
            level = "info"
        self._last_status = v.status
        if LEVELS.index(level) < self._floor:
            return
        data: dict[str, Any] = {"task_id": v.task_id, "status": v.status, "message": message}
        if v.progress_pct is not None:
            data["progress_pct"] = v.progress_pct
        await self._send(
            notification_bytes(
                "notifications/message",
                {"level": level, "logger": "nessus-pool.scan", "data": data},
            )
        )
