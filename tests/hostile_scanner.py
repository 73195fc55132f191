"""A hostile Nessus scanner: a real aiohttp app on 127.0.0.1 port 0 that answers the calls
nessus-pool makes like a scanner would, except for the one bad answer it is told to give.

Attacks (``HostileScanner.attack``):

- ``deep_status``: ``GET /scans/{id}`` is JSON nested :attr:`deep_levels` deep
- ``huge_status``: ``GET /scans/{id}`` is valid JSON of :attr:`huge_bytes`, streamed
- ``disconnect``: ``GET /scans/{id}`` drops the connection without an answer
- ``stuck_loading``: the export status says ``loading`` for ever
- ``drip_export``: the download sends one byte at a time, calling :attr:`on_drip` between
  bytes (a test moves its fake clock there; the proof sleeps)
- ``error_secret``: ``POST /scans`` fails with an error text that echoes :attr:`echo` (or
  every password in the request) after :attr:`echo_offset` characters of filler (where a cut
  to 200 characters would fall)
- ``none``: a well-behaved scanner whose scans complete at once with a small export

Used by the end-to-end tests and by ``proofs/attack_scanner.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from nessus_pool.simulator.export import generate_export

ATTACKS = (
    "deep_status",
    "huge_status",
    "disconnect",
    "stuck_loading",
    "drip_export",
    "error_secret",
)


class HostileScanner:
    def __init__(self, attack: str = "none") -> None:
        self.attack = attack
        self.deep_levels = 200_000
        self.huge_bytes = 40 * 1024 * 1024
        self.drip_bytes = 10_000
        self.echo = ""
        self.echo_offset = 190
        self.on_drip: Callable[[], Awaitable[None]] | None = None
        #: bytes of the hostile answers actually sent (a capped reader stops early)
        self.bytes_sent = 0
        self.calls: list[str] = []
        self._scans: dict[int, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> HostileScanner:
        app = web.Application()
        r = app.router
        r.add_get("/server/status", self._server_status)
        r.add_get("/server/properties", self._properties)
        r.add_get("/editor/scan/templates", self._templates)
        r.add_get("/scans", self._list)
        r.add_post("/scans", self._create)
        r.add_post("/scans/{id}/launch", self._launch)
        r.add_get("/scans/{id}", self._details)
        r.add_post("/scans/{id}/{action:stop|pause|resume|kill}", self._ok)
        r.add_delete("/scans/{id}", self._ok)
        r.add_post("/scans/{id}/export", self._export)
        r.add_get("/scans/{id}/export/{file}/status", self._export_status)
        r.add_get("/scans/{id}/export/{file}/download", self._download)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- well-behaved parts ------------------------------------------------------------

    async def _server_status(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "progress": None})

    async def _properties(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "nessus_type": "Nessus Manager",
                "server_version": "10.7.0",
                "license": {"type": "manager", "features": {"scan_api": True}},
            }
        )

    async def _templates(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"templates": [{"uuid": "uuid-basic", "name": "basic", "title": "Basic Network Scan"}]}
        )

    async def _list(self, request: web.Request) -> web.Response:
        rows = [
            {"id": i, "name": s["name"], "uuid": f"u-{i}", "status": s["status"]}
            for i, s in self._scans.items()
        ]
        return web.json_response({"scans": rows or None})

    async def _create(self, request: web.Request) -> web.Response:
        self.calls.append("create")
        body = await request.json()
        settings = body.get("settings", {})
        if self.attack == "error_secret":
            echo = self.echo or " / ".join(_passwords(body))
            text = "x" * self.echo_offset + echo + " was refused"
            return web.json_response({"error": text}, status=400)
        scan_id = len(self._scans) + 1
        self._scans[scan_id] = {
            "name": settings.get("name", ""),
            "targets": settings.get("text_targets", "10.0.0.1"),
            "status": "empty",
        }
        return web.json_response(
            {"scan": {"id": scan_id, "uuid": f"t-{scan_id}", "name": settings.get("name")}}
        )

    async def _launch(self, request: web.Request) -> web.Response:
        scan = self._scans[int(request.match_info["id"])]
        scan["status"] = "completed"
        return web.json_response({"scan_uuid": "run-1"})

    async def _ok(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _export(self, request: web.Request) -> web.Response:
        return web.json_response({"file": 7})

    # --- hostile parts -----------------------------------------------------------------

    async def _details(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("details")
        scan = self._scans.get(int(request.match_info["id"]))
        if scan is None:
            return web.json_response({"error": "no such scan"}, status=404)
        if self.attack == "deep_status":
            n = self.deep_levels
            body = b'{"info":{"status":"running"},"hosts":' + b"[" * n + b"]" * n + b"}"
            self.bytes_sent += len(body)
            return web.Response(body=body, content_type="application/json")
        if self.attack == "huge_status":
            return await self._stream_huge(request)
        if self.attack == "disconnect":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # aiohttp ends the handler without an answer
        return web.json_response(
            {"info": {"status": scan["status"], "name": scan["name"]}, "hosts": []}
        )

    async def _stream_huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        head = b'{"info":{"status":"running"},"hosts":[],"pad":"'
        chunk = b"A" * (256 * 1024)
        try:
            await resp.write(head)
            sent = len(head)
            while sent < self.huge_bytes:
                await resp.write(chunk)
                sent += len(chunk)
                self.bytes_sent += len(chunk)
            await resp.write(b'"}')
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading: what a capped reader does
        return resp

    async def _export_status(self, request: web.Request) -> web.Response:
        status = "loading" if self.attack == "stuck_loading" else "ready"
        return web.json_response({"status": status})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("download")
        scan = self._scans[int(request.match_info["id"])]
        if self.attack != "drip_export":
            body = generate_export(
                hosts=str(scan["targets"]).split(","),
                scan_name=str(scan["name"]),
                credentialed=None,
                ssh_username=None,
                seed=1,
            )
            return web.Response(body=body, content_type="application/octet-stream")
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        try:
            for _ in range(self.drip_bytes):
                await resp.write(b"<")
                self.bytes_sent += 1
                if self.on_drip is not None:
                    await self.on_drip()
        except (ConnectionError, RuntimeError):
            pass
        return resp


def _passwords(obj: Any) -> list[str]:
    """Every string under a key that names a password, depth first."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "password" in str(k) and isinstance(v, str):
                found.append(v)
            else:
                found += _passwords(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _passwords(v)
    return found
