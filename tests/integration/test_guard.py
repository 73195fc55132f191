"""The port's front door (api/guard.py), attacked the way a hostile web page, a caller with an
empty or look-alike token and a slow client would: every route refuses a foreign Origin or
Host and a browser "simple request" body, tokens match only byte for byte, slow and
surplus connections cannot hold the port."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.api.guard import (
    RateLimitedLog,
    TokenAuth,
    accept_error_handler,
    connection_cap,
)
from nessus_pool.config import parse_config
from nessus_pool.daemon import Daemon
from nessus_pool.errors import ConfigError
from tests.conftest import DaemonFactory, sim_config

ADMIN_TOKEN = "guard-admin-token-0123456789"
PLACEHOLDERS = {
    "task_id": "0123456789abcdef",
    "scanner_id": "sim-1",
    "name": "lan",
    "delivery_id": "dlv-0123456789abcdef01234567",
    "tail": "api/v1/no-such-path",  # the last route: paths nobody serves
}


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def concrete_routes(d: Daemon) -> list[tuple[str, str]]:
    """(method, path) for every route the app serves, placeholders filled in: a route added
    later is attacked too without editing this file."""
    assert d.app is not None
    out = []
    for route in d.app.router.routes():
        if route.resource is None or route.method == "HEAD":
            continue
        path = route.resource.canonical
        path = re.sub(r"\{(\w+)\}", lambda m: PLACEHOLDERS[m.group(1)], path)
        out.append(("GET" if route.method == "*" else route.method, path))
    assert len(out) >= 25, out  # admin API, probes, metrics and /mcp
    return out


async def _scanners_enabled(d: Daemon) -> list[bool]:
    assert d.service is not None
    return [v.enabled for v in d.service.scanner_views()]


async def test_every_route_refuses_foreign_origin_and_host(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    assert d.engine is not None
    routes = concrete_routes(d)
    tasks_before = len(d.engine.tasks)
    attacks = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Host": "evil.example:8835"},  # a DNS-rebinding page: its name, our address
        {"Host": "evil.example", "Origin": "http://evil.example"},
    ]
    async with aiohttp.ClientSession() as http:
        for method, path in routes:
            for headers in attacks:
                async with http.request(
                    method, d.url + path, json={"targets": "10.0.0.1"}, headers=headers
                ) as r:
                    assert r.status == 403, (method, path, headers, r.status)
                    body = await r.json()
                    err = body["error"]
                    message = err["message"]
                    assert ("Origin" in message) or ("Host" in message), body
    assert len(d.engine.tasks) == tasks_before
    assert all(await _scanners_enabled(d))


async def test_every_route_refuses_simple_request_bodies(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    """A cross-site <form> or fetch(no-cors) sends text/plain or form bodies without an
    Origin check we could rely on (no Origin from some clients): refused with 415."""
    d: Daemon = await start_daemon(sim_config(tmp_path))
    assert d.engine is not None
    tasks_before = len(d.engine.tasks)
    body = b'{"targets": "10.0.0.1", "confirm": true}'
    async with aiohttp.ClientSession() as http:
        for method, path in concrete_routes(d):
            for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
                for data in (body, b""):
                    async with http.request(
                        method, d.url + path, data=data, headers={"Content-Type": ctype}
                    ) as r:
                        assert r.status == 415, (method, path, ctype, data, r.status)
                        assert "application/json" in (await r.text())
        # a body with no Content-Type at all is not JSON either
        async with http.post(d.url + "/api/v1/scans", data=body, headers={"Content-Type": ""}) as r:
            assert r.status == 415
    assert len(d.engine.tasks) == tasks_before
    assert all(await _scanners_enabled(d))
    # what the CLI, the MCP bridge and scripts send still works
    async with aiohttp.ClientSession() as http:
        async with http.post(d.url + "/api/v1/scans", json={"targets": "10.0.0.1"}) as r:
            assert r.status == 202
        async with http.post(d.url + "/api/v1/scanners/sim-1/drain") as r:
            assert r.status == 200
        async with http.get(d.url + "/healthz", headers={"Origin": "http://localhost:3000"}) as r:
            assert r.status == 200


async def test_allowed_origin_passes_on_admin_api(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    cfg = sim_config(tmp_path)
    cfg["server"]["allowed-origins"] = ["https://ops.example"]
    d: Daemon = await start_daemon(cfg)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            d.url + "/api/v1/pools", headers={"Origin": "https://ops.example"}
        ) as r:
            assert r.status == 200
        async with http.get(
            d.url + "/api/v1/pools", headers={"Origin": "https://ops.example.evil"}
        ) as r:
            assert r.status == 403


# --- tokens --------------------------------------------------------------------------------


def test_token_auth_matches_exact_bytes_only() -> None:
    auth = TokenAuth(["read-token-0123456789"], [ADMIN_TOKEN])
    assert auth.role(f"Bearer {ADMIN_TOKEN}") == "admin"
    assert auth.role("Bearer read-token-0123456789") == "read"
    for header in (
        f"Bearer {ADMIN_TOKEN} ",
        f"Bearer  {ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN}\u00a0",
        f"Bearer \u00a0{ADMIN_TOKEN}",
        f"bearer{ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        "Bearer \u00a0",
        "Bearer ",
        "Bearer \udcc2\udca0",  # undecodable bytes as aiohttp hands them over
        None,
    ):
        assert auth.role(header) is None, header


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "0 characters; at least 16"),
        ("short-token", "11 characters; at least 16"),
        ("\u00a0" * 20, "printable ASCII"),
        ("has a space inside it!", "printable ASCII"),
    ],
)
def test_empty_short_or_blank_tokens_are_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, needle: str
) -> None:
    monkeypatch.setenv("NP_GUARD_T", value)
    cfg = sim_config(tmp_path)
    cfg["server"]["listen"] = "0.0.0.0:0"
    cfg["server"]["read-tokens"] = ["read-token-0123456789"]
    cfg["server"]["admin-tokens"] = [ADMIN_TOKEN, {"env": "NP_GUARD_T"}]
    with pytest.raises(ConfigError) as err:
        parse_config(_toml(cfg))
    assert needle in str(err.value)
    assert "$.server.admin-tokens[1]" in str(err.value)
    if value:
        assert value not in str(err.value)


async def test_token_emptied_after_check_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`config check` ran where the variable was unset; the service's is empty."""
    cfg = sim_config(tmp_path)
    cfg["server"]["admin-tokens"] = [{"env": "NP_GUARD_LATE"}]
    monkeypatch.delenv("NP_GUARD_LATE", raising=False)
    loaded = parse_config(_toml(cfg))
    monkeypatch.setenv("NP_GUARD_LATE", "")
    d = Daemon(loaded)
    with pytest.raises(ConfigError, match=r"at least 16.*admin-tokens\[0\]"):
        await d.start()


