"""The Nessus REST client: on-premises Nessus and Nessus Manager, the official API only."""

from nessus_pool.nessus.client import NessusClient
from nessus_pool.nessus.status import (
    KNOWN_STATUSES,
    RemotePhase,
    is_exportable,
    is_terminal,
    map_status,
)
from nessus_pool.nessus.transport import OnRequest
from nessus_pool.nessus.types import (
    Capability,
    ExportResult,
    HostProgress,
    RemotePolicy,
    RemoteScan,
    RemoteScanSummary,
    ScanDetails,
    ServerProperties,
    ServerStatus,
)

__all__ = [
    "KNOWN_STATUSES",
    "Capability",
    "ExportResult",
    "HostProgress",
    "NessusClient",
    "OnRequest",
    "RemotePhase",
    "RemotePolicy",
    "RemoteScan",
    "RemoteScanSummary",
    "ScanDetails",
    "ServerProperties",
    "ServerStatus",
    "is_exportable",
    "is_terminal",
    "map_status",
]
