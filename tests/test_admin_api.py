"""Admin API rules: auth per role, error shape, OpenAPI matches the routes, DLQ retry."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config


async def test_openapi_lists_every_route(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    assert d.app is not None
    async with aiohttp.ClientSession() as http, http.get(f"{d.url}/api/v1/openapi.json") as r:
        doc = await r.json()
    routes = {
        (res.method.lower(), res.resource.canonical)
        for res in d.app.router.routes()
        if res.resource is not None
        and res.method != "HEAD"
        and res.resource.canonical.startswith(("/api", "/h", "/r", "/metrics"))
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes <= documented, routes - documented
    submit = doc["components"]["schemas"]["SubmitRequest"]
    assert "targets" in submit["required"]
    assert set(submit["properties"]) >= {
        "targets",
        "scan_type",
        "credential",
        "priority",
        "idempotency_key",
        "pool",
    }


async def test_tokens_and_roles(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: object
) -> None:
    import os

    os.environ["NP_ADMIN_T"] = "admin-token-123456"
    os.environ["NP_READ_T"] = "read-token-123456"
    cfg = sim_config(tmp_path)
    cfg["server"].update(
        {"admin-tokens": [{"env": "NP_ADMIN_T"}], "read-tokens": [{"env": "NP_READ_T"}]}
    )
    d: Daemon = await start_daemon(cfg)
    admin = {"Authorization": "Bearer admin-token-123456"}
    read = {"Authorization": "Bearer read-token-123456"}
    body = {"targets": "10.0.0.1"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{d.url}/api/v1/pools") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"]["code"] == "unauthorized"
        async with http.get(f"{d.url}/api/v1/pools", headers=read) as r:
            assert r.status == 200
        async with http.post(f"{d.url}/api/v1/scans", json=body, headers=read) as r:
            assert r.status == 403
        async with http.post(
            f"{d.url}/api/v1/scans", json=body, headers={"Authorization": "Bearer nope"}
        ) as r:
            assert r.status == 401
        async with http.post(f"{d.url}/api/v1/scans", json=body, headers=admin) as r:
            assert r.status == 202
        async with http.get(f"{d.url}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{d.url}/metrics") as r:
            assert "admin-token-123456" not in await r.text()
    del os.environ["NP_ADMIN_T"], os.environ["NP_READ_T"]


async def test_dlq_retry_really_runs(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=0.2))
    assert d.service is not None and d.engine is not None and d.sim_cluster is not None
    from nessus_pool.simulator import Faults

    sim = d.sim_cluster.scanners[0]
    # every scan aborts: attempts run out and the task is dead-lettered
    sim.set_faults(Faults(abort_rate=1.0))
    sub = await d.service.submit(SubmitRequest(targets="10.8.0.1"))
    view = await d.service.wait_for(sub.task_id, 60)
    assert view.status == "failed" and view.dead_letter
    assert view.reason == "attempts_exhausted"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{d.url}/api/v1/dlq") as r:
            page = await r.json()
        assert [t["task_id"] for t in page["tasks"]] == [sub.task_id]
        async with http.get(f"{d.url}/api/v1/pools/lan") as r:
            assert (await r.json())["dlq_depth"] == 1
        async with http.get(f"{d.url}/api/v1/dlq/{sub.task_id}") as r:
            shown = await r.json()
        assert [e["status"] for e in shown["events"]].count("requeued") == 2
        sim.set_faults(Faults())
        async with http.post(f"{d.url}/api/v1/dlq/{sub.task_id}/retry") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "queued"
        done = await d.service.wait_for(sub.task_id, 60)
        async with http.get(f"{d.url}/api/v1/pools/lan") as r:
            assert (await r.json())["dlq_depth"] == 0
        assert done.status == "completed" and not done.dead_letter, (done.reason, done.error)
        async with http.post(f"{d.url}/api/v1/dlq/{sub.task_id}/retry") as r:
            assert r.status == 409
        async with http.post(f"{d.url}/api/v1/dlq/purge", json={"pool": "lan"}) as r:
            assert (await r.json()) == {"purged": 0, "task_ids": [], "dry_run": True}