async def test_nbsp_bearer_is_not_a_token_over_http(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    monkeypatch.setenv("NP_GUARD_ADMIN", ADMIN_TOKEN)
    cfg = sim_config(tmp_path)
    cfg["server"]["admin-tokens"] = [{"env": "NP_GUARD_ADMIN"}]
    d: Daemon = await start_daemon(cfg)
    for auth in (b"Bearer \xc2\xa0", b"Bearer ", b"Bearer \xc2\xa0" + ADMIN_TOKEN.encode()):
        status = await _raw_status(d, b"POST /api/v1/reload", auth)
        assert status == 401, auth
    assert await _raw_status(d, b"GET /api/v1/pools", b"Bearer " + ADMIN_TOKEN.encode()) == 200


async def _raw_status(d: Daemon, request_line: bytes, authorization: bytes) -> int:
    reader, writer = await asyncio.open_connection(d.host, d.port)
    try:
        writer.write(
            request_line + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: " + authorization + b"\r\n\r\n"
        )
        async with asyncio.timeout(10):
            head = await reader.readline()
        return int(head.split()[1])
    finally:
        writer.close()


# --- slow and surplus connections ----------------------------------------------------------


@pytest.fixture
async def small_door(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(parse_config(_toml(sim_config(tmp_path))))
    d.header_timeout_s = 0.5
    d.body_timeout_s = 0.5
    d.max_connections = 4
    await d.start()
    yield d
    await d.stop()


async def test_a_slow_request_head_is_cut_off(small_door: Daemon) -> None:
    reader, writer = await asyncio.open_connection(small_door.host, small_door.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(10):
        rest = await reader.read()  # EOF when the server drops it
    waited_s = loop.time() - started
    writer.close()
    assert rest == b""
    assert 0.3 <= waited_s < 5, waited_s


async def test_a_dripped_body_gets_408(small_door: Daemon) -> None:
    d = small_door
    assert d.engine is not None
    before = len(d.engine.tasks)
    for path in (b"/api/v1/scans", b"/mcp"):
        reader, writer = await asyncio.open_connection(d.host, d.port)
        writer.write(
            b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"targets": "10.0.0.1"'  # and nothing more
        )
        async with asyncio.timeout(10):
            head = await reader.readline()
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), (path, head)
    assert len(d.engine.tasks) == before


async def test_the_site_cuts_off_a_slow_first_head_whatever_aiohttp_keepalive_does() -> None:
    """CappedSite's own deadline, with aiohttp's keep-alive timer out of the way (older
    aiohttp releases do not arm it before the first request)."""
    from aiohttp import web

    from nessus_pool.api.guard import CappedSite

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, keepalive_timeout=3600)
    await runner.setup()
    site = CappedSite(runner, "127.0.0.1", 0, max_connections=10, header_timeout_s=0.3)
    await site.start()
    try:
        port = runner.addresses[0][1]
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # a prompt client on the same site is served, and kept alive past the deadline
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await r.readuntil(b"\r\n\r\nok")).startswith(b"HTTP/1.1 200")
            assert await slow_r.read() == b""  # cut off
        w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await r.readuntil(b"\r\n\r\nok")).startswith(b"HTTP/1.1 200")
        for writer in (w, slow_w):
            writer.close()
    finally:
        await runner.cleanup()


