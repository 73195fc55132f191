"""Front-door attacks (issue 13) against live daemons on 127.0.0.1: a hostile web page (CSRF
simple requests, DNS rebinding, foreign Origin), empty and look-alike bearer tokens,
malformed requests carrying the admin token, slow connections past the open-file limit,
storage permissions under a loose umask, start-up on read-only storage.

Each attack is one async function in ATTACKS taking a :class:`Target` and returning an
:class:`Outcome`; the runner measures around it: the daemon's RSS peak (``/proc``) and the
longest ``/healthz`` round trip of a prober polling every 50 ms (the event loop's stall).
More attacks (the hostile-scanner ones of proofs/attack_scanner.py) are added by appending
to ATTACKS. Prints one row per attack, held or FAILED, then ``RESULT {json}``; exit 0 only
if every attack held. Every loop is bounded in count and time.

    .venv/bin/python proofs/attack.py [--quick] [--keep]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _harness import EXE, Daemon, free_port, log, parse_args, run, tempdir, write_toml

ADMIN_TOKEN = "attack-admin-" + os.urandom(12).hex()
READ_TOKEN = "attack-read-" + os.urandom(12).hex()
EVIL = "http://evil.example"
SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
FILL = {"task_id": "0123456789abcdef", "scanner_id": "sim-1", "name": "lan"}


@dataclass
class Target:
    """What an attack may use: an open daemon (loopback, no tokens: the default), one with
    tokens, and one whose open-file limit is low; all on 127.0.0.1."""

    http: aiohttp.ClientSession
    open: Daemon
    tokened: Daemon
    capped: Daemon
    capped_nofile: int
    tmp: Path
    quick: bool


@dataclass
class Outcome:
    name: str
    held: bool
    requests: int = 0
    five_xx: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    max_stall_ms: float = 0.0
    rss_peak_mb: float = 0.0
    seconds: float = 0.0


Attack = Callable[[Target], Awaitable[Outcome]]


# --- helpers ---------------------------------------------------------------------------------


async def routes(t: Target, d: Daemon) -> list[tuple[str, str]]:
    """(method, path) for every documented route plus /mcp, placeholders filled."""
    async with t.http.get(f"{d.base}/api/v1/openapi.json") as r:
        doc = await r.json()
    out = []
    for path, ops in doc["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: FILL.get(m.group(1), "x"), path)
        out += [(m.upper(), concrete) for m in ops]
    out += [("POST", "/mcp"), ("GET", "/mcp"), ("DELETE", "/mcp")]
    return out


async def status_of(t: Target, method: str, url: str, counts: dict[str, int], **kw: Any) -> int:
    counts["requests"] += 1
    try:
        async with t.http.request(method, url, timeout=aiohttp.ClientTimeout(total=10), **kw) as r:
            await r.read()
            if r.status >= 500:
                counts["five_xx"] += 1
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        counts["errors"] = counts.get("errors", 0) + 1
        return 0


async def state(t: Target, d: Daemon) -> tuple[int, list[bool]]:
    async with t.http.get(f"{d.base}/api/v1/scans?limit=500") as r:
        tasks = len((await r.json())["tasks"])
    async with t.http.get(f"{d.base}/api/v1/scanners") as r:
        enabled = [s["enabled"] for s in (await r.json())["scanners"]]
    return tasks, enabled


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def writable_again(directory: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True, check=False)
    directory.chmod(0o700)


def read_only(directory: Path) -> bool:
    directory.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    try:
        (directory / "probe").touch()
    except OSError:
        return True
    (directory / "probe").unlink()
    return False


# --- attacks ---------------------------------------------------------------------------------


async def csrf_simple_requests(t: Target) -> Outcome:
    """A page the operator visits posts text/plain and form bodies (no preflight) to every
    route, with and without its Origin: submit, drain, purge, reload must all be refused."""
    d = t.open
    before = await state(t, d)
    counts = {"requests": 0, "five_xx": 0}
    admitted: list[str] = []
    body = b'{"targets": "10.0.0.1", "confirm": true, "older_than_s": 0}'
    for method, path in await routes(t, d):
        for ctype in SIMPLE_TYPES:
            for data in (body, b""):
                for origin in ({"Origin": EVIL}, {}):
                    status = await status_of(
                        t,
                        method,
                        d.base + path,
                        counts,
                        data=data,
                        headers={"Content-Type": ctype, **origin},
                    )
                    if status not in (403, 415):
                        admitted.append(f"{method} {path} {ctype} {status}")
    after = await state(t, d)
    return Outcome(
        "csrf_simple_requests",
        held=not admitted and after == before and counts["five_xx"] == 0,
        requests=counts["requests"],
        five_xx=counts["five_xx"],
        detail={"admitted": admitted[:5], "tasks_before_after": [before[0], after[0]]},
    )


async def dns_rebinding_and_origin(t: Target) -> Outcome:
    """A rebinding page (its name in Host, our address) or a foreign Origin reads any route."""
    d = t.open
    counts = {"requests": 0, "five_xx": 0}
    admitted = []
    for method, path in await routes(t, d):
        for headers in (
            {"Host": f"evil.example:{d.port}"},
            {"Origin": EVIL},
            {"Origin": "null"},
            {"Host": "attacker.127.0.0.1.nip.io"},
        ):
            status = await status_of(
                t, method, d.base + path, counts, json={"targets": "10.0.0.1"}, headers=headers
            )
            if status != 403:
                admitted.append(f"{method} {path} {headers} {status}")
    return Outcome(
        "dns_rebinding_and_origin",
        held=not admitted and counts["five_xx"] == 0,
        requests=counts["requests"],
        five_xx=counts["five_xx"],
        detail={"admitted": admitted[:5]},
    )


async def empty_and_lookalike_tokens(t: Target) -> Outcome:
    """Empty, blank, NBSP and near-miss bearer tokens; an empty token in the config."""
    d = t.tokened
    counts = {"requests": 0, "five_xx": 0}
    admitted = []
    variants = [
        b"Bearer ",
        b"Bearer \xc2\xa0",
        b"Bearer \xc2\xa0" + ADMIN_TOKEN.encode(),
        b"Bearer " + ADMIN_TOKEN.encode() + b"\xc2\xa0",
        b"Bearer " + ADMIN_TOKEN[:-1].encode(),
        b"Bearer " + ADMIN_TOKEN.upper().encode(),
        b"bearer" + ADMIN_TOKEN.encode(),
        b"Basic " + ADMIN_TOKEN.encode(),
        b"Bearer \xe2\x80\x8b",
    ]
    for auth in variants:
        for line in (b"GET /api/v1/pools", b"POST /api/v1/reload", b"GET /api/v1/dlq"):
            counts["requests"] += 1
            status = await raw_status(d, line, auth)
            counts["five_xx"] += status >= 500
            if status != 401:
                admitted.append(f"{line!r} {auth!r} {status}")
    valid = await raw_status(d, b"GET /api/v1/pools", b"Bearer " + ADMIN_TOKEN.encode())
    counts["requests"] += 1
    # the config side: an empty token from the environment must not pass config check
    cfg = write_toml(
        t.tmp / "empty-token.toml",
        {"server": {"listen": "0.0.0.0:8835", "admin-tokens": [{"env": "NP_ATTACK_EMPTY"}]}},
    )
    rc, _, err = await run_cli(
        ["config", "check", "--config", str(cfg)], env={"NP_ATTACK_EMPTY": ""}
    )
    return Outcome(
        "empty_and_lookalike_tokens",
        held=not admitted and valid == 200 and rc == 2 and not counts["five_xx"],
        requests=counts["requests"],
        five_xx=counts["five_xx"],
        detail={
            "admitted": admitted[:5],
            "valid_token_status": valid,
            "config_check_exit": rc,
            "config_check_says": err.strip()[:160],
        },
    )


async def raw_status(d: Daemon, request_line: bytes, authorization: bytes) -> int:
    """One request with exact header bytes (aiohttp's client would refuse some of them)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
    try:
        writer.write(
            request_line + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: 0\r\n"
            b"Authorization: " + authorization + b"\r\n\r\n"
        )
        async with asyncio.timeout(10):
            head = await reader.readline()
        return int(head.split()[1]) if head else 0
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()


async def malformed_requests_with_token(t: Target) -> Outcome:
    """Malformed requests quoting the admin token: aiohttp logs the raw header line; the log
    must stay JSON, redacted and bounded."""
    d = t.tokened
    n = 200 if t.quick else 5000
    first_line = len(d.lines)
    counts = {"requests": 0, "five_xx": 0}
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            counts["requests"] += 1
            auth = b"Bearer " + ADMIN_TOKEN.encode() + (b"\x01", b"\x7f", b"\x00")[i % 3]
            status = await raw_status(d, b"GET /healthz", auth)
            statuses[status] = statuses.get(status, 0) + 1
            counts["five_xx"] += status >= 500

    await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.sleep(0.5)  # let the daemon's last lines reach its stderr pipe
    lines = d.lines[first_line:]
    text = "".join(lines)
    not_json = sum(1 for ln in lines if ln.strip() and not ln.lstrip().startswith("{"))
    leaks = text.count(ADMIN_TOKEN)
    return Outcome(
        "malformed_requests_with_token",
        held=leaks == 0 and not_json == 0 and len(lines) <= 50 and not counts["five_xx"],
        requests=counts["requests"],
        five_xx=counts["five_xx"],
        detail={
            "statuses": statuses,
            "log_lines": len(lines),
            "log_bytes": len(text),
            "token_in_log": leaks,
            "non_json_lines": not_json,
        },
    )


async def slow_connections(t: Target) -> Outcome:
    """More slow clients than the daemon has file descriptors: each sends half a request
    head and drips a byte every 2 s. New clients must get an answer (200 or 503), the slow
    ones must be cut off at the header timeout, the log must not flood."""
    d = t.capped
    n = 300 if t.quick else 2000
    first_line = len(d.lines)
    held_open: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused_at_connect = 0
    for _ in range(n):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", d.port)
        except OSError:
            refused_at_connect += 1
            continue
        w.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        held_open.append((r, w))
    # fresh clients while the slow ones are held
    counts = {"requests": n, "five_xx": 0}
    fresh: dict[int, int] = {}
    for _ in range(20):
        status = await status_of(
            t, "GET", f"{d.base}/healthz", counts, headers={"Connection": "close"}
        )
        fresh[status] = fresh.get(status, 0) + 1
    capped_503 = fresh.get(503, 0)
    counts["five_xx"] -= capped_503  # the cap's answer, not a failure
    # drip until the server drops them (bounded by header timeout + 10 s)
    started = time.monotonic()
    # the ones past the cap are answered 503 at once, before any drip
    first = [asyncio.ensure_future(r.read(256)) for r, _ in held_open]
    await asyncio.wait(first, timeout=2)
    answered_503 = 0
    open_ = []
    for f, conn in zip(first, held_open, strict=True):
        if f.done() and not f.cancelled() and f.exception() is None:
            answered_503 += f.result().startswith(b"HTTP/1.1 503")
        else:
            f.cancel()
            open_.append(conn)
    deadline = started + 35
    while open_ and time.monotonic() < deadline:
        still = []
        for r, w in open_:
            if r.at_eof() or w.is_closing():
                continue
            with contextlib.suppress(OSError):
                w.write(b"x")
            still.append((r, w))
        open_ = still
        # reading notices EOF; wait at most 2 s for any of them
        if open_:
            waits = [asyncio.ensure_future(r.read(1 << 16)) for r, _ in open_]
            await asyncio.wait(waits, timeout=2)
            for f in waits:
                f.cancel()
    cut_off_s = time.monotonic() - started
    cut_off = len(held_open) - answered_503 - len(open_)
    for _, w in held_open:
        w.close()
    after = await status_of(t, "GET", f"{d.base}/healthz", counts)
    lines = d.lines[first_line:]
    tracebacks = sum(ln.count("Traceback") for ln in lines)
    cap = [json.loads(ln).get("max_connections") for ln in lines if "connections_capped" in ln]
    return Outcome(
        "slow_connections",
        held=(
            not open_
            and after == 200
            and fresh.get(0, 0) == 0
            and tracebacks == 0
            and len(lines) <= 50
            and counts["five_xx"] == 0
        ),
        requests=counts["requests"],
        five_xx=counts["five_xx"],
        detail={
            "slow_connections": n,
            "nofile_limit": t.capped_nofile,
            "opened": len(held_open),
            "connection_cap": cap[0] if cap else None,
            "answered_503_at_once": answered_503,
            "cut_off_by_header_timeout": cut_off,
            "fresh_clients": fresh,
            "still_open_at_end": len(open_),
            "all_cut_off_after_s": round(cut_off_s, 1),
            "log_lines": len(lines),
            "log_bytes": sum(len(x) for x in lines),
            "tracebacks": tracebacks,
        },
    )


async def storage_permissions(t: Target) -> Outcome:
    """The open daemon was started under umask 022 (not the unit's 0077): after a scan, its
    directory, database, WAL and exports are still private."""
    d = t.open
    counts = {"requests": 0, "five_xx": 0}
    counts["requests"] += 1
    async with t.http.post(f"{d.base}/api/v1/scans", json={"targets": "10.1.2.3"}) as r:
        task_id = (await r.json())["task_id"]
    status = ""
    for _ in range(100):  # the embedded simulator scans for 0.5 s
        counts["requests"] += 1
        async with t.http.get(f"{d.base}/api/v1/scans/{task_id}") as r:
            status = (await r.json())["status"]
        if status in ("completed", "failed"):
            break
        await asyncio.sleep(0.1)
    storage = t.tmp / "open" / "data"
    loose = []
    files = [storage, *storage.rglob("*")]
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            loose.append(f"{p.relative_to(t.tmp)} {oct(mode)}")
    return Outcome(
        "storage_permissions",
        held=not loose and status == "completed",
        requests=counts["requests"],
        detail={"scan": status, "paths_checked": len(files), "readable_by_others": loose[:5]},
    )


async def read_only_storage(t: Target) -> Outcome:
    """Start on a storage directory that cannot be written: one line naming it, exit 2 (the
    start-up check that `config check` shares)."""
    storage = t.tmp / "ro" / "data"
    storage.mkdir(parents=True)
    if not await asyncio.to_thread(read_only, storage):
        return Outcome("read_only_storage", held=True, detail={"skipped": "cannot make it r/o"})
    cfg = config(t.tmp / "ro", 0)
    try:
        rc, _, err = await run_cli(["serve", "--config", str(cfg)])
    finally:
        await asyncio.to_thread(writable_again, storage)
    errors = [ln for ln in err.splitlines() if '"level":"error"' in ln]
    return Outcome(
        "read_only_storage",
        held=rc == 2 and len(errors) == 1 and str(storage) in errors[0] and "Traceback" not in err,
        requests=0,
        detail={"exit": rc, "stderr_lines": len(err.splitlines()), "error": errors[:1]},
    )


async def run_cli(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The installed command, off the event loop's back (the prober measures this loop too)."""
    proc = await asyncio.create_subprocess_exec(
        EXE,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", "timed out"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


ATTACKS: list[Attack] = [
    csrf_simple_requests,
    dns_rebinding_and_origin,
    empty_and_lookalike_tokens,
    malformed_requests_with_token,
    slow_connections,
    storage_permissions,
    read_only_storage,
]


# --- runner ----------------------------------------------------------------------------------


class Prober:
    """GET /healthz every 50 ms on each daemon; the longest round trip is the loop stall."""

    def __init__(self, http: aiohttp.ClientSession, daemons: list[Daemon]) -> None:
        self.http = http
        self.daemons = daemons
        self.max_ms = 0.0
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.max_ms, self.failures = 0.0, 0
        self._stop.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        for _ in range(100_000):  # bounded: 50 ms apart, ~80 min at most
            for d in self.daemons:
                t0 = time.monotonic()
                try:
                    async with self.http.get(
                        f"{d.base}/healthz", timeout=aiohttp.ClientTimeout(total=30)
                    ) as r:
                        await r.read()
                        if r.status != 200 and r.status != 503:
                            self.failures += 1
                except (aiohttp.ClientError, TimeoutError):
                    self.failures += 1
                self.max_ms = max(self.max_ms, (time.monotonic() - t0) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.05)
                return


async def rss_sampler(pids: list[int], stop: asyncio.Event, peak: list[float]) -> None:
    for _ in range(1_000_000):
        peak[0] = max([peak[0], *(rss_mb(p) for p in pids)])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
            return


@contextlib.contextmanager
def spawn_limits(nofile: int | None = None, umask: int | None = None) -> Iterator[None]:
    """Children inherit the open-file limit and umask in force when they are spawned."""
    old_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    old_umask = os.umask(umask) if umask is not None else None
    if nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, old_limit[1]))
    try:
        yield
    finally:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, old_limit)
        if old_umask is not None:
            os.umask(old_umask)


