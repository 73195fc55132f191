"""The MCP methods beyond tools and resource reads, in both eras: tasks, prompts,
completions, logging and subscriptions. The dispatcher routes here; everything below calls
the service (through :class:`TaskModel`, :class:`Prompts` and the change feed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from nessus_pool.api.mcp.events import (
    LEVELS,
    MAX_SUBSCRIPTIONS,
    SUBSCRIPTION_ID_META,
    ChangeFeed,
    Interest,
    SharedReads,
    SubscriptionBudget,
    TaskLog,
    check_uri,
    pump_changes,
)
from nessus_pool.api.mcp.prompts import PromptError, Prompts
from nessus_pool.api.mcp.tasks import (
    RELATED_TASK,
    TASK_TOOLS,
    TASKS_EXTENSION,
    TaskLookupError,
    TaskModel,
    status_message,
)

if TYPE_CHECKING:
    from nessus_pool.api.mcp.protocol import Session
    from nessus_pool.service import Service, TaskView

INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
MISSING_CAPABILITY: Final = -32021
LOG_LEVEL_META: Final = "io.modelcontextprotocol/logLevel"
IMMEDIATE_RESPONSE: Final = "io.modelcontextprotocol/model-immediate-response"
CLIENT_CAPABILITIES_META: Final = "io.modelcontextprotocol/clientCapabilities"
#: tasks one session remembers as its own (for notifications/tasks/status)
SESSION_TASKS_MAX: Final = 1024
#: open notification streams (listen + GET) at once: each one is a hook run on every change
MAX_STREAMS: Final = 1000

Notify = Callable[[bytes], Awaitable[None]]


class FeatureError(Exception):
    """A JSON-RPC error reply; the dispatcher turns it into its RpcError."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _need_admin(role: str, what: str) -> None:
    if role != "admin":
        raise FeatureError(
            INVALID_REQUEST,
            f"{what} changes state and needs an admin token; this token is read-only",
            {"status_code": 403},
        )


def declares_tasks(params: dict[str, Any]) -> bool:
    """Whether a 2026-07-28 request's client capabilities include the tasks extension."""
    caps = (params.get("_meta") or {}).get(CLIENT_CAPABILITIES_META)
    ext = caps.get("extensions") if isinstance(caps, dict) else None
    return isinstance(ext, dict) and TASKS_EXTENSION in ext


