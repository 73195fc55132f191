"""The async client for one on-premises Nessus / Nessus Manager scanner (official REST API).

It does not retry: every failure comes out as a typed :class:`ScannerError` (``transient``
says whether trying again may help) and the engine owns retries. The two exceptions are a
single re-login when a username/password session expires and asking again for an export
that expired on the scanner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec
from yarl import URL

from nessus_pool.clock import Clock, SystemClock
from nessus_pool.errors import (
    PermanentScannerError,
    ScanApiUnavailableError,
    ScannerAuthError,
    ScannerError,
    ScannerTimeoutError,
    TransientScannerError,
)
from nessus_pool.models import ScanSpec
from nessus_pool.nessus import export as _export
from nessus_pool.nessus import wire
from nessus_pool.nessus.status import map_status
from nessus_pool.nessus.transport import Transport
from nessus_pool.nessus.types import (
    Capability,
    ExportResult,
    RemotePolicy,
    RemoteScan,
    RemoteScanSummary,
    ScanDetails,
    ServerProperties,
    ServerStatus,
)

T = TypeVar("T")


class NessusClient:
    """One scanner. Create it anywhere; its HTTP session is opened on the first call inside
    the running loop and reused until :meth:`close`. Secrets never appear in its ``repr``,
    its logs or its errors."""

    def __init__(
        self,
        scanner_id: str,
        base_url: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        verify_tls: bool = True,
        ca_file: str | None = None,
        timeout_s: float = 30.0,
        clock: Clock | None = None,
        on_request: Callable[[str, str, str, float], None] | None = None,
    ) -> None:
        self.scanner_id = scanner_id
        self.clock: Clock = clock or SystemClock()
        self._t = Transport(
            scanner_id,
            base_url,
            access_key=access_key,
            secret_key=secret_key,
            username=username,
            password=password,
            verify_tls=verify_tls,
            ca_file=ca_file,
            timeout_s=timeout_s,
            clock=self.clock,
            on_request=on_request,
        )
        self._templates: dict[str, wire.WireTemplate] | None = None
        #: what we last learned about the licence (probe, or a 412); None = not known yet
        self._scan_api: bool | None = None

    def __repr__(self) -> str:
        url = URL(self._t.base_url).with_user(None)
        return (
            f"NessusClient(scanner_id={self.scanner_id!r}, base_url={str(url)!r}, "
            f"auth={self._t.auth_mode})"
        )

    __str__ = __repr__

    async def close(self) -> None:
        await self._t.close()

    async def __aenter__(self) -> NessusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- helpers ------------------------------------------------------------------------

    def _shape(self, reply: Any, type_: type[T], endpoint: str) -> T:
        try:
            return wire.convert(reply, type_)
        except msgspec.ValidationError as exc:
            raise PermanentScannerError(
                f"unexpected answer from the scanner: {exc}",
                scanner_id=self.scanner_id,
                endpoint=endpoint,
            ) from exc
        except RecursionError:
            raise TransientScannerError(
                "the scanner answered with JSON nested too deeply to read",
                scanner_id=self.scanner_id,
                endpoint=endpoint,
            ) from None

    async def _get(self, path: str, endpoint: str, type_: type[T]) -> T:
        return self._shape(await self._t.request_json("GET", path, endpoint), type_, endpoint)

    async def _scan_write(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        json: Any = None,
        secrets: Sequence[str] = (),
    ) -> Any:
        """A call that licences without the scan API refuse (412, or just a dropped
        connection once the 412 has been seen)."""
        try:
            return await self._t.request_json(method, path, endpoint, json=json, secrets=secrets)
        except ScanApiUnavailableError:
            self._scan_api = False
            raise
        except TransientScannerError as exc:
            dropped = exc.status is None and not isinstance(exc, ScannerTimeoutError)
            if dropped and self._scan_api is False:
                raise ScanApiUnavailableError(
                    "the scanner dropped the connection on a scan write, as scanners whose "
                    "licence has no scan API do (export-only)",
                    scanner_id=self.scanner_id,
                    endpoint=endpoint,
                ) from exc
            raise

    # --- server -------------------------------------------------------------------------

    async def server_status(self) -> ServerStatus:
        """``GET /server/status`` (no authentication needed). ``ready`` is False while
        Nessus loads or compiles plugins; a 503 during start-up is an answer, not an error."""
        ep = "GET /server/status"
        try:
            reply = await self._t.request_json(
                "GET", "/server/status", ep, accept=(503,), authenticate=False
            )
        except TransientScannerError as exc:
            if exc.status != 503:
                raise
            return ServerStatus(status="unavailable", progress=None, ready=False)
        w = self._shape(reply or {}, wire.WireServerStatus, ep)
        return ServerStatus(status=w.status, progress=w.progress, ready=w.status == "ready")

    async def server_properties(self) -> ServerProperties:
        """``GET /server/properties``: version, product, licence and whether the licence
        allows the scan API (``license.features.scan_api``)."""
        w = await self._get(
            "/server/properties", "GET /server/properties", wire.WireServerProperties
        )
        props = wire.server_properties(w)
        self._scan_api = props.scan_api
        return props

    async def probe(self) -> Capability:
        """Health and licence capability. Transient and other scanner problems give
        ``reachable=False`` (or ``ready=False``) with a message; bad credentials raise
        :class:`ScannerAuthError`."""
        try:
            status = await self.server_status()
        except ScannerAuthError:
            raise
        except ScannerError as exc:
            return Capability(
                reachable=False,
                ready=False,
                scan_api=False,
                export_only=False,
                message=f"unreachable: {exc}",
            )
        if not status.ready:
            progress = f" ({status.progress}%)" if status.progress is not None else ""
            return Capability(
                reachable=True,
                ready=False,
                scan_api=False,
                export_only=False,
                message=f"Nessus is not ready: {status.status}{progress}",
            )
        try:
            props = await self.server_properties()
        except ScannerAuthError:
            raise
        except ScannerError as exc:
            return Capability(
                reachable=False,
                ready=False,
                scan_api=False,
                export_only=False,
                message=f"cannot read server properties: {exc}",
            )
        product = " ".join(p for p in (props.nessus_type or "Nessus", props.version) if p)
        if props.scan_api:
            message = f"{product}: ready"
        else:
            message = (
                f"{product}: the licence does not allow scan creation through the API (export-only)"
            )
        try:
            policies: tuple[str, ...] | None = tuple(p.name for p in await self.list_policies())
        except ScannerAuthError:
            raise
        except ScannerError:
            policies = None  # a user without policy rights can still scan from templates
        return Capability(
            reachable=True,
            ready=True,
            scan_api=props.scan_api,
            export_only=not props.scan_api,
            version=props.version,
            nessus_type=props.nessus_type,
            message=message,
            policies=policies,
        )

    # --- templates and scans ------------------------------------------------------------

    async def template_uuid(self, name: str) -> str:
        """The UUID of the scan template called ``name`` (e.g. ``basic``, ``advanced``; the
        title, e.g. "Basic Network Scan", also works). The list is fetched once per client.
        An unknown name raises :class:`PermanentScannerError` listing the names there are."""
        ep = "GET /editor/scan/templates"
        if self._templates is None:
            w = await self._get("/editor/scan/templates", ep, wire.WireTemplates)
            templates = {t.name: t for t in w.templates or []}
            if not templates:
                raise TransientScannerError(
                    "the scanner listed no scan templates", scanner_id=self.scanner_id, endpoint=ep
                )
            self._templates = templates
        found = self._templates.get(name)
        if found is None:
            wanted = name.casefold()
            found = next(
                (t for t in self._templates.values() if t.title and t.title.casefold() == wanted),
                None,
            )
        if found is None:
            names = ", ".join(sorted(self._templates))
            raise PermanentScannerError(
                f"no scan template named {name!r}; available: {names}",
                scanner_id=self.scanner_id,
                endpoint=ep,
            )
        if found.unsupported:
            raise PermanentScannerError(
                f"the scan template {name!r} is not available with this scanner's licence",
                scanner_id=self.scanner_id,
                endpoint=ep,
            )
        return found.uuid

    async def list_policies(self) -> list[RemotePolicy]:
        """The scanner's saved scan policies (``GET /policies``), fetched on every call."""
        w = await self._get("/policies", "GET /policies", wire.WirePolicies)
        return [
            RemotePolicy(
                id=p.id, name=p.name, template_uuid=p.template_uuid, description=p.description or ""
            )
            for p in w.policies or []
        ]

    async def policy(self, name: str) -> RemotePolicy:
        """The saved policy called ``name``; an unknown name raises
        :class:`PermanentScannerError` listing the policies there are."""
        policies = await self.list_policies()
        found = next((p for p in policies if p.name == name), None)
        if found is None:
            have = ", ".join(repr(p.name) for p in policies) or "none"
            raise PermanentScannerError(
                f"no saved policy named {name!r} on this scanner; it has: {have}",
                scanner_id=self.scanner_id,
                endpoint="GET /policies",
            )
        return found

    async def create_scan(self, spec: ScanSpec) -> RemoteScan:
        """Create (not launch) a scan, from ``spec.policy`` (a saved policy, resolved through
        ``GET /policies``) or else ``spec.template``. Not idempotent: after a transient failure
        the scan may exist anyway; look it up with :meth:`find_scans_by_name` before creating
        again."""
        policy_id = None
        if spec.policy is not None:
            policy = await self.policy(spec.policy)
            template, policy_id = policy.template_uuid, policy.id
        else:
            template = await self.template_uuid(spec.template)
        secrets = wire.credential_secrets(spec.credential)
        key_file = None
        if spec.credential is not None and spec.credential.private_key is not None:
            key_file = await self._upload_key(spec.credential.private_key, secrets)
        body = wire.create_body(spec, template, key_file, policy_id)
        ep = "POST /scans"
        reply = await self._scan_write("POST", "/scans", ep, json=body, secrets=secrets)
        created = self._shape(reply, wire.WireCreated, ep).scan
        return RemoteScan(id=created.id, uuid=created.uuid, name=created.name or spec.name)

    async def _upload_key(self, private_key: str, secrets: Sequence[str]) -> str:
        """Nessus takes SSH key files by upload only; the scan then names the upload."""
        ep = "POST /file/upload"
        filename = f"nessus-pool-{uuid.uuid4().hex}.key"
        reply = await self._t.request_json(
            "POST",
            "/file/upload",
            ep,
            secrets=secrets,
            form=[("Filedata", private_key.encode(), filename), ("no_enc", "0", None)],
        )
        return self._shape(reply, wire.WireUploaded, ep).fileuploaded

    async def launch_scan(self, scan_id: int) -> str:
        """Launch; returns the run's ``scan_uuid``. Not idempotent (check the phase after a
        transient failure)."""
        ep = "POST /scans/{id}/launch"
        reply = await self._scan_write("POST", f"/scans/{scan_id}/launch", ep)
        return self._shape(reply, wire.WireLaunched, ep).scan_uuid

    async def scan_details(self, scan_id: int) -> ScanDetails:
        """``GET /scans/{id}``. ``progress_pct`` is the mean of the hosts' progress so far
        (hosts appear as Nessus reaches them), 100 once completed, None if unknown."""
        w = await self._get(f"/scans/{scan_id}", "GET /scans/{id}", wire.WireDetails)
        return wire.scan_details(scan_id, w)

    async def list_scans(self) -> list[RemoteScanSummary]:
        """Every scan this account can see (``"scans": null`` from Nessus gives [])."""
        w = await self._get("/scans", "GET /scans", wire.WireScanList)
        return [
            RemoteScanSummary(
                id=r.id,
                name=r.name,
                uuid=r.uuid,
                raw_status=r.status,
                phase=map_status(r.status),
                folder_id=r.folder_id,
                last_modification_date=r.last_modification_date,
                creation_date=r.creation_date,
            )
            for r in w.scans or []
        ]

    async def find_scans_by_name(self, name: str) -> list[RemoteScanSummary]:
        """Scans whose name is exactly ``name``, newest first (by last modification, then
        creation, then id). Several matches mean an earlier create was repeated: every one is
        returned and the caller decides which to keep."""
        found = [s for s in await self.list_scans() if s.name == name]
        found.sort(
            key=lambda s: (s.last_modification_date or 0, s.creation_date or 0, s.id), reverse=True
        )
        return found

    async def stop_scan(self, scan_id: int) -> None:
        """Stop a running scan; it ends ``canceled`` and keeps partial results."""
        await self._scan_write("POST", f"/scans/{scan_id}/stop", "POST /scans/{id}/stop")

    async def pause_scan(self, scan_id: int) -> None:
        await self._scan_write("POST", f"/scans/{scan_id}/pause", "POST /scans/{id}/pause")

    async def resume_scan(self, scan_id: int) -> None:
        await self._scan_write("POST", f"/scans/{scan_id}/resume", "POST /scans/{id}/resume")

    async def kill_scan(self, scan_id: int) -> None:
        """Terminate at once (when stop hangs)."""
        await self._scan_write("POST", f"/scans/{scan_id}/kill", "POST /scans/{id}/kill")

    async def delete_scan(self, scan_id: int) -> None:
        await self._scan_write("DELETE", f"/scans/{scan_id}", "DELETE /scans/{id}")

    async def export_scan(
        self,
        scan_id: int,
        dest: Path,
        *,
        deadline_s: float = 600.0,
        deadline_at_s: float | None = None,
        max_bytes: int = 2 * 1024**3,
        poll_interval_s: float = 1.0,
    ) -> ExportResult:
        """Export as ``.nessus`` to ``dest``: ask, poll the status every ``poll_interval_s``
        until ``ready`` (``ExportError`` past the deadline or on ``error``), stream to
        ``dest.with_suffix(".part")``, fsync, rename. One deadline covers all of it:
        ``deadline_s`` from now, or ``deadline_at_s`` (on this client's clock's
        ``monotonic_s``) if earlier, which a caller that retries passes so that a retry does
        not start a fresh deadline. Larger than ``max_bytes`` raises
        :class:`ExportTooLargeError`; a running scan (409) raises a transient
        :class:`ExportError`; an export that expires (404) is asked for again, twice at most;
        a failure to write ``dest`` raises :class:`StorageError`."""
        return await _export.export_scan(
            self._t,
            scan_id,
            dest,
            deadline_s=deadline_s,
            deadline_at_s=deadline_at_s,
            max_bytes=max_bytes,
            poll_interval_s=poll_interval_s,
        )
