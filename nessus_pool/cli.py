"""Command line: argument parsing and exit codes (0 ok, 1 operation failed, 2 usage or
validation error; a reader that goes away, as ``| head`` does, ends any command quietly with
1). ``sys.exit`` happens here only."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nessus_pool import __version__
from nessus_pool.config import (
    CONFIG_ENV,
    config_path_from,
    load_config,
    preflight,
    render_starter_config,
)
from nessus_pool.errors import ConfigError
from nessus_pool.render import plural


class Parser(argparse.ArgumentParser):
    """No abbreviated options (``--min-sev`` is a typo, not ``--min-severity``), and an
    unknown option is reported by the (sub)command it was given to, with its usage and the
    nearest option it has: ``scan results X --min-severty high`` says "did you mean
    --min-severity?" under ``usage: nessus-pool scan results``, not the top-level usage.
    Subcommands inherit the class (``add_subparsers`` uses ``type(self)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            # the innermost parser errors first: its usage is the one that helps
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._suggest(extras)}")
        return ns, extras

    def _suggest(self, extras: list[str]) -> str:
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for word in extras:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="nessus-pool",
        description="Run fleets of Tenable Nessus scanners for AI agents and operators.",
    )
    p.add_argument("--version", action="version", version=f"nessus-pool {__version__}")
    sub: argparse._SubParsersAction[Any] = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )

    cfg_help = f"config file (default: ${CONFIG_ENV} or ./nessus-pool.toml)"
    serve = sub.add_parser("serve", help="run the daemon (MCP, admin API, metrics on one port)")
    serve.add_argument("--config", help=cfg_help)
    serve.add_argument(
        "--generate-admin-token",
        action="store_true",
        help="write a random token to each admin-tokens { file = PATH } that does not exist "
        "yet (0600) and print PATH (the container image's first start)",
    )

    mcp = sub.add_parser("mcp", help="MCP over stdio: embedded engine or --connect to a daemon")
    mcp.add_argument("--config", help=cfg_help)
    mcp.add_argument("--connect", metavar="URL", help="bridge stdio to a running daemon")
    mcp.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the bearer token for --connect "
        "(default: $NESSUS_POOL_TOKEN, then $NESSUS_POOL_TOKEN_FILE)",
    )
    mcp.add_argument("--token", help=argparse.SUPPRESS)  # warns: visible in ps

    config = sub.add_parser("config", help="check or create a config file")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = csub.add_parser(
        "check",
        help="run the checks `serve` runs at start (exit 0, or 2 naming each problem)",
    )
    check.add_argument("--config", help=cfg_help)
    check.add_argument(
        "--offline",
        action="store_true",
        help="check the file only: do not read secrets, CA files or the storage folder",
    )
    init = csub.add_parser("init", help="write a starting config file")
    init.add_argument("--output", "-o", default="nessus-pool.toml")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    try:
        from nessus_pool.simulator import add_simulate_parser

        add_simulate_parser(sub)
    except ImportError:  # pragma: no cover - the simulator ships with the package
        pass
    try:
        from nessus_pool.results.cli import add_results_parser

        add_results_parser(sub)
    except ImportError:  # pragma: no cover
        pass
    from nessus_pool.storage_cli import add_storage_parser

    add_storage_parser(sub)
    try:
        from nessus_pool.ops.parser import add_ops_parsers

        add_ops_parsers(sub)
    except ImportError:
        pass
    return p


def cmd_config_check(path_arg: str | None, offline: bool = False) -> int:
    """What ``serve`` checks before it starts (one function, :func:`preflight`), so a file
    that passes here starts there."""
    path = config_path_from(path_arg)
    try:
        loaded = load_config(path)
        unavailable = preflight(loaded.config, offline=offline)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in loaded.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for u in unavailable:
        print(
            f"warning: credential set {u.credential!r} cannot be used: {u.message} - at "
            f"`{u.path}`; the daemon starts, and refuses scans that name it",
            file=sys.stderr,
        )
    cfg = loaded.config
    scanners = sum(len(p.scanners) for p in cfg.pools)
    sim = f", simulator with {plural(cfg.simulator.scanners, 'scanner')}" if cfg.simulator else ""
    what = "file only (--offline)" if offline else f"storage {cfg.storage.path}"
    counts = f"{plural(len(cfg.pools), 'pool')}, {plural(scanners, 'scanner')}"
    print(f"{path}: ok ({counts}{sim}; {what})")
    return 0


def cmd_generate_admin_token(config_path: str) -> int:
    """``serve --generate-admin-token``: say where a new token was written, never its value."""
    from nessus_pool.container import generate_admin_tokens

    try:
        written = generate_admin_tokens(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(
            f"generated an admin token (first start) in {path}; send it as "
            f"'Authorization: Bearer TOKEN', e.g. TOKEN=$(docker exec CONTAINER cat {path})",
            file=sys.stderr,
        )
    return 0


def cmd_config_init(output: str, force: bool) -> int:
    """Write the starter config to ``output`` (``-``: stdout)."""
    if output == "-":
        sys.stdout.write(render_starter_config())
        return 0
    out = Path(output)
    if out.exists() and not force:
        print(f"error: {out} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    try:
        out.write_text(render_starter_config(), encoding="utf-8")
    except OSError as exc:
        hint = " (create the folder first)" if isinstance(exc, FileNotFoundError) else ""
        print(f"error (--output): cannot write {out}: {exc.strerror or exc}{hint}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = _dispatch(parser, args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away (``| head``): no traceback; stdout goes to /dev/null so the
        # interpreter's final flush does not fail again (as the Python docs advise)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "serve":
        from nessus_pool.daemon import run_daemon

        if args.generate_admin_token:
            code = cmd_generate_admin_token(config_path_from(args.config))
            if code:
                return code
        return asyncio.run(run_daemon(config_path_from(args.config)))
    if args.command == "mcp":
        from nessus_pool.mcp_cli import run_stdio

        return asyncio.run(run_stdio(args))
    if args.command == "config":
        if args.config_command == "check":
            return cmd_config_check(args.config, args.offline)
        return cmd_config_init(args.output, args.force)
    if args.command == "simulate":
        from nessus_pool.simulator import run_simulate

        try:
            return asyncio.run(run_simulate(args))
        except KeyboardInterrupt:
            return 0
    if args.command == "results":
        from nessus_pool.results.cli import run_results

        return run_results(args)
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