def _require_tasks(params: dict[str, Any]) -> None:
    if not declares_tasks(params):
        raise FeatureError(
            MISSING_CAPABILITY,
            "Missing required client capability",
            {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
        )


def request_log_level(params: dict[str, Any], session: Session | None, modern: bool) -> str | None:
    """The level task events are logged at for this request: 2026-07-28 per request
    (``_meta`` logLevel, validated), the handshake era per session (logging/setLevel)."""
    if not modern:
        return session.log_level if session is not None else None
    level = (params.get("_meta") or {}).get(LOG_LEVEL_META)
    if level is None:
        return None
    if level not in LEVELS:
        raise FeatureError(
            INVALID_PARAMS, f"_meta.{LOG_LEVEL_META} must be one of {', '.join(LEVELS)}"
        )
    return str(level)


class Features:
    def __init__(self, svc: Service, tasks: TaskModel, prompts: Prompts) -> None:
        self.svc = svc
        self.tasks = tasks
        self.prompts = prompts
        self._listens: set[ChangeFeed] = set()
        self.subscriptions = SubscriptionBudget()
        self.reads = SharedReads(svc, tasks)

    def shutdown(self) -> None:
        """Ends every open subscriptions/listen gracefully (daemon stop)."""
        for feed in list(self._listens):
            feed.close()

    def streams_left(self) -> int:
        return MAX_STREAMS - len(self._listens)

    def feed(self) -> ChangeFeed:
        """A change feed that :meth:`shutdown` closes. Raises FeatureError when
        ``MAX_STREAMS`` are open."""
        if self.streams_left() <= 0:
            raise FeatureError(
                INVALID_REQUEST,
                f"too many notification streams are open ({MAX_STREAMS}); close one and retry",
            )
        feed = ChangeFeed(self.svc)
        self._listens.add(feed)
        return feed

    async def _task_id(self, params: dict[str, Any]) -> Any:
        tid = params.get("taskId")
        if not isinstance(tid, str):
            raise FeatureError(
                INVALID_PARAMS, "params.taskId must be a string", {"field": "taskId"}
            )
        return tid

    async def handle(
        self,
        method: str,
        params: dict[str, Any],
        session: Session | None,
        modern: bool,
        role: str,
        notify: Notify | None,
        rid: Any,
        keepalive: Notify | None,
    ) -> Any:
        """The result of one method, or raises FeatureError; METHOD_NOT_FOUND for a method
        the era does not have."""
        try:
            return await self._route(method, params, session, modern, role, notify, rid, keepalive)
        except TaskLookupError as exc:
            raise FeatureError(INVALID_PARAMS, str(exc), {"field": exc.field}) from None
        except PromptError as exc:
            raise FeatureError(INVALID_PARAMS, str(exc), {"field": exc.field}) from None

    async def _route(
        self,
        method: str,
        params: dict[str, Any],
        session: Session | None,
        modern: bool,
        role: str,
        notify: Notify | None,
        rid: Any,
        keepalive: Notify | None,
    ) -> Any:
        done: dict[str, Any] = {"resultType": "complete"} if modern else {}
        if method == "prompts/get":
            got = await self.prompts.get(params.get("name"), params.get("arguments"), role)
            return {**got, **done}
        if method == "completion/complete":
            got = await self.prompts.complete(params.get("ref"), params.get("argument"), role)
            return {**got, **done}
        if method == "tasks/get":
            if modern:
                _require_tasks(params)
            return await self.tasks.get(await self._task_id(params), modern)
        if method == "tasks/cancel":
            if modern:
                _require_tasks(params)
            _need_admin(role, "tasks/cancel")
            return await self.tasks.cancel(await self._task_id(params), modern)
        if modern and method == "tasks/update":
            _require_tasks(params)
            await self.tasks.view(await self._task_id(params))
            return done  # our scans never ask for input: nothing is outstanding
        if modern and method == "subscriptions/listen":
            return await self._listen(params, notify, rid, keepalive)
        if not modern:
            if method == "tasks/result":
                return await self._result(params, session, notify, role)
            if method == "tasks/list":
                cursor = params.get("cursor")
                return await self.tasks.list_page(cursor)
            if method == "logging/setLevel":
                level = params.get("level")
                if level not in LEVELS:
                    raise FeatureError(
                        INVALID_PARAMS,
                        f"params.level must be one of {', '.join(LEVELS)}",
                        {"field": "level"},
                    )
                if session is not None:
                    session.log_level = str(level)
                return {}
            if method in ("resources/subscribe", "resources/unsubscribe"):
                return self._subscribe(method, params, session)
        raise FeatureError(METHOD_NOT_FOUND, f"method not found: {method}")

    async def _result(
        self, params: dict[str, Any], session: Session | None, notify: Notify | None, role: str
    ) -> Any:
        from nessus_pool.api.mcp.tools import ToolContext

        tid = await self._task_id(params)
        level = session.log_level if session is not None else None
        log = TaskLog(notify, level) if notify is not None and level is not None else None

        async def on_change(v: TaskView) -> None:
            if log is not None:
                await log(v, status_message(v, self.svc.engine.clock.now_ms()))

        return await self.tasks.wait_result(tid, ToolContext(role=role), on_change)

    def _subscribe(self, method: str, params: dict[str, Any], session: Session | None) -> Any:
        try:
            uri = check_uri(params.get("uri"))
        except ValueError as exc:
            raise FeatureError(INVALID_PARAMS, str(exc), {"field": "uri"}) from None
        if session is None:
            raise FeatureError(INVALID_REQUEST, "subscriptions need a session")
        uris = session.interest.resource_uris
        if method == "resources/unsubscribe":
            if uri in uris:
                uris.discard(uri)
                self.subscriptions.give_back(session.auth_key)
            return {}
        if uri in uris:
            return {}
        if len(uris) >= MAX_SUBSCRIPTIONS:
            raise FeatureError(
                INVALID_PARAMS,
                f"at most {MAX_SUBSCRIPTIONS} resource subscriptions per session",
                {"field": "uri"},
            )
        refused = self.subscriptions.take(session.auth_key)
        if refused is not None:
            raise FeatureError(INVALID_PARAMS, refused, {"field": "uri"})
        uris.add(uri)
        return {}

    def forget(self, session: Session) -> None:
        """A session that ended: its subscriptions go back to the budget."""
        uris = session.interest.resource_uris
        self.subscriptions.give_back(session.auth_key, len(uris))
        uris.clear()

    async def _listen(
        self, params: dict[str, Any], notify: Notify | None, rid: Any, keepalive: Notify | None
    ) -> Any:
        """2026-07-28 ``subscriptions/listen``: acknowledge the honoured filter, then stream
        until the client leaves or the server stops (then a graceful result)."""
        wanted = params.get("notifications")
        if not isinstance(wanted, dict):
            raise FeatureError(
                INVALID_PARAMS, "params.notifications must be an object", {"field": "notifications"}
            )
        if notify is None:
            raise FeatureError(INVALID_REQUEST, "subscriptions/listen needs a streaming transport")
        interest = Interest()
        honoured: dict[str, Any] = {}
        if wanted.get("resourcesListChanged") is True:
            interest.list_changed = True
            honoured["resourcesListChanged"] = True
        subs = wanted.get("resourceSubscriptions")
        if subs is not None:
            if not isinstance(subs, list) or len(subs) > MAX_SUBSCRIPTIONS:
                raise FeatureError(
                    INVALID_PARAMS,
                    f"notifications.resourceSubscriptions must be a list of at most "
                    f"{MAX_SUBSCRIPTIONS} URIs",
                    {"field": "notifications.resourceSubscriptions"},
                )
            try:
                interest.resource_uris = {check_uri(u) for u in subs}
            except ValueError as exc:
                raise FeatureError(
                    INVALID_PARAMS, str(exc), {"field": "notifications.resourceSubscriptions"}
                ) from None
            honoured["resourceSubscriptions"] = sorted(interest.resource_uris)
        task_ids = wanted.get("taskIds")
        if task_ids is not None:
            _require_tasks(params)
            if not isinstance(task_ids, list) or len(task_ids) > MAX_SUBSCRIPTIONS:
                raise FeatureError(
                    INVALID_PARAMS,
                    f"notifications.taskIds must be a list of at most {MAX_SUBSCRIPTIONS} ids",
                    {"field": "notifications.taskIds"},
                )
            if not all(isinstance(t, str) for t in task_ids):
                raise FeatureError(
                    INVALID_PARAMS,
                    "notifications.taskIds must be task id strings",
                    {"field": "notifications.taskIds"},
                )
            known = []
            for tid in task_ids:
                try:
                    known.append((await self.tasks.view(tid)).task_id)
                except TaskLookupError:
                    continue  # not acknowledged: the client sees which ones we honour
            interest.task_ids = set(known)
            interest.tasks_modern = True
            honoured["taskIds"] = known
        meta = {SUBSCRIPTION_ID_META: rid}
        from nessus_pool.api.mcp.events import notification_bytes

        charged = len(interest.resource_uris)
        refused = self.subscriptions.take(None, charged)
        if refused is not None:
            raise FeatureError(
                INVALID_PARAMS, refused, {"field": "notifications.resourceSubscriptions"}
            )
        try:
            feed = self.feed()  # before the acknowledgement: a refusal is still an error reply
        except BaseException:
            self.subscriptions.give_back(None, charged)
            raise
        try:  # the acknowledgement inside: a client gone before it must not leak the feed
            await notify(
                notification_bytes(
                    "notifications/subscriptions/acknowledged",
                    {"_meta": meta, "notifications": honoured},
                )
            )
            await pump_changes(
                self.reads, interest, notify, feed, subscription_id=rid,
                keepalive=keepalive,
            )  # fmt: skip
        except ConnectionError:
            pass  # the client left; nobody reads the result
        finally:
            feed.close()
            self._listens.discard(feed)
            self.subscriptions.give_back(None, charged)
        return {"resultType": "complete", "_meta": meta}

    async def session_changes(
        self, interest: Interest, send: Notify, keepalive: Notify | None = None
    ) -> None:
        """A handshake-era session's notifications: subscriptions, list changes, its
        tasks' status. Ends on shutdown or when a write fails."""
        interest.list_changed = True
        feed = self.feed()
        interest.close_stream = feed.close
        try:
            await pump_changes(self.reads, interest, send, feed, keepalive=keepalive)
        except ConnectionError:
            pass
        finally:
            interest.close_stream = None
            feed.close()
            self._listens.discard(feed)

    async def task_call(
        self,
        params: dict[str, Any],
        session: Session | None,
        modern: bool,
        run: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """A scan tool call that becomes an MCP task: 2025-11-25 when the client asks
        (``params.task``), 2026-07-28 when the client declares the tasks extension (the
        server decides; it always does for a scan that was accepted). ``run`` makes the
        ordinary tool call."""
        name = params.get("name")
        if not modern:
            if not isinstance(params.get("task"), dict):
                raise FeatureError(
                    INVALID_PARAMS, "params.task must be an object", {"field": "task"}
                )
            if name not in TASK_TOOLS:
                raise FeatureError(
                    METHOD_NOT_FOUND,
                    f"tool {str(name)[:60]!r} does not run as a task (execution.taskSupport); "
                    "call it without params.task",
                )
        elif not declares_tasks(params):
            return await run()
        result = await run()
        if result.get("isError"):
            if modern:  # the server decides: no task for a refused submit
                return result
            text = result["content"][0]["text"]
            raise FeatureError(
                INVALID_PARAMS, f"the scan was not accepted: {text}", {"field": "arguments"}
            )
        task_id = self.tasks.created(result["structuredContent"])
        view = await self.tasks.view(task_id)
        self.remember_task(session, task_id)
        if modern:
            return {"resultType": "task", **self.tasks.task(view, True)}
        return {
            "task": self.tasks.task(view, False),
            "_meta": {
                IMMEDIATE_RESPONSE: result["content"][0]["text"],
                RELATED_TASK: {"taskId": task_id},
            },
        }

    def remember_task(self, session: Session | None, task_id: str) -> None:
        if session is None:
            return
        ids = session.interest.task_ids
        if len(ids) >= SESSION_TASKS_MAX:
            ids.pop()
        ids.add(task_id)
