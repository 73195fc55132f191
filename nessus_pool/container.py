"""What the container image needs from the daemon: an admin token generated at first start
(``nessus-pool serve --generate-admin-token``) and a health probe that finds the port in the
config (``python -m nessus_pool.container healthcheck``, the image's ``HEALTHCHECK``).

A container listens on 0.0.0.0, which needs an admin token; the image's config names one as
``{ file = "/var/lib/nessus-pool/admin-token" }`` on its volume. Rather than open an
unauthenticated listener, the first start writes a random token there (mode 0600) and says
where it is; the token itself is never printed.
"""

from __future__ import annotations

import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

from nessus_pool.config import (
    SecretSource,
    config_path_from,
    load_config,
    parse_listen,
)
from nessus_pool.errors import ConfigError

#: 256 bits, URL-safe: usable in an ``Authorization: Bearer`` header as it is
TOKEN_BYTES = 32


def generate_admin_tokens(config_path: str) -> list[Path]:
    """For every ``server.admin-tokens`` entry ``{ file = PATH }`` whose file does not exist,
    write a new random token to PATH (created 0600, never overwritten; the folder is created
    0700 if missing). Returns the files written. A config that does not load is left to
    ``serve`` to report; a file that cannot be written raises :class:`ConfigError` naming it.
    Relative names under ``$CREDENTIALS_DIRECTORY`` (systemd) are never generated."""
    try:
        cfg = load_config(config_path).config
    except ConfigError:
        return []
    written: list[Path] = []
    for k, ref in enumerate(cfg.server.admin_tokens):
        if not isinstance(ref, SecretSource) or ref.file is None:
            continue
        path = Path(ref.file)
        if not path.is_absolute() or path.exists():
            continue
        at = f"$.server.admin-tokens[{k}]"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot(path, exc, at) from None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # another process wrote it between the check and the open: keep theirs
        except OSError as exc:
            raise _cannot(path, exc, at) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
        written.append(path)
    return written


def _cannot(path: Path, exc: OSError, at: str) -> ConfigError:
    why = exc.strerror or type(exc).__name__
    return ConfigError(f"cannot generate the admin token file {path}: {why} - at `{at}`", path=at)


def probe_url(listen: str) -> str:
    """The ``/readyz`` URL to probe a daemon listening on ``listen`` from the same host: a
    wildcard address (0.0.0.0, ::) is probed on loopback."""
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/readyz"


def healthcheck(config_path: str, timeout_s: float = 4.0) -> int:
    """0 when the daemon of ``config_path`` answers ``/readyz`` with 200, else 1 (one line on
    stderr says why)."""
    try:
        url = probe_url(load_config(config_path).config.server.listen)
    except (ConfigError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, TimeoutError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["healthcheck"] or len(args) > 2:
        print("usage: python -m nessus_pool.container healthcheck [CONFIG]", file=sys.stderr)
        return 2
    return healthcheck(config_path_from(args[1] if len(args) == 2 else None))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
