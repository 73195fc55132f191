"""Shared pieces of the proof scripts: the installed ``nessus-pool`` command as subprocesses
(an external simulator and the daemon), a rate-limited submit load, polling helpers and the
summary table with its machine-readable ``RESULT {json}`` line.

Every loop here is bounded in count and in time: a proof that cannot finish reports what it
saw and fails, it never hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w

from nessus_pool.models import TERMINAL_STATUSES, status_values
from nessus_pool.simulator.ports import free_port_range as free_port

EXE = shutil.which("nessus-pool") or str(Path(sys.executable).parent / "nessus-pool")
KEYS = {"access-key": "sim-access-key", "secret-key": "sim-secret-key"}
TERMINAL = frozenset(status_values(TERMINAL_STATUSES))
READY_TIMEOUT_S = 30.0


def parse_args(
    doc: str,
    *,
    cycles: tuple[int, int] | None = None,
    duration: tuple[float, float] = (8, 60),
    flags: dict[str, str] | None = None,
) -> argparse.Namespace:
    """``--quick`` picks the CI sizes; ``--cycles`` / ``--duration-s`` override either;
    ``flags`` adds the script's own on/off options (name -> help)."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    for name, text in (flags or {}).items():
        p.add_argument(name, action="store_true", help=text)
    p.add_argument("--quick", action="store_true", help="the short CI version (< ~40 s)")
    if cycles is not None:
        p.add_argument("--cycles", type=int, default=None)
    p.add_argument("--duration-s", type=float, default=None, help="length of the load phase")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if cycles is not None and args.cycles is None:
        args.cycles = cycles[0] if args.quick else cycles[1]
    if args.duration_s is None:
        args.duration_s = duration[0] if args.quick else duration[1]
    return args


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


@contextlib.contextmanager
def tempdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- subprocesses --------------------------------------------------------------------------


@dataclass
class Proc:
    """One subprocess of the installed command; every output line is kept (for canaries)."""

    name: str
    args: list[str]
    env: dict[str, str] | None = None
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _ready: asyncio.Event | None = None
    _needle: str = ""

    async def start(self, ready: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        self._ready = asyncio.Event()
        self._needle = ready
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.proc = await asyncio.create_subprocess_exec(
            EXE,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a SIGINT to the proof does not hit it first
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        start_line = len(self.lines)
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, "out")),
            asyncio.create_task(self._read(self.proc.stderr, "err")),
        ]
        waiter = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait(
            {waiter, exited}, timeout=timeout_s, return_when="FIRST_COMPLETED"
        )
        waiter.cancel()
        exited.cancel()
        if waiter not in done:
            tail = "".join(self.lines[start_line:])[-3000:]
            await self.kill()
            raise RuntimeError(f"{self.name} not ready within {timeout_s} s:\n{tail}")

    async def _read(self, stream: asyncio.StreamReader, tag: str) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace")
            self.lines.append(text)
            if self._ready is not None and self._needle in text:
                self._ready.set()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def send(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def kill(self) -> int | None:
        """SIGKILL, then collect the exit status and the last output."""
        return await self.stop(signal.SIGKILL)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), 10)
        for r in self._readers:
            try:
                await asyncio.wait_for(r, 5)
            except TimeoutError:
                r.cancel()
        return self.proc.returncode

    def text(self) -> str:
        return "".join(self.lines)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out


class Simulator(Proc):
    def __init__(self, *, scanners: int, scan_seconds: float, seed: int = 5) -> None:
        self.port = free_port(scanners)
        self.count = scanners
        super().__init__(
            "simulator",
            [
                "simulate",
                "--port",
                str(self.port),
                "--scanners",
                str(scanners),
                "--scan-seconds",
                str(scan_seconds),
                "--seed",
                str(seed),
                "--plain-http",
            ],
        )

    async def start_sim(self) -> None:
        await self.start(ready=f":{self.port + self.count - 1}")

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port + i}"


class Daemon(Proc):
    def __init__(self, config_path: Path, port: int, env: dict[str, str] | None = None) -> None:
        super().__init__("daemon", ["serve", "--config", str(config_path)], env=env)
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.starts = 0

    async def start_daemon(self) -> float:
        t0 = time.monotonic()
        await self.start(ready="daemon_ready")
        self.starts += 1
        return time.monotonic() - t0


def daemon_config(
    tmp: Path,
    sim: Simulator,
    port: int,
    *,
    scanners: Iterable[int] | None = None,
    cap: int = 3,
    timeout_s: float = 3,
    pool: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ids = list(range(sim.count)) if scanners is None else list(scanners)
    data: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}"},
        "storage": {"path": str(tmp / "data")},
        "logging": {"format": "json"},
        "pools": [
            {
                "name": "lan",
                "poll-interval-s": 0.1,
                "max-queued": 20000,
                **(pool or {}),
                "scanners": [
                    {
                        "id": f"s{i}",
                        "url": sim.url(i),
                        "max-concurrent-scans": cap,
                        "timeout-s": timeout_s,
                        **KEYS,
                    }
                    for i in ids
                ],
            }
        ],
    }
    data.update(extra or {})
    return data


