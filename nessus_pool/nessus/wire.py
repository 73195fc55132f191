"""The shapes of Nessus answers we read, and the scan-creation body we send.

Decoding is lenient on purpose (unknown fields ignored, every field optional, ``"12"`` read as
12): Nessus versions differ, and Tenable's cloud answers some calls with other types.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from nessus_pool.errors import ValidationError
from nessus_pool.models import Escalation, ScanSpec, SshCredential
from nessus_pool.nessus.status import RemotePhase, map_status
from nessus_pool.nessus.types import HostProgress, ScanDetails, ServerProperties

#: product names whose licence has no scan API, used only when properties do not say
_RESTRICTED_PRODUCTS = ("professional", "expert", "essentials", "home")


class WireServerStatus(msgspec.Struct):
    status: str = "unknown"
    progress: int | None = None


class WireFeatures(msgspec.Struct):
    scan_api: bool | None = None


class WireLicense(msgspec.Struct):
    type: str | None = None
    name: str | None = None
    features: WireFeatures | None = None


class WireServerProperties(msgspec.Struct):
    nessus_type: str | None = None
    server_version: str | None = None
    nessus_ui_version: str | None = None
    license: WireLicense | None = None
    features: WireFeatures | None = None


class WireTemplate(msgspec.Struct):
    uuid: str
    name: str = ""
    title: str | None = None
    unsupported: bool | None = None


class WireTemplates(msgspec.Struct):
    templates: list[WireTemplate] | None = None


class WirePolicy(msgspec.Struct):
    id: int
    name: str
    template_uuid: str
    description: str | None = None


class WirePolicies(msgspec.Struct):
    policies: list[WirePolicy] | None = None


class WireScanRef(msgspec.Struct):
    id: int
    uuid: str | None = None
    name: str = ""


class WireCreated(msgspec.Struct):
    scan: WireScanRef


class WireLaunched(msgspec.Struct):
    scan_uuid: str


class WireUploaded(msgspec.Struct):
    fileuploaded: str


class WireInfo(msgspec.Struct):
    name: str = ""
    uuid: str | None = None
    status: str = ""
    scan_start: int | None = None
    scan_end: int | None = None
    #: some versions report an overall percentage here; used only when no host has any
    progress: int | None = None


class WireHost(msgspec.Struct):
    hostname: str = ""
    scanprogresscurrent: int | None = None
    scanprogresstotal: int | None = None
    critical: int | None = 0
    high: int | None = 0
    medium: int | None = 0
    low: int | None = 0
    info: int | None = 0


class WireDetails(msgspec.Struct):
    info: WireInfo
    hosts: list[WireHost] | None = None


class WireScanRow(msgspec.Struct):
    id: int
    name: str = ""
    uuid: str | None = None
    status: str = ""
    folder_id: int | None = None
    last_modification_date: int | None = None
    creation_date: int | None = None


class WireScanList(msgspec.Struct):
    #: ``null`` when there are no scans
    scans: list[WireScanRow] | None = None


T = TypeVar("T")


def convert(obj: Any, type_: type[T]) -> T:
    """Lenient conversion of decoded JSON into one of the shapes above."""
    return msgspec.convert(obj, type=type_, strict=False)


def server_properties(w: WireServerProperties) -> ServerProperties:
    """``scan_api`` from ``license.features`` (or top-level ``features``); when neither says,
    from the product name."""
    scan_api = None
    for features in (w.license.features if w.license else None, w.features):
        if features is not None and features.scan_api is not None:
            scan_api = features.scan_api
            break
    if scan_api is None:
        product = (w.nessus_type or "").lower()
        scan_api = not any(p in product for p in _RESTRICTED_PRODUCTS)
    return ServerProperties(
        version=w.server_version or w.nessus_ui_version,
        nessus_type=w.nessus_type,
        license_type=w.license.type if w.license else None,
        scan_api=scan_api,
    )


def scan_details(scan_id: int, w: WireDetails) -> ScanDetails:
    """Progress is the mean over the hosts listed so far (Nessus adds hosts as it reaches
    them), 100 once completed, else ``info.progress`` if given, else None."""
    phase = map_status(w.info.status)
    hosts = [_host(h) for h in w.hosts or []]
    known = [h.progress_pct for h in hosts if h.progress_pct is not None]
    progress: int | None
    if phase is RemotePhase.COMPLETED:
        progress = 100
    elif known:
        progress = sum(known) // len(known)
    elif w.info.progress is not None:
        progress = _clamp_pct(w.info.progress)
    else:
        progress = None
    return ScanDetails(
        id=scan_id,
        name=w.info.name,
        uuid=w.info.uuid,
        raw_status=w.info.status,
        phase=phase,
        progress_pct=progress,
        hosts=hosts,
        scan_start=w.info.scan_start,
        scan_end=w.info.scan_end,
    )


def _clamp_pct(value: float) -> int:
    return max(0, min(100, round(value)))


def _host(h: WireHost) -> HostProgress:
    pct = None
    if h.scanprogresstotal and h.scanprogresscurrent is not None:
        pct = _clamp_pct(100 * h.scanprogresscurrent / h.scanprogresstotal)
    return HostProgress(
        hostname=h.hostname,
        progress_pct=pct,
        critical=h.critical or 0,
        high=h.high or 0,
        medium=h.medium or 0,
        low=h.low or 0,
        info=h.info or 0,
    )


# --- scan creation ---------------------------------------------------------------------


def create_body(
    spec: ScanSpec,
    template_uuid: str,
    private_key_file: str | None,
    policy_id: int | None = None,
) -> dict[str, Any]:
    """The ``POST /scans`` body. ``private_key_file`` is the name ``POST /file/upload``
    returned for the credential's private key (Nessus takes key files by upload only). From a
    saved policy: that policy's ``template_uuid`` and ``settings.policy_id``."""
    settings: dict[str, Any] = {
        "name": spec.name,
        "text_targets": ",".join(spec.targets),
        "description": spec.description,
        "enabled": False,
        "launch_now": False,
    }
    if spec.folder_id is not None:
        settings["folder_id"] = spec.folder_id
    if spec.remote_scanner_id is not None:
        settings["scanner_id"] = spec.remote_scanner_id
    if policy_id is not None:
        settings["policy_id"] = policy_id
    body: dict[str, Any] = {"uuid": template_uuid, "settings": settings}
    if spec.credential is not None:
        ssh = ssh_credential(spec.credential, private_key_file)
        body["credentials"] = {"add": {"Host": {"SSH": [ssh]}}}
    return body


