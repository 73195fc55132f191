"""stdio transport: newline-delimited JSON-RPC on stdin/stdout, logs on stderr.

``nessus-pool mcp`` runs the engine embedded (taking the storage lock) or, with ``--connect``,
bridges stdio to a running daemon's ``/mcp``. File descriptor 1 is re-pointed at stderr at
start, so a stray ``print`` can never corrupt the protocol stream; replies go to a private
duplicate of the original stdout. The process exits as soon as stdin reaches EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yarl

from nessus_pool.api.mcp import protocol as p

if TYPE_CHECKING:
    from nessus_pool.config import Config

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


def _say(text: str) -> None:
    print(f"nessus-pool mcp: {text}", file=sys.stderr, flush=True)


async def _until_signal(main: Awaitable[int]) -> int:
    """Run ``main``; SIGTERM/SIGINT cancel it (the caller's ``finally`` cleans up)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 0
    finally:
        for sig in sigs:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def run_stdio(args: argparse.Namespace) -> int:
    """``nessus-pool mcp``: 0 on EOF, 1 when it cannot run (no daemon to bridge to, storage
    in use), 2 for a bad config or argument."""
    from nessus_pool.api.mcp.bridge import bridge

    connect = getattr(args, "connect", None)
    if connect is not None:
        problem = connect_problem(connect)
        if problem:
            _say(f"error: --connect {_without_userinfo(connect)!r}: {problem}")
            return 2
    try:
        token = resolve_token(args)
    except ValueError as exc:
        _say(f"error: {exc}")
        return 2
    out = Output(take_stdout())
    await out.open()
    readline = await open_stdin()
    try:
        if connect:
            logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
            _say(f"bridging stdio to the daemon at {connect}")
            _warn_token_argument(args, token)
            return await _until_signal(bridge(connect, token, readline, out))
        return await _until_signal(_embedded(args, token, readline, out))
    finally:
        out.close()


def connect_problem(url: str) -> str | None:
    """What is wrong with a ``--connect`` URL, or None: checked before anything starts, so
    ``127.0.0.1:8835`` fails at once instead of once per request."""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:
        return f"not a URL ({exc})"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "expected http://HOST:PORT/mcp (or https://), with the scheme"
    if parsed.user is not None or parsed.password is not None:
        return (
            "credentials in the URL are not used (they would show in ps and logs): "
            f"pass the token with --token-file or ${TOKEN_ENV}"
        )
    return None


def _without_userinfo(url: str) -> str:
    """The URL as it may be printed: any ``user:password@`` left out."""
    head, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    return f"{head}{sep}{authority.rpartition('@')[2]}{slash}{path}"


def resolve_token(args: argparse.Namespace) -> str | None:
    """``--token-file``, then ``$NESSUS_POOL_TOKEN``, then ``$NESSUS_POOL_TOKEN_FILE``, then
    ``--token`` (which warns: a command line shows in ``ps`` and shell history). Raises
    ``ValueError`` naming the option or variable for a file that cannot be read or is empty."""
    token_file = getattr(args, "token_file", None)
    if token_file:
        return _read_token(token_file, "--token-file")
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if os.environ.get(TOKEN_FILE_ENV):
        return _read_token(os.environ[TOKEN_FILE_ENV], f"${TOKEN_FILE_ENV}")
    token: str | None = getattr(args, "token", None)
    return token


def _warn_token_argument(args: argparse.Namespace, token: str | None) -> None:
    """After the mode line (the first stderr line names the mode): a token that came from
    ``--token`` is visible to every user of the machine."""
    if token is not None and token == getattr(args, "token", None):
        _say(
            "warning: --token puts the token on the command line (visible in ps); "
            f"use --token-file or ${TOKEN_ENV} instead"
        )


def _read_token(path: str, source: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{source}: cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise ValueError(f"{source}: token file {path} is empty")
    return token


def _held_elsewhere(storage: Path) -> bool:
    """Does another process hold ``<storage>/.lock``? Asked before starting, so the first
    stderr line can name the mode; the daemon's own lock still decides (a start racing
    this one ends in its ``LockedError``)."""
    try:
        fd = os.open(storage / ".lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def _real(path: str) -> Path:
    return Path(path).resolve()


def _absolute(path: str) -> str:
    return str(Path(path).absolute())


def _storage(daemon: Any, configured: str) -> str:
    """The storage directory the daemon actually locked, as an absolute path."""
    lock = getattr(daemon, "lock", None)
    return str(lock.path.parent.resolve() if lock is not None else Path(configured).absolute())


async def _embedded(
    args: argparse.Namespace,
    token: str | None,
    readline: Callable[[], Awaitable[bytes]],
    out: Output,
) -> int:
    from nessus_pool.api.mcp import build_dispatcher
    from nessus_pool.config import config_path_from, load_config
    from nessus_pool.daemon import Daemon
    from nessus_pool.errors import ConfigError, LockedError
    from nessus_pool.logs import setup_logging

    path = config_path_from(getattr(args, "config", None))
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        _say(f"error: {exc}")
        return 2
    cfg = loaded.config
    config_file = _absolute(path)
    storage = _real(cfg.storage.path)
    if _held_elsewhere(storage):
        return await _bridge_to_owner(args, cfg, config_file, str(storage), token, readline, out)
    pools = ", ".join(p.name for p in cfg.pools) or "none"
    # before logging starts: the first stderr line names the mode (a desktop client's log)
    _say(
        f"embedded engine: config {config_file}, storage {storage}, pools {pools} "
        "(a daemon already running elsewhere is not used: --connect URL bridges to one)"
    )
    setup_logging(cfg.logging.format, cfg.logging.level)
    daemon = Daemon(loaded, config_path=path, serve_http=False)
    try:
        await daemon.start()
    except LockedError:
        storage_s = _storage(daemon, cfg.storage.path)
        return await _bridge_to_owner(args, cfg, config_file, storage_s, token, readline, out)
    except ConfigError as exc:
        _say(f"error: {exc}")
        return 2
    try:
        assert daemon.service is not None
        await serve(build_dispatcher(daemon.service), readline, out)
    finally:
        await asyncio.shield(daemon.stop())
    return 0


async def _bridge_to_owner(
    args: argparse.Namespace,
    cfg: Config,
    config_file: str,
    storage: str,
    token: str | None,
    readline: Callable[[], Awaitable[bytes]],
    out: Output,
) -> int:
    """A daemon holds the storage: bridge to its configured address, or say how to."""
    from nessus_pool.api.mcp.bridge import bridge, daemon_url, token_from_config

    url = daemon_url(cfg)
    if url is None:
        _say(
            f"a nessus-pool daemon already uses the storage {storage} (config {config_file}) "
            "and its listen address is not fixed, so this session cannot find it: run "
            "nessus-pool mcp --connect http://HOST:PORT/mcp"
        )
        return 1
    _say(
        f"a nessus-pool daemon already runs on the storage {storage} (config "
        f"{config_file}); bridging stdio to it at {url} (--connect URL picks another)"
    )
    _warn_token_argument(args, token)
    return await bridge(url, token or token_from_config(cfg), readline, out)
