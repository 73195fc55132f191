"""The admin API over stdlib HTTP (``urllib``): one request at a time, errors as
:class:`CliError` subclasses carrying the exit code ``cli`` uses, and where the daemon and
its token are."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nessus_pool import __version__

URL_ENV = "NESSUS_POOL_URL"
TOKEN_ENV = "NESSUS_POOL_TOKEN"
TOKEN_FILE_ENV = "NESSUS_POOL_TOKEN_FILE"
DEFAULT_URL = "http://127.0.0.1:8835"
_CHUNK = 1 << 16


class CliError(Exception):
    """The command failed; the message is printed as ``error: ...``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Unreachable(CliError):
    """The daemon did not answer (connection refused, DNS, timeout)."""


class ApiError(CliError):
    """The daemon answered with an HTTP error. 400 and 422 are the caller's fault (exit 2)."""

    def __init__(self, status: int, body: Any, message: str, field: str | None) -> None:
        text = f"{message} (field: {field})" if field else message
        super().__init__(text, 2 if status in (400, 422) else 1)
        self.status = status
        self.body = body
        self.field = field


class ApiClient:
    """The admin API over stdlib HTTP. Errors become :class:`CliError` subclasses."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float) -> None:
        self.base_url = base_url
        self.token = token
        self.timeout_s = timeout_s

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body."""
        with self._open(method, path, query=query, body=body) as resp:
            raw = resp.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise CliError(
                f"{self.base_url} answered {path} with something that is not "
                "JSON; is --url pointing at nessus-pool?"
            ) from None

    def download(self, path: str, write: Callable[[bytes], object]) -> int:
        """Stream a response body to ``write`` in chunks; returns the byte count."""
        total = 0
        with self._open("GET", path, accept="application/xml") as resp:
            while chunk := resp.read(_CHUNK):
                write(chunk)
                total += len(chunk)
        return total

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        accept: str = "application/json",
    ) -> http.client.HTTPResponse:
        url = self.base_url + path
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": accept, "User-Agent": f"nessus-pool-cli/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            resp: http.client.HTTPResponse = urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _api_error(exc.code, exc.reason, exc.read(), bool(self.token)) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return resp

    def _unreachable(self, reason: object) -> Unreachable:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused (is the daemon running? set --url or $NESSUS_POOL_URL)"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {self.timeout_s:g}s (--timeout)"
        else:
            why = str(reason) or type(reason).__name__
        return Unreachable(f"cannot reach nessus-pool at {self.base_url}: {why}")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _api_error(status: int, reason: str, raw: bytes, sent_token: bool = False) -> ApiError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("code") or reason)
        field = err.get("field")
        hint = ""
        if status == 401 and sent_token:
            hint = (
                " (the token sent, from --token-file, "
                f"${TOKEN_ENV} or ${TOKEN_FILE_ENV}, was refused: check its value)"
            )
        elif status == 401:
            hint = f" (no token was sent: set ${TOKEN_ENV} or --token-file)"
        return ApiError(status, body, f"{message}{hint}", str(field) if field else None)
    return ApiError(status, body, f"HTTP {status} {reason}", None)


def seg(value: str) -> str:
    """One path segment; the daemon validates ids, we only keep them in their segment."""
    return urllib.parse.quote(value, safe="")


def resolve_url(arg: str | None) -> str:
    url = (arg or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--url {url!r} is not an http(s) URL, e.g. {DEFAULT_URL}", 2)
    return url


def resolve_token(token_file: str | None) -> str | None:
    """``--token-file`` wins, then ``$NESSUS_POOL_TOKEN``, then ``$NESSUS_POOL_TOKEN_FILE``.
    There is no ``--token``: a token on the command line shows up in ``ps`` and shell
    history."""
    path = token_file
    if path is None:
        env = os.environ.get(TOKEN_ENV)
        if env:
            return env.strip()
        path = os.environ.get(TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}", 2) from None
    if not token:
        raise CliError(f"token file {path} is empty", 2)
    return token


def pages(client: ApiClient, path: str, query: dict[str, Any], follow: bool) -> dict[str, Any]:
    page: dict[str, Any] = client.call("GET", path, query=query)
    tasks = list(page["tasks"])
    while follow and page.get("next_cursor"):
        page = client.call("GET", path, query={**query, "cursor": page["next_cursor"]})
        tasks += page["tasks"]
    return {"tasks": tasks, "next_cursor": page.get("next_cursor")}