async def test_connections_over_the_cap_get_503_and_the_port_recovers(tmp_path: Path) -> None:
    d = Daemon(parse_config(_toml(sim_config(tmp_path))))
    d.max_connections = 4
    await d.start()
    try:
        held = []
        for _ in range(4):  # each answered once, then idle on keep-alive: all four counted
            reader, writer = await asyncio.open_connection(d.host, d.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            async with asyncio.timeout(5):
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            held.append(writer)
        reader, writer = await asyncio.open_connection(d.host, d.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"too_many_connections" in answer
        assert d.site is not None and d.site.refused == 1
        for w in held:
            w.close()
            await w.wait_closed()
        statuses = []
        async with aiohttp.ClientSession() as http:
            for _ in range(100):  # bounded: the server sees the four EOFs within a few turns
                async with http.get(d.url + "/healthz") as r:
                    statuses.append(r.status)
                if r.status == 200:
                    break
                await asyncio.sleep(0.02)
        assert statuses[-1] == 200, statuses
    finally:
        await d.stop()


def test_connection_cap_stays_below_the_file_limit() -> None:
    assert connection_cap(1024) == 768
    assert connection_cap(256) == 128
    assert connection_cap(1_048_576) == 10_000
    assert connection_cap(100) == 8


def test_exhausted_accept_logs_one_line_per_interval() -> None:
    import logging

    now = [0.0]
    lines: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record)

    logger = logging.getLogger("nessus_pool.api")
    keep = Keep()
    logger.addHandler(keep)
    level = logger.level
    logger.setLevel(logging.INFO)
    loop = asyncio.new_event_loop()
    try:
        handle = accept_error_handler(RateLimitedLog(10.0, lambda: now[0]))
        exc = OSError(24, "Too many open files")
        for i in range(161_806):  # the count the sweep saw in 20 s
            now[0] = i * (20 / 161_806)
            handle(loop, {"message": "socket.accept() out of system resource", "exception": exc})
    finally:
        loop.close()
        logger.removeHandler(keep)
        logger.setLevel(level)
    events = [r for r in lines if getattr(r, "event", "") == "http_accept_exhausted"]
    assert len(events) == 2
    assert events[0].occurrences == 1  # type: ignore[attr-defined]
    assert sum(r.occurrences for r in events) < 161_806  # type: ignore[attr-defined]


# --- aiohttp's own log lines -----------------------------------------------------------------


def _restore_logging() -> None:
    """setup_logging bound handlers to the captured stderr: take them off again."""
    import logging

    from nessus_pool.logs import LIBRARY_LOGGERS

    for name in ("nessus_pool", *LIBRARY_LOGGERS):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        for f in list(lg.filters):
            lg.removeFilter(f)
        lg.propagate = True
        lg.setLevel(logging.NOTSET)


async def test_malformed_request_log_is_json_and_redacted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    secret = "log-admin-token-0123456789"
    monkeypatch.setenv("NP_GUARD_LOG", secret)
    cfg = sim_config(tmp_path)
    cfg["server"]["admin-tokens"] = [{"env": "NP_GUARD_LOG"}]
    d = Daemon(parse_config(_toml(cfg)), setup_logs=True)
    await d.start()
    try:
        other = "not-a-configured-token-9876543210"
        for token in (secret, other):
            reader, writer = await asyncio.open_connection(d.host, d.port)
            writer.write(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer " + token.encode() + b"\x01\r\n\r\n"
            )
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            assert answer.split(b" ", 2)[1] == b"400"
    finally:
        await d.stop()
        _restore_logging()
    err = capfd.readouterr().err
    assert secret not in err and other not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is JSON, tracebacks included
    bad = [r for r in records if r["logger"] == "aiohttp.server"]
    assert len(bad) == 2, records
    assert all(r["event"] == "http_server" and "[REDACTED]" in r["message"] for r in bad)


async def test_library_log_flood_is_rate_limited() -> None:
    import logging

    from nessus_pool.logs import LibraryRecordFilter

    f = LibraryRecordFilter(burst=10, interval_s=3600)
    passed = 0
    for _ in range(10_000):
        rec = logging.makeLogRecord({"name": "aiohttp.server", "msg": "Error handling request"})
        passed += f.filter(rec)
    assert passed == 10


# --- storage -------------------------------------------------------------------------------


async def test_storage_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        d = Daemon(parse_config(_toml(sim_config(tmp_path))), serve_http=False)
        await d.start()
        try:
            assert d.service is not None
            from nessus_pool.service import SubmitRequest

            sub = await d.service.submit(SubmitRequest(targets="10.9.0.1"))
            view = await d.service.wait_for(sub.task_id, 60)
            assert view.status == "completed"
            storage = tmp_path / "data"
            files = [p for p in storage.rglob("*") if p.is_file()]
            assert any(p.suffix == ".nessus" for p in files), files
            assert any(p.name.endswith("-wal") for p in files), files
            assert (storage.stat().st_mode & 0o777) == 0o700
            for p in [storage / "exports", *files]:
                assert (p.stat().st_mode & 0o077) == 0, (p, oct(p.stat().st_mode))
        finally:
            await d.stop()
        assert os.umask(0o022) == 0o022  # restored at stop
    finally:
        os.umask(old)


async def test_existing_open_storage_is_tightened(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    (storage / "exports").mkdir(parents=True)
    storage.chmod(0o755)
    old_export = storage / "exports" / "old.nessus"
    old_export.write_text("<x/>")
    old_export.chmod(0o644)
    d = Daemon(parse_config(_toml(sim_config(tmp_path))), serve_http=False)
    await d.start()
    assert (await d.readiness())["ready"]
    await d.stop()
    assert (storage.stat().st_mode & 0o777) == 0o700
    assert (old_export.stat().st_mode & 0o777) == 0o600


def _make_read_only(directory: Path) -> bool:
    """chmod for ordinary users; root ignores modes, so chattr +i where it is allowed.
    True if writes now fail."""
    import subprocess

    directory.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    try:
        (directory / "probe").touch()
    except OSError:
        return True
    (directory / "probe").unlink()
    return False


@pytest.mark.acceptance
def test_read_only_storage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """The same start-up check as `config check` (exit 2: the configuration cannot run here),
    one line naming the path, no traceback."""
    import subprocess
    import sys

    from tests.conftest import write_config

    storage = tmp_path / "data"
    storage.mkdir()
    if not _make_read_only(storage):
        pytest.skip("cannot make a directory read-only here (root without CAP_LINUX_IMMUTABLE)")
    try:
        cfg = write_config(tmp_path / "np.toml", sim_config(tmp_path))
        exe = Path(sys.executable).parent / "nessus-pool"
        proc = subprocess.run(
            [str(exe), "serve", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", "")},
        )
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(storage)], capture_output=True, check=False)
        storage.chmod(0o700)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert str(storage) in lines[0] and "not writable" in lines[0]


async def test_paths_and_methods_nobody_serves(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    """No aiohttp middleware runs any more (every route has the front door and the error
    mapping in one coroutine, and a last route takes what no other serves): the API's 404
    and 405 stay JSON, 405 names the methods that are served, other paths get aiohttp's."""
    d: Daemon = await start_daemon(sim_config(tmp_path))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{d.url}/api/v1/no-such-thing") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with http.put(f"{d.url}/api/v1/scans", json={}) as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"
            assert set(r.headers["Allow"].split(",")) >= {"GET", "POST"}
        async with http.delete(f"{d.url}/healthz") as r:
            assert r.status == 405 and "GET" in r.headers["Allow"]
        async with http.get(f"{d.url}/no-such-page") as r:
            assert r.status == 404 and r.content_type == "text/plain"
        async with http.patch(f"{d.url}/mcp", json={}) as r:
            assert r.status == 405 and r.content_type == "text/plain"
            assert set(r.headers["Allow"].split(",")) == {"DELETE", "GET", "HEAD", "POST"}
        # a foreign Host is refused before anything says whether the path exists
        async with http.get(f"{d.url}/api/v1/no-such-thing", headers={"Host": "evil.example"}) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "forbidden_host"