def ssh_credential(cred: SshCredential, private_key_file: str | None) -> dict[str, Any]:
    """One entry of ``credentials.add.Host.SSH``, with Nessus' own field names."""
    ssh: dict[str, Any]
    if cred.private_key is not None:
        if private_key_file is None:
            raise ValueError("upload the private key first")
        ssh = {
            "auth_method": "public key",
            "username": cred.username,
            "private_key": private_key_file,
        }
        if cred.private_key_passphrase:
            ssh["private_key_passphrase"] = cred.private_key_passphrase
    elif cred.password is not None:
        ssh = {"auth_method": "password", "username": cred.username, "password": cred.password}
    else:
        raise ValidationError(
            "an SSH credential needs a password or a private key", field="credential"
        )
    ssh["elevate_privileges_with"] = cred.elevate_privileges_with.value
    if cred.elevate_privileges_with is not Escalation.NOTHING:
        if cred.escalation_account:
            ssh["escalation_account"] = cred.escalation_account
        if cred.escalation_password:
            ssh["escalation_password"] = cred.escalation_password
    return ssh


def credential_secrets(cred: SshCredential | None) -> list[str]:
    """The strings that must never come back in an error message."""
    if cred is None:
        return []
    values = (
        cred.password,
        cred.private_key,
        cred.private_key_passphrase,
        cred.escalation_password,
    )
    return [v for v in values if v]
