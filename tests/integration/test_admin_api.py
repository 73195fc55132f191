"""Admin API rules: auth per role, error shape, OpenAPI matches the routes, DLQ retry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from nessus_pool.daemon import Daemon
from nessus_pool.queues import ScannerSlots
from nessus_pool.service import SubmitRequest, scanner_state
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

    def query_names(path: str) -> set[str]:
        return {p["name"] for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "query"}

    assert query_names("/api/v1/scans") == {
        "status",
        "pool",
        "target",
        "created_from_ms",
        "created_to_ms",
        "page_size",
        "limit",
        "cursor",
    }
    assert query_names("/api/v1/dlq") == {"pool", "page_size", "limit", "cursor"}
    results = query_names("/api/v1/scans/{task_id}/results")
    assert {"filters.min_severity", "min_severity", "page_size", "schema_profile"} <= results
    async with aiohttp.ClientSession() as http:
        for path in ("/api/v1/scans", "/api/v1/dlq"):
            for name in query_names(path):  # every documented name is accepted
                url = f"{d.url}{path}?{name}=1"
                async with http.get(url) as r:
                    assert r.status == 200 or (await r.json())["error"]["field"] == name
                    if r.status != 200:
                        assert "query parameter" not in (await r.json())["error"]["message"]
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


# --- issue 11 items 7, 12, 14 and issue 13: one vocabulary, exact errors ------------------------


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as r:
        return r.status, await r.json()


async def _drained(tmp_path: Path, start_daemon: DaemonFactory, **cfg: Any) -> Daemon:
    """A daemon whose scanners take nothing: submitted tasks stay queued."""
    d: Daemon = await start_daemon(sim_config(tmp_path, **cfg))
    assert d.service is not None
    for sid in ("sim-1", "sim-2"):
        d.service.set_scanner_enabled(sid, False)
    return d


async def test_lists_page_with_page_size_and_refuse_unknown_parameters(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d = await _drained(tmp_path, start_daemon)
    assert d.service is not None
    ids = [(await d.service.submit(SubmitRequest(targets=f"10.1.0.{i}"))).task_id for i in (1, 2)]
    async with aiohttp.ClientSession() as http:
        for path in ("/api/v1/scans", "/api/v1/dlq"):
            status, page = await _json(http, "GET", f"{d.url}{path}?page_size=1")
            assert status == 200 and len(page["tasks"]) <= 1, page
        status, page = await _json(http, "GET", f"{d.url}/api/v1/scans?page_size=1")
        assert [t["task_id"] for t in page["tasks"]] == ids[1:] and page["next_cursor"]
        status, page = await _json(http, "GET", f"{d.url}/api/v1/scans?limit=1")  # alias
        assert status == 200 and [t["task_id"] for t in page["tasks"]] == ids[1:]
        status, body = await _json(http, "GET", f"{d.url}/api/v1/scans?limit=1&page_size=2")
        assert status == 400 and body["error"]["field"] == "page_size"
        assert "more than once" in body["error"]["message"]
        status, body = await _json(http, "GET", f"{d.url}/api/v1/scans?page_size=501")
        assert status == 400 and body["error"]["field"] == "page_size"
        for path in (
            "/api/v1/scans?statuss=queued",
            f"/api/v1/scans/{ids[0]}?verbose=1",
            "/api/v1/pools?x=1",
            "/api/v1/dlq?limits=5",
            "/api/v1/scanners?pool=lan&bogus=1",
        ):
            status, body = await _json(http, "GET", d.url + path)
            bad = path.split("?")[1].split("&")[-1].split("=")[0]
            assert status == 400, (path, body)
            assert body["error"]["field"] == bad and bad in body["error"]["message"], body
        many = {f"p{i}-" + "x" * 200: "1" for i in range(30)}
        async with http.get(f"{d.url}/api/v1/scans", params=many) as r:
            raw = await r.read()
        assert r.status == 400 and b"unknown query" in raw and len(raw) < 1500, raw  # bounded


async def test_results_take_mcp_names_with_flat_aliases(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=0.2))
    assert d.service is not None
    sub = await d.service.submit(SubmitRequest(targets="10.2.0.1-10.2.0.2"))
    assert (await d.service.wait_for(sub.task_id, 60)).status == "completed"
    url = f"{d.url}/api/v1/scans/{sub.task_id}/results"
    async with aiohttp.ClientSession() as http:
        _, canonical = await _json(
            http,
            "GET",
            f"{url}?filters.min_severity=medium&page_size=3&schema_profile=minimal",
        )
        _, flat = await _json(http, "GET", f"{url}?min_severity=medium&page_size=3&profile=minimal")
        assert canonical == flat and canonical["profile"] == "minimal"
        assert canonical["items"] and all(i["severity"] >= 2 for i in canonical["items"])
        _, custom = await _json(http, "GET", f"{url}?custom_fields=host,plugin_id&page_size=2")
        assert custom["fields"] == ["host", "plugin_id"]
        _, one = await _json(http, "GET", f"{url}?filters.severity=info&page_size=500")
        assert one["items"] and {i["severity"] for i in one["items"]} == {0}
        for query, field in (
            ("filters.min_severity=bogus", "filters.min_severity"),
            ("min_severity=bogus", "min_severity"),
            ("filters.port=70000", "filters.port"),
            ("filters.exploit_available=maybe", "filters.exploit_available"),
            ("filters.min_cvss3=nan", "filters.min_cvss3"),
            ("filters.sort=random", "filters.sort"),
            ("schema_profile=huge", "schema_profile"),
            ("min_severity=high&filters.min_severity=low", "filters.min_severity"),
            ("filters.nope=1", "filters.nope"),
            ("custom_fields=host&schema_profile=brief", "custom_fields"),
        ):
            status, body = await _json(http, "GET", f"{url}?{query}")
            assert status == 400 and body["error"]["field"] == field, (query, body)


async def test_malformed_cursor_and_purge_age_are_400_for_a_read_token(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    cfg = sim_config(tmp_path)
    cfg["server"].update(
        {"admin-tokens": ["admin-tok-0123456"], "read-tokens": ["read-tok-0123456"]}
    )
    d: Daemon = await start_daemon(cfg)
    read = {"Authorization": "Bearer read-tok-0123456"}
    admin = {"Authorization": "Bearer admin-tok-0123456"}
    async with aiohttp.ClientSession() as http:
        for path in ("/api/v1/scans", "/api/v1/dlq"):
            for cursor in ("99999999999999999999999", "²", "9223372036854775808", "-1", " 1"):
                status, body = await _json(
                    http, "GET", f"{d.url}{path}", params={"cursor": cursor}, headers=read
                )
                assert status == 400 and body["error"]["field"] == "cursor", (path, cursor)
        status, _ = await _json(
            http, "GET", f"{d.url}/api/v1/scans", params={"cursor": "9223372036854775807"}
        )
        assert status == 401  # auth before anything else
        for age in ("1e308", "1e400", "-1"):
            status, body = await _json(
                http,
                "POST",
                f"{d.url}/api/v1/dlq/purge",
                data=f'{{"pool": "lan", "older_than_s": {age}}}',
                headers={**admin, "Content-Type": "application/json"},
            )
            assert status == 400 and body["error"]["field"] == "older_than_s", (age, body)


async def test_errors_name_their_field(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    d = await _drained(tmp_path, start_daemon)
    assert d.service is not None
    tid = (await d.service.submit(SubmitRequest(targets="10.3.0.1"))).task_id
    await d.service.cancel(tid)
    missing = "0123456789abcdef"
    async with aiohttp.ClientSession() as http:
        for method, path, status, field in (
            ("GET", f"/api/v1/scans/{missing}", 404, "task_id"),
            ("GET", f"/api/v1/scans/{missing}/results", 404, "task_id"),
            ("POST", f"/api/v1/scans/{tid}/cancel", 409, "task_id"),
            ("GET", f"/api/v1/scans/{tid}/export", 404, "task_id"),
            ("GET", f"/api/v1/dlq/{tid}", 404, "task_id"),
            ("POST", f"/api/v1/dlq/{tid}/retry", 409, "task_id"),
            ("GET", "/api/v1/pools/nope", 404, "pool"),
            ("GET", "/api/v1/scanners/nope", 404, "scanner_id"),
            ("POST", "/api/v1/scanners/nope/drain", 404, "scanner_id"),
            ("GET", f"/api/v1/scans/{tid}/compare", 404, "base_task_id"),
        ):
            got, body = await _json(http, method, d.url + path)
            assert (got, body["error"].get("field")) == (status, field), (path, body)
        got, body = await _json(
            http, "POST", f"{d.url}/api/v1/scans", json={"targets": "10.3.0.2", "colour": "red"}
        )
        assert got == 400 and body["error"]["field"] == "colour"
        got, body = await _json(
            http, "POST", f"{d.url}/api/v1/dlq/purge", json={"pool": "lan", "extra": {"a": 1}}
        )
        assert got == 400 and body["error"]["field"] == "extra"
        key = {"targets": "10.3.0.3", "idempotency_key": "k-1"}
        assert (await _json(http, "POST", f"{d.url}/api/v1/scans", json=key))[0] == 202
        got, body = await _json(
            http, "POST", f"{d.url}/api/v1/scans", json={**key, "targets": "10.3.0.4"}
        )
        assert got == 409 and body["error"]["field"] == "idempotency_key"


async def test_cancel_reply_says_what_the_task_moved_to(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=30))
    assert d.service is not None
    assert d.service is not None and d.engine is not None
    running = (await d.service.submit(SubmitRequest(targets="10.4.0.1"))).task_id
    async with asyncio.timeout(20):
        while (await d.service.get_task(running)).status != "running":
            await d.engine.wait_change(running, 5)
    d.service.set_scanner_enabled("sim-1", False)
    queued = (await d.service.submit(SubmitRequest(targets="10.4.0.2"))).task_id
    async with aiohttp.ClientSession() as http:
        status, body = await _json(http, "POST", f"{d.url}/api/v1/scans/{running}/cancel")
        assert status == 200 and body["status"] == "cancelling", body
        status, body = await _json(http, "POST", f"{d.url}/api/v1/scans/{queued}/cancel")
        assert status == 200 and body["status"] == "canceled", body
    assert (await d.service.wait_for(running, 20)).status == "canceled"


def test_scanner_state_words() -> None:
    slots = ScannerSlots(scanner_id="s", pool="p", capacity=1)
    assert scanner_state(slots) == "probing"  # was "down" before any probe answered
    slots.draining = True
    assert scanner_state(slots) == "draining"  # an operator's decision wins over health
    slots.draining, slots.reachable, slots.message = False, True, "ok"
    assert scanner_state(slots) == "up"
    slots.scan_api = False
    assert scanner_state(slots) == "export-only"
    slots.reachable, slots.message = False, "unreachable: refused"
    assert scanner_state(slots) == "down"
    slots.enabled = False
    assert scanner_state(slots) == "disabled"


def test_every_findings_filter_is_a_results_query_parameter() -> None:
    """The REST table of result filters cannot drift from the query struct it feeds: every
    filter of ``FindingsQuery`` is accepted as ``filters.NAME`` (the cwe filter was not)."""
    from nessus_pool.api.query import RESULT_FILTERS
    from nessus_pool.results.query import FindingsQuery

    paging = {"page", "page_size", "profile", "fields"}
    filters = set(FindingsQuery.__struct_fields__) - paging
    assert filters == set(RESULT_FILTERS) - {"severity", "cvss_score"}
