"""stdio transport: newline-delimited JSON-RPC on stdin/stdout, logs on stderr.

``nessus-pool mcp`` (started by ``nessus_pool.mcp_cli``) serves here an embedded engine's
dispatcher or, with ``--connect``, bridges stdio to a running daemon's ``/mcp`` (``bridge``
builds on this module, never the reverse). File descriptor 1 is re-pointed at stderr at
start, so a stray ``print`` can never corrupt the protocol stream; replies go to a private
duplicate of the original stdout. The process exits as soon as stdin reaches EOF.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from nessus_pool.api.mcp import protocol as p

log = logging.getLogger("nessus_pool.mcp")

TOKEN_ENV = "NESSUS_POOL_TOKEN"
TOKEN_FILE_ENV = "NESSUS_POOL_TOKEN_FILE"
LINE_LIMIT = 16 * 1024 * 1024
#: on EOF, requests still running get this long to answer, then are cancelled (SDK clients
#: close stdin and send SIGTERM 2 s later; a long wait_for_scan is cut short)
EOF_GRACE_S = 1.0


class Output:
    """Serialised writes of one message per line to the protocol stream."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), self._file
            )
        except (ValueError, OSError):  # a regular file: plain writes are fine
            return
        self._writer = asyncio.StreamWriter(transport, proto, None, loop)

    async def send(self, data: bytes) -> None:
        if self._writer is None:
            self._file.write(data + b"\n")
            return
        self._writer.write(data + b"\n")
        await self._writer.drain()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            self._file.close()


def take_stdout() -> int:
    """A private fd for the protocol; fd 1 now goes to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return fd


async def open_stdin() -> Callable[[], Awaitable[bytes]]:
    """A line reader on fd 0: non-blocking for a pipe, socket or terminal; a thread for
    anything else (a regular file, ``/dev/null``), which the event loop cannot watch."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    mode = os.fstat(0).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0):
        # closefd=False: fd 0 stays open for the fallback if the loop refuses it
        stdin = os.fdopen(0, "rb", buffering=0, closefd=False)
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
        except (ValueError, OSError):
            pass
        else:

            async def readline() -> bytes:
                try:
                    return await reader.readline()
                except ValueError:  # longer than LINE_LIMIT: the rest arrives as a broken line
                    return b"\x00"

            return readline
    return lambda: asyncio.to_thread(sys.stdin.buffer.readline)


Handler = Callable[[dict[str, Any]], Awaitable[bytes | None]]


async def pump(
    readline: Callable[[], Awaitable[bytes]],
    out: Output,
    on_request: Handler,
    on_notification: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Read until EOF; each request runs as its own task (a long wait_for_scan must not
    hold up the others), except ``initialize``, which is answered before the next message is
    read: a client may pipeline ``initialize``, ``notifications/initialized`` and its first
    requests in one write, and those need the session that ``initialize`` creates (over the
    bridge, its ``Mcp-Session-Id``). On EOF the requests still running get ``EOF_GRACE_S``
    to answer, then are cancelled."""
    running: dict[Any, asyncio.Task[None]] = {}

    async def run(msg: dict[str, Any]) -> None:
        reply = await on_request(msg)
        if reply is not None:
            await out.send(reply)

    try:
        while line := await readline():
            line = line.strip()
            if not line:
                continue
            try:
                msg = p.decode(line)
            except p.RpcError as exc:
                await out.send(p.error_bytes(None, exc.code, exc.message))
                continue
            kind = p.classify(msg)
            if kind == "request" and msg["method"] == "initialize":
                await run(msg)
            elif kind == "request":
                rid = msg["id"]
                if rid in running:  # replacing it would make the first one uncancellable
                    why = f"request id {rid!r} is already in flight; use a new id"
                    await out.send(p.error_bytes(rid, p.INVALID_REQUEST, why))
                    continue
                task = asyncio.create_task(run(msg), name=f"mcp:{msg['method']}")
                running[rid] = task
                task.add_done_callback(functools.partial(_reap, running, rid))
            elif kind == "notification":
                if msg["method"] == "notifications/cancelled":
                    rid = p.params_of(msg).get("requestId")
                    if isinstance(rid, (str, int)) and rid in running:
                        running[rid].cancel()
                else:
                    await on_notification(msg)
            elif kind == "invalid":
                msg_text = "expected a JSON-RPC 2.0 request, notification or response object"
                await out.send(p.error_bytes(p.request_id(msg), p.INVALID_REQUEST, msg_text))
    finally:
        if running:  # answer what was asked before EOF if it is quick (``printf ... |``)
            await asyncio.wait(list(running.values()), timeout=EOF_GRACE_S)
        for task in running.values():
            task.cancel()
        if running:
            await asyncio.gather(*running.values(), return_exceptions=True)


def _reap(running: dict[Any, asyncio.Task[None]], rid: Any, task: asyncio.Task[None]) -> None:
    if running.get(rid) is task:
        del running[rid]
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "mcp request task failed",
            exc_info=task.exception(),
            extra={"event": "mcp_task_failed"},
        )


async def serve(
    dispatcher: p.Dispatcher, readline: Callable[[], Awaitable[bytes]], out: Output
) -> None:
    """Serve one stdio connection with the embedded engine; change notifications for the
    session (subscriptions, its MCP tasks) go out on the same stream."""
    session = p.Session()

    async def on_request(msg: dict[str, Any]) -> bytes | None:
        reply, _ = await dispatcher.handle(msg, session, notify=out.send)
        return reply

    async def on_notification(msg: dict[str, Any]) -> None:
        if msg["method"] == "notifications/initialized":
            session.initialized = True

    changes = dispatcher.session_changes(session, out.send)
    watcher = asyncio.create_task(changes, name="mcp:stdio-changes") if changes else None
    try:
        await pump(readline, out, on_request, on_notification)
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
