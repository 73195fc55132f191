"""Shared helpers for the benchmark scripts: what ran, repeated measurements, tables.

Nothing here is imported by nessus-pool itself, and speed is never asserted in unit tests:
these scripts print numbers for a person to read.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import multiprocessing
import os
import platform
import socket
import sqlite3
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def require(module: str, pip_name: str | None = None) -> Any:
    """Import a bench-only dependency, or say how to get it and exit 2."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name = pip_name or module
        print(
            f"error: this benchmark needs {name!r}, which is not installed.\n"
            f'  install the bench extras:  pip install -e ".[bench]"   (or: pip install {name})',
            file=sys.stderr,
        )
        sys.exit(2)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def mem_total_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def describe(dists: Sequence[str], extra: dict[str, str] | None = None) -> str:
    """One block saying what ran: interpreter, machine, library versions, sizes."""
    lines = [
        f"python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"machine: {os.cpu_count()} cores, {mem_total_gib():.1f} GiB RAM",
        "versions: "
        + ", ".join(f"{d} {_version(d)}" for d in dists)
        + f", sqlite {sqlite3.sqlite_version}",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


@dataclass
class Series:
    """Repeated measurements of one quantity."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def fmt(self, digits: int = 0) -> str:
        """``median (min-max)``"""
        if not self.values:
            return "-"
        f = f"{{:,.{digits}f}}"
        return (
            f"{f.format(self.median)} ({f.format(min(self.values))}-{f.format(max(self.values))})"
        )


def ratio(value: float, anchor: float) -> str:
    if not anchor or anchor != anchor or value != value:
        return "-"
    return f"{value / anchor:.2f}x"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-markdown table (readable in a terminal too)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [f"\n{title}\n", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def vmhwm_mib() -> float:
    """This process's peak resident set (VmHWM) in MiB, from /proc/self/status."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child_main(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], conn: Any) -> None:
    try:
        result = fn(*args)
        result["vmhwm_mib"] = vmhwm_mib()
        conn.send(("ok", result))
    except BaseException as exc:  # reported to the parent, which fails loudly
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_in_child(
    fn: Callable[..., dict[str, Any]], *args: Any, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned interpreter; return its dict plus the child's
    ``vmhwm_mib`` read after the work. ``fn`` must be a module-level function."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(fn, args, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise TimeoutError(f"{fn.__name__} did not finish within {timeout_s:.0f} s")
        status, payload = parent.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed in the child: {payload}")
    return dict(payload)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank, 0 <= q <= 1) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def open_ingest_store(db: Path, export_path: str) -> tuple[Any, Any]:
    """A fresh SQLite :class:`Store` at ``db`` (any earlier file removed) holding one
    authenticated task whose export is ``export_path``, as the engine has it before
    ``ingest_export``; returns ``(store, task)``, the caller closes the store. nessus_pool
    is imported here, when called (bench/parse.py --before puts another tree first)."""
    from nessus_pool.models import ScanType, Task
    from nessus_pool.store import Store

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240  (set-up, not timed)
    store = Store(db)
    await store.open()
    task = Task(
        task_id="bench0000000001",
        seq=1,
        pool="lan",
        name="bench",
        targets=["10.0.0.0/8"],
        scan_type=ScanType.AUTHENTICATED,
        created_at_ms=0,
        updated_at_ms=0,
        export_path=export_path,
    )
    try:
        await store.save_task(task)
    except BaseException:
        await store.close()
        raise
    return store, task