def config(tmp: Path, port: int, **server: Any) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return write_toml(
        tmp / "np.toml",
        {
            "server": {"listen": f"127.0.0.1:{port}", **server},
            "storage": {"path": str(tmp / "data")},
            "logging": {"format": "json"},
            "simulator": {"scanners": 1, "scan-seconds": 0.5, "pool": "lan", "seed": 3},
            "pools": [{"name": "lan", "poll-interval-s": 0.1}],
        },
    )


async def main() -> int:
    args = parse_args(
        __doc__ or "",
        flags={"--front-only": "skip the hostile-scanner attacks (proofs/attack_scanner.py)"},
    )
    nofile = 256 if args.quick else 1024
    with tempdir("np-attack-", keep=args.keep) as tmp:
        env = {"NP_ATTACK_ADMIN": ADMIN_TOKEN, "NP_ATTACK_READ": READ_TOKEN}
        base = free_port(3)
        ports = [base, base + 1, base + 2]
        daemons = {
            "open": Daemon(config(tmp / "open", ports[0]), ports[0]),
            "tokened": Daemon(
                config(
                    tmp / "tokened",
                    ports[1],
                    **{
                        "admin-tokens": [{"env": "NP_ATTACK_ADMIN"}],
                        "read-tokens": [{"env": "NP_ATTACK_READ"}],
                    },
                ),
                ports[1],
                env=env,
            ),
            "capped": Daemon(config(tmp / "capped", ports[2]), ports[2]),
        }
        with spawn_limits(umask=0o022):
            await daemons["open"].start_daemon()
            await daemons["tokened"].start_daemon()
        with spawn_limits(nofile=nofile):
            await daemons["capped"].start_daemon()
        outcomes: list[Outcome] = []
        try:
            conn = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=conn) as http:
                target = Target(
                    http=http,
                    open=daemons["open"],
                    tokened=daemons["tokened"],
                    capped=daemons["capped"],
                    capped_nofile=nofile,
                    tmp=tmp,
                    quick=args.quick,
                )
                async with aiohttp.ClientSession() as probe_http:
                    prober = Prober(probe_http, list(daemons.values()))
                    for attack in ATTACKS:
                        outcomes.append(await measured(attack, target, prober, daemons))
        finally:
            for d in daemons.values():
                await d.stop()
    if not args.front_only:
        outcomes.append(await hostile_scanner(args.quick))
    return summary(outcomes, args.quick)


