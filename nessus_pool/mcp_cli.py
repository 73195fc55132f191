"""``nessus-pool mcp``: the start-up of the MCP stdio server, on the composition side. It
checks the arguments, then runs the engine embedded (taking the storage lock) and hands the
stdio transport (``api.mcp.stdio``) a dispatcher, or bridges stdio to a running daemon's
``/mcp`` (``api.mcp.bridge``); the api layer never imports the daemon."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yarl

from nessus_pool.api.mcp.stdio import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    Output,
    open_stdin,
    serve,
    take_stdout,
)

if TYPE_CHECKING:
    from nessus_pool.config import Config


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
