"""What the Nessus client returns: plain msgspec Structs, no secrets."""

from __future__ import annotations

import msgspec

from nessus_pool.nessus.status import RemotePhase


class ServerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /server/status``: ``ready`` once plugins are loaded and scans can run."""

    status: str
    progress: int | None = None
    ready: bool = False


class ServerProperties(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of ``GET /server/properties`` that decide what we can do with a scanner."""

    version: str | None = None
    nessus_type: str | None = None
    license_type: str | None = None
    #: the licence allows creating and launching scans through the API
    scan_api: bool = False


class Capability(msgspec.Struct, frozen=True, kw_only=True):
    """The result of :meth:`NessusClient.probe`; ``message`` is for humans."""

    reachable: bool
    ready: bool
    scan_api: bool
    export_only: bool
    version: str | None = None
    nessus_type: str | None = None
    message: str = ""
    #: names of the saved policies; None when they could not be listed
    policies: tuple[str, ...] | None = None


class RemotePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A saved scan policy (``GET /policies``)."""

    id: int
    name: str
    template_uuid: str
    description: str = ""


class RemoteScan(msgspec.Struct, frozen=True, kw_only=True):
    """A scan just created on the scanner."""

    id: int
    uuid: str | None
    name: str


class HostProgress(msgspec.Struct, frozen=True, kw_only=True):
    hostname: str
    progress_pct: int | None
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    info: int = 0


class ScanDetails(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /scans/{id}``. ``progress_pct`` is the mean over hosts (0-100), 100 once
    completed, None when nothing is known yet."""

    id: int
    name: str
    uuid: str | None
    raw_status: str
    phase: RemotePhase
    progress_pct: int | None
    hosts: list[HostProgress]
    scan_start: int | None = None
    scan_end: int | None = None


class RemoteScanSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``GET /scans``."""

    id: int
    name: str
    uuid: str | None
    raw_status: str
    phase: RemotePhase
    folder_id: int | None = None
    last_modification_date: int | None = None
    creation_date: int | None = None


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    """A downloaded ``.nessus`` export, already renamed into place and fsynced."""

    path: str
    size_bytes: int
    sha256: str
    #: an int on premises, a string in Tenable's cloud
    file_id: int | str