async def hostile_scanner(quick: bool) -> Outcome:
    """The hostile-scanner attacks (deep JSON, huge bodies, dripping and stuck exports, secrets
    in error texts, a full disk) run by ``proofs/attack_scanner.py`` against its own daemon,
    folded into this table as one row."""
    log("attack: hostile_scanner (proofs/attack_scanner.py)")
    script = Path(__file__).with_name("attack_scanner.py")
    argv = [sys.executable, str(script), *(["--quick"] if quick else [])]
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :]) if lines else {}
    return Outcome(
        "hostile_scanner",
        held=proc.returncode == 0 and bool(result.get("ok")),
        requests=int(result.get("requests", 0) or 0),
        five_xx=int(result.get("errors_5xx", 0) or 0),
        max_stall_ms=float(result.get("max_healthz_ms", 0) or 0),
        rss_peak_mb=float(result.get("rss_peak_mib", 0) or 0),
        seconds=round(time.monotonic() - t0, 1),
        detail={"exit": proc.returncode, "result": result},
    )


async def measured(
    attack: Attack, target: Target, prober: Prober, daemons: dict[str, Daemon]
) -> Outcome:
    log(f"attack: {attack.__name__}")
    pids = [d.proc.pid for d in daemons.values() if d.proc is not None]
    stop, peak = asyncio.Event(), [0.0]
    sampler = asyncio.create_task(rss_sampler(pids, stop, peak))
    prober.start()
    t0 = time.monotonic()
    try:
        out = await asyncio.wait_for(attack(target), 300)
    except Exception as exc:  # an attack that crashes is reported, not hidden
        out = Outcome(attack.__name__, held=False, detail={"crashed": repr(exc)[:300]})
    out.seconds = round(time.monotonic() - t0, 1)
    await prober.stop()
    stop.set()
    await sampler
    out.max_stall_ms = round(prober.max_ms, 1)
    out.rss_peak_mb = round(peak[0], 1)
    if prober.failures:
        out.held = False
        out.detail["healthz_failures"] = prober.failures
    alive = all(d.running for d in daemons.values())
    if not alive:
        out.held = False
        out.detail["daemon_died"] = True
    return out


def summary(outcomes: list[Outcome], quick: bool) -> int:
    print(f"\n== front-door attacks ({'quick' if quick else 'full'}) ==")
    print(
        f"  {'attack':<32} {'verdict':<7} {'requests':>8} {'5xx':>4} "
        f"{'stall ms':>9} {'RSS MB':>7} {'s':>5}"
    )
    for o in outcomes:
        print(
            f"  {o.name:<32} {'held' if o.held else 'FAILED':<7} {o.requests:>8} "
            f"{o.five_xx:>4} {o.max_stall_ms:>9} {o.rss_peak_mb:>7} {o.seconds:>5}"
        )
        print(f"      {json.dumps(o.detail, sort_keys=True)}")
    ok = all(o.held for o in outcomes)
    result = {
        "ok": ok,
        "quick": quick,
        "attacks": {
            o.name: {
                "held": o.held,
                "requests": o.requests,
                "five_xx": o.five_xx,
                "max_stall_ms": o.max_stall_ms,
                "rss_peak_mb": o.rss_peak_mb,
                **o.detail,
            }
            for o in outcomes
        },
    }
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    run(main)
