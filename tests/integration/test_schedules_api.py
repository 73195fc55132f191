"""/api/v1/schedules on a real daemon with the simulator: create answers 201 with
next_run_at; bad input is a 400 naming the field; config schedules are read-only (409);
read tokens read only; run-now makes a task carrying schedule_id; compare defaults to the
previous run of the same schedule; a reload that reuses an API schedule's name is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config, write_config

ADMIN = "a" * 32
READ = "r" * 32


def cfg(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    data = sim_config(tmp_path, scan_seconds=0.2, **extra)
    data["server"] |= {"admin-tokens": [ADMIN], "read-tokens": [READ]}
    data.setdefault(
        "schedules",
        [{"name": "nightly", "targets": "10.9.0.1", "pool": "lan", "cron": "0 3 * * *"}],
    )
    return data


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_done(http: aiohttp.ClientSession, d: Daemon, task_id: str) -> dict[str, Any]:
    for _ in range(400):
        async with http.get(f"{d.url}/api/v1/scans/{task_id}", headers=h(READ)) as r:
            view: dict[str, Any] = await r.json()
        if view["status"] in ("completed", "failed", "canceled", "timed_out"):
            return view
        await d.engine.wait_change(task_id, 0.5) if d.engine else None
    raise AssertionError(f"{task_id} did not end")


async def test_schedule_api_end_to_end(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    d: Daemon = await start_daemon(cfg(tmp_path))
    base = f"{d.url}/api/v1/schedules"
    body = {"name": "weekly", "targets": ["10.9.0.2"], "cron": "0 2 * * 1", "timezone": "UTC"}
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json=body, headers=h(READ)) as r:
            assert r.status == 403
        async with http.post(base, json=body, headers=h(ADMIN)) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        assert created["name"] == "weekly" and created["source"] == "api"
        assert created["next_run_at"].endswith("T02:00:00.000+00:00")
        for bad, field in (
            ({"name": "x", "targets": "10.9.0.3", "every_s": 0}, "every_s"),
            ({"name": "x", "targets": "10.9.0.3", "cron": "* *"}, "cron"),
            (
                {"name": "x", "targets": "10.9.0.3", "every_s": 60, "timezone": "Nowhere"},
                "timezone",
            ),
            ({"name": "x", "targets": "10.9.0.3", "every_s": 60, "pool": "nope"}, "pool"),
            ({"name": "x", "targets": "10.9.0.3", "every_s": "60"}, "every_s"),
            ({"name": "x" * 500, "targets": "10.9.0.3", "every_s": 60}, "name"),
            ({"name": "x", "targets": "10.9.0.3", "every_s": 60, "color": 1}, "color"),
        ):
            async with http.post(base, json=bad, headers=h(ADMIN)) as r:
                assert r.status == 400, (bad, await r.text())
                err = (await r.json())["error"]
                assert err["field"] == field, (bad, err)
        async with http.post(base, json=body, headers=h(ADMIN)) as r:
            assert r.status == 409
        async with http.patch(f"{base}/nightly", json={"every_s": 5}, headers=h(ADMIN)) as r:
            assert r.status == 409
            assert "config file" in (await r.json())["error"]["message"]
        async with http.delete(f"{base}/nightly", headers=h(ADMIN)) as r:
            assert r.status == 409
        async with http.patch(f"{base}/weekly", json={"cron": "0 4 * * 1"}, headers=h(ADMIN)) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["next_run_at"].endswith("T04:00:00.000+00:00")
        async with http.get(base, headers=h(READ)) as r:
            names = [s["name"] for s in (await r.json())["schedules"]]
        assert names == ["nightly", "weekly"]
        # two runs by hand: the second compares with the first by default
        ids = []
        for _ in range(2):
            async with http.post(f"{base}/weekly/run-now", headers=h(ADMIN)) as r:
                assert r.status == 202, await r.text()
                ids.append((await r.json())["run"]["task_id"])
            view = await wait_done(http, d, ids[-1])
            assert view["status"] == "completed" and view["schedule_id"] == "weekly"
        # a hand-made scan of the same targets in between is not the schedule's previous run
        async with http.post(
            f"{d.url}/api/v1/scans", json={"targets": "10.9.0.2"}, headers=h(ADMIN)
        ) as r:
            other = (await r.json())["task_id"]
        await wait_done(http, d, other)
        async with http.post(f"{base}/weekly/run-now", headers=h(ADMIN)) as r:
            ids.append((await r.json())["run"]["task_id"])
        await wait_done(http, d, ids[-1])
        async with http.get(f"{d.url}/api/v1/scans/{ids[-1]}/compare", headers=h(READ)) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["base_task_id"] == ids[1]
        async with http.get(f"{base}/weekly", headers=h(READ)) as r:
            runs = (await r.json())["runs"]
        assert [(x["kind"], x["outcome"], x["task_id"]) for x in runs] == [
            ("manual", "fired", t) for t in reversed(ids)
        ]
        # a reload that names a config schedule like the API one is refused, nothing changes
        data = cfg(tmp_path)
        data["schedules"].append({"name": "weekly", "targets": "10.9.0.9", "every-s": 60})
        assert d.config_path is not None
        write_config(Path(d.config_path), data)
        async with http.post(f"{d.url}/api/v1/reload", headers=h(ADMIN)) as r:
            assert r.status == 400
            assert "through the API" in (await r.json())["error"]["message"]
        async with http.delete(f"{base}/weekly", headers=h(ADMIN)) as r:
            assert r.status == 200
        async with http.get(f"{base}/weekly", headers=h(READ)) as r:
            assert r.status == 404
        async with http.post(f"{base}/..%2f/run-now", headers=h(ADMIN)) as r:
            assert r.status == 404


async def test_a_reload_adds_a_schedule_that_fires(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    """SIGHUP's path: a [[schedules]] entry added to the file is fired without a restart (the
    reload wakes the scheduler), and a bad one is refused while the old set keeps running."""
    data = cfg(tmp_path)
    d: Daemon = await start_daemon(data)
    assert d.config_path is not None and d.service is not None
    bad = cfg(tmp_path)
    bad["schedules"].append({"name": "bad", "targets": "10.9.0.5", "cron": "0 25 * * *"})
    write_config(Path(d.config_path), bad)
    refused = await d.reload()
    assert not refused.applied and "$.schedules[1].cron" in refused.message
    data["schedules"].append({"name": "often", "targets": "10.9.0.5", "every-s": 1})
    write_config(Path(d.config_path), data)
    outcome = await d.reload()
    assert outcome.applied and outcome.changes["schedules_added"] == ["often"]
    ops = d.service.schedules
    for _ in range(200):
        runs = await ops.store.runs("often")
        if any(r.outcome == "fired" for r in runs):
            break
        await asyncio.sleep(0.05)  # the daemon runs on the wall clock: a bounded wait
    fired = [r for r in runs if r.outcome == "fired"]
    assert fired, runs
    task = await d.service.get_task(fired[0].task_id or "", with_results=False)
    assert task.schedule_id == "often" and task.targets == ["10.9.0.5"]