# --- HTTP ----------------------------------------------------------------------------------


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as r:
        body = await r.read()
        try:
            return r.status, json.loads(body)
        except json.JSONDecodeError:
            return r.status, body.decode(errors="replace")


async def all_tasks(
    http: aiohttp.ClientSession, base: str, max_pages: int = 400
) -> list[dict[str, Any]]:
    """Every stored task, newest first, through the cursor (bounded)."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(max_pages):
        url = f"{base}/api/v1/scans?limit=500" + (f"&cursor={cursor}" if cursor else "")
        status, page = await get_json(http, url)
        if status != 200:
            raise RuntimeError(f"GET {url} -> {status} {page}")
        out += page["tasks"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return out


async def views(
    http: aiohttp.ClientSession, base: str, ids: list[str], concurrency: int = 16
) -> dict[str, dict[str, Any] | None]:
    """GET /api/v1/scans/{id} for each id (None when 404)."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, dict[str, Any] | None] = {}

    async def one(t: str) -> None:
        async with sem:
            status, body = await get_json(http, f"{base}/api/v1/scans/{t}")
            out[t] = body if status == 200 else None

    await asyncio.gather(*(one(t) for t in ids))
    return out


async def wait_terminal(
    http: aiohttp.ClientSession, base: str, ids: list[str], deadline_s: float
) -> dict[str, dict[str, Any] | None]:
    """Poll (another process: nothing to wait on) until every id is terminal or the
    deadline passes; returns the last view of each (None = not found)."""
    end = time.monotonic() + deadline_s
    last: dict[str, dict[str, Any] | None] = {}
    pending = list(ids)
    while True:
        got = await views(http, base, pending)
        last.update(got)
        pending = [t for t in pending if got[t] is not None and got[t]["status"] not in TERMINAL]  # type: ignore[index]
        if not pending or time.monotonic() >= end:
            return last
        await asyncio.sleep(0.5)


async def sim_stats(http: aiohttp.ClientSession, sim: Simulator) -> list[dict[str, Any]]:
    return [(await get_json(http, f"{sim.url(i)}/_sim/stats"))[1] for i in range(sim.count)]


async def sim_faults(http: aiohttp.ClientSession, sim: Simulator, i: int, **faults: Any) -> None:
    async with http.post(f"{sim.url(i)}/_sim/faults", json=faults) as r:
        if r.status != 200:
            raise RuntimeError(f"faults on scanner {i}: {r.status} {await r.text()}")


def duplicate_counts(stats: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> dict[str, int]:
    """Scans created twice: per scanner (simulator), the same scan name on two scanners, and
    scans created beyond the attempts the stored tasks account for."""
    per_scanner = sum(int(s["duplicates"]) for s in stats)
    seen: dict[str, int] = {}
    for s in stats:
        for scan in s["scans"]:
            seen[scan["name"]] = seen.get(scan["name"], 0) + 1
    cross = sum(1 for n in seen.values() if n > 1)
    created = sum(int(s["created"]) for s in stats)
    # a task makes one remote scan per attempt at most (a fresh name each attempt)
    allowed = sum(int(t["attempt"]) for t in tasks)
    return {
        "sim_duplicates": per_scanner,
        "cross_scanner_same_name": cross,
        "created": created,
        "created_beyond_attempts": max(0, created - allowed),
    }


# --- load ------------------------------------------------------------------------------------


@dataclass
class Load:
    """``clients`` concurrent submitters sharing ``rate_per_s``; refused / unreachable requests
    are counted, not acknowledged."""

    http: aiohttp.ClientSession
    base: str
    clients: int
    rate_per_s: float
    body: Callable[[int], dict[str, Any]]
    acked: list[str] = field(default_factory=list)
    ack_times: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(k)) for k in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def _count(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def _client(self, k: int) -> None:
        period = self.clients / self.rate_per_s
        i = 0
        next_at = time.monotonic() + k * period / self.clients
        timeout = aiohttp.ClientTimeout(total=10)
        while not self._stop.is_set() and i < 1_000_000:
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            next_at = max(next_at + period, time.monotonic())
            n = self.sent
            self.sent += 1
            i += 1
            try:
                async with self.http.post(
                    f"{self.base}/api/v1/scans", json=self.body(n), timeout=timeout
                ) as r:
                    data = await r.json(content_type=None)
                    if r.status == 202:
                        self.acked.append(data["task_id"])
                        self.ack_times[data["task_id"]] = time.time()
                    else:
                        self._count(f"http_{r.status}:{data.get('error', {}).get('code')}")
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
                self._count(type(exc).__name__)


def target_of(n: int) -> str:
    return f"10.{(n // 62500) % 250}.{(n // 250) % 250}.{n % 250 + 1}"


# --- results -------------------------------------------------------------------------------


def report(title: str, rows: list[tuple[str, Any]], result: dict[str, Any], ok: bool) -> int:
    """Print the table and the RESULT line; the exit code."""
    width = max(len(k) for k, _ in rows) if rows else 10
    print(f"\n== {title} ==")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"  {'verdict':<{width}}  {'PASS' if ok else 'FAIL'}")
    print("RESULT " + json.dumps({**result, "ok": ok}, sort_keys=True), flush=True)
    return 0 if ok else 1


def run(main: Callable[[], Any]) -> None:
    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
