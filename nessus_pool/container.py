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
import stat
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import msgspec

from nessus_pool.config import (
    Config,
    SecretRef,
    SecretSource,
    absolute_paths,
    config_path_from,
    load_config,
    parse_listen,
)
from nessus_pool.errors import ConfigError

#: 256 bits, URL-safe: usable in an ``Authorization: Bearer`` header as it is
TOKEN_BYTES = 32


def generate_admin_tokens(config_path: str) -> list[Path]:
    """For every ``server.admin-tokens`` entry ``{ file = PATH }`` whose file does not exist
    or is an empty regular file (a crash between creating and writing it), write a new
    random token to PATH (0600; a token already there is never overwritten, a symlink never
    followed; the folder is created 0700 if missing). Returns the files written. A config
    that does not parse is left to ``serve`` to report (one that parses is read before
    validation, which would refuse the empty token file); a file that cannot be written raises
    :class:`ConfigError` naming it. Relative names under ``$CREDENTIALS_DIRECTORY``
    (systemd) are never generated."""
    written: list[Path] = []
    for k, ref in enumerate(_admin_token_refs(config_path)):
        if not isinstance(ref, SecretSource) or ref.file is None:
            continue
        path = Path(ref.file)
        if not path.is_absolute():
            continue
        state = _token_file_state(path)
        if state == "keep":
            continue
        at = f"$.server.admin-tokens[{k}]"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if _write_token(path, replace_empty=state == "empty"):
                written.append(path)
        except OSError as exc:
            raise _cannot(path, exc, at) from None
    return written


def _admin_token_refs(config_path: str) -> list[SecretRef]:
    """``server.admin-tokens`` of a config that parses, before validation: validation reads
    the token files, and an empty one (what this function repairs) fails it."""
    p = Path(config_path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
        config = absolute_paths(msgspec.convert(raw, Config, str_keys=True), p.parent)
    except (OSError, UnicodeError, tomllib.TOMLDecodeError, msgspec.ValidationError, ConfigError):
        return []
    return list(config.server.admin_tokens)


def _token_file_state(path: Path) -> str:
    """``absent``, ``empty`` (a regular file of 0 bytes) or ``keep`` (anything else,
    symlinks included: never followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    except NotADirectoryError:
        return "absent"  # the folder is not one: mkdir reports it
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return "empty"
    return "keep"


def _write_token(path: Path, *, replace_empty: bool) -> bool:
    """Write the token whole to a new file beside ``path`` (O_EXCL, O_NOFOLLOW, fsynced),
    then give it its name: linked when ``path`` is absent (fails if it appeared meanwhile:
    theirs is kept), renamed over it when it is an empty file. A crash at any point leaves
    either no token file or a complete one, never an empty one. False when another process
    won the race."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if replace_empty:
            if _token_file_state(path) != "empty":
                return False  # written meanwhile (or replaced by a link): keep it
            os.replace(tmp, path)  # renames over the entry itself, never through a link
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False  # another process wrote it between the check and now
        return True
    finally:
        tmp.unlink(missing_ok=True)


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
