"""Unit tests of the Nessus client: odd responses pinned with aioresponses, status mapping."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from nessus_pool.clock import FakeClock
from nessus_pool.errors import (
    ConfigError,
    ExportError,
    ExportTooLargeError,
    PermanentScannerError,
    RateLimitedError,
    RemoteNotFoundError,
    ScanApiUnavailableError,
    ScannerAuthError,
    ScannerError,
    ScannerTimeoutError,
    StorageError,
    TransientScannerError,
)
from nessus_pool.models import Escalation, ScanSpec, SshCredential
from nessus_pool.nessus import (
    KNOWN_STATUSES,
    NessusClient,
    RemotePhase,
    is_exportable,
    is_terminal,
    map_status,
)
from nessus_pool.nessus import status as status_module

T = TypeVar("T")
BASE = "https://nessus.test:8834"
ACCESS = "ak-0123456789abcdef"
SECRET = "sk-fedcba9876543210"
PASSWORD = "pw-very-secret-42"
TOKEN = "tok-abcdef-123456"
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "nessus-samples" / "api"
TEMPLATES = {
    "templates": [
        {"uuid": "uuid-basic", "name": "basic", "title": "Basic Network Scan"},
        {"uuid": "uuid-advanced", "name": "advanced", "title": "Advanced Scan"},
        {"uuid": "uuid-pci", "name": "asv", "title": "PCI Quarterly", "unsupported": True},
    ]
}
Calls = list[tuple[str, str, str, float]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def calls() -> Calls:
    return []


@pytest.fixture
async def client(clock: FakeClock, calls: Calls) -> AsyncIterator[NessusClient]:
    async with NessusClient(
        "lan-1",
        BASE,
        access_key=ACCESS,
        secret_key=SECRET,
        clock=clock,
        on_request=lambda *a: calls.append(a),
    ) as c:
        yield c


@pytest.fixture
async def session_client(clock: FakeClock) -> AsyncIterator[NessusClient]:
    async with NessusClient("lan-2", BASE, username="admin", password=PASSWORD, clock=clock) as c:
        yield c


class _StubStreamWriter:
    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates the ``stream_writer`` argument of aiohttp 3.14's
    ``ClientResponse``; supply a stub so mocked responses can be built."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _StubStreamWriter())
        super().__init__(method, url, **kwargs)


class _Mock(aioresponses):
    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _CompatResponse)
        super().add(url, method, *args, **kwargs)


@pytest.fixture
def mock() -> Iterator[Any]:
    with _Mock() as m:
        yield m


def url(path: str) -> str:
    return BASE + path


def sent(mock: Any, method: str, path: str, index: int = 0) -> dict[str, Any]:
    call = mock.requests[(method, URL(url(path)))][index]
    kwargs: dict[str, Any] = call.kwargs
    return kwargs


def sent_json(mock: Any, method: str, path: str, index: int = 0) -> Any:
    return json.loads(sent(mock, method, path, index)["data"])


async def with_clock(clock: FakeClock, aw: Awaitable[T], step_s: float = 0.5) -> T:
    """Run ``aw`` while moving the fake clock, so its ``clock.sleep`` calls return."""
    task = asyncio.ensure_future(aw)
    for _ in range(10_000):
        if task.done():
            break
        await clock.advance(step_s)
    return await task


def spec(**kw: Any) -> ScanSpec:
    base: dict[str, Any] = {
        "name": "nessus-pool-t1-a1",
        "targets": ["10.0.0.1", "10.0.0.0/30"],
        "description": "t1",
    }
    base.update(kw)
    return ScanSpec(**base)


# --- status mapping ------------------------------------------------------------------------

STATUS_TABLE = {
    "pending": RemotePhase.PENDING,
    "running": RemotePhase.RUNNING,
    "paused": RemotePhase.PAUSED,
    "pausing": RemotePhase.TRANSITIONING,
    "resuming": RemotePhase.TRANSITIONING,
    "stopping": RemotePhase.TRANSITIONING,
    "canceling": RemotePhase.TRANSITIONING,
    "processing": RemotePhase.TRANSITIONING,
    "completed": RemotePhase.COMPLETED,
    "canceled": RemotePhase.CANCELED,
    "stopped": RemotePhase.CANCELED,
    "aborted": RemotePhase.ABORTED,
    "imported": RemotePhase.IMPORTED,
    "empty": RemotePhase.EMPTY,
}
ENDED = {RemotePhase.COMPLETED, RemotePhase.CANCELED, RemotePhase.ABORTED, RemotePhase.IMPORTED}


@pytest.mark.parametrize(("raw", "phase"), sorted(STATUS_TABLE.items()))
def test_every_status_is_mapped_explicitly(raw: str, phase: RemotePhase) -> None:
    assert map_status(raw) is phase
    assert map_status(raw.upper()) is phase
    assert is_terminal(phase) == (phase in ENDED)
    assert is_exportable(phase) == (phase in ENDED)


def test_table_covers_known_statuses() -> None:
    assert set(STATUS_TABLE) == KNOWN_STATUSES


def test_paused_is_not_terminal_despite_its_suffix() -> None:
    assert not is_terminal(map_status("paused"))
    assert not is_terminal(map_status("processed"))


@given(st.text(max_size=30).filter(lambda s: s.strip().lower() not in KNOWN_STATUSES))
def test_unknown_statuses_are_unknown_and_never_terminal(raw: str) -> None:
    phase = map_status(raw)
    assert phase is RemotePhase.UNKNOWN
    assert not is_terminal(phase)
    assert not is_exportable(phase)


def test_unknown_status_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    status_module._logged_unknown.clear()  # the hypothesis test may have filled it
    with caplog.at_level(logging.WARNING, logger="nessus_pool.nessus"):
        map_status("frobnicating-xyz")
        map_status("frobnicating-xyz")
    events = [r for r in caplog.records if getattr(r, "event", None) == "unknown_scan_status"]
    assert len(events) == 1


# --- construction, headers, TLS --------------------------------------------------------------


def test_session_is_created_lazily_and_repr_has_no_secrets() -> None:
    c = NessusClient(
        "lan-1", "https://user:pw-in-url@nessus.test:8834", access_key=ACCESS, secret_key=SECRET
    )
    assert c._t._session is None
    for text in (repr(c), str(c)):
        assert ACCESS not in text and SECRET not in text and "pw-in-url" not in text
        assert "lan-1" in text


def test_credentials_required() -> None:
    with pytest.raises(ConfigError, match="access_key and secret_key"):
        NessusClient("lan-1", BASE, access_key=ACCESS)


async def test_api_keys_header_exact(client: NessusClient, mock: Any) -> None:
    mock.get(url("/scans"), payload={"scans": None, "folders": []})
    assert await client.list_scans() == []
    headers = sent(mock, "GET", "/scans")["headers"]
    assert headers["X-ApiKeys"] == f"accessKey={ACCESS}; secretKey={SECRET}"
    assert "X-API-Token" not in headers
    assert "X-Cookie" not in headers


def test_insecure_tls_logs_event(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nessus_pool.nessus"):
        NessusClient("dmz-1", BASE, access_key=ACCESS, secret_key=SECRET, verify_tls=False)
    [rec] = [r for r in caplog.records if getattr(r, "event", None) == "tls_verification_disabled"]
    assert getattr(rec, "scanner", None) == "dmz-1"


async def test_missing_ca_file_is_permanent(tmp_path: Path) -> None:
    async with NessusClient(
        "lan-1", BASE, access_key=ACCESS, secret_key=SECRET, ca_file=str(tmp_path / "nope.pem")
    ) as c:
        with pytest.raises(PermanentScannerError, match="CA file"):
            await c.list_scans()


# --- session auth ----------------------------------------------------------------------------


async def test_session_login_and_relogin_once(session_client: NessusClient, mock: Any) -> None:
    mock.post(url("/session"), payload={"token": TOKEN})
    mock.post(url("/session"), payload={"token": TOKEN + "-2"})
    mock.get(url("/scans/7"), payload={"info": {"status": "running", "name": "x"}})
    mock.get(url("/scans/7"), status=401, payload={"error": "Invalid Credentials"})
    mock.get(url("/scans/7"), payload={"info": {"status": "completed", "name": "x"}})
    assert (await session_client.scan_details(7)).phase is RemotePhase.RUNNING
    # the session expired in between: one re-login, then the call is repeated
    assert (await session_client.scan_details(7)).phase is RemotePhase.COMPLETED
    assert sent_json(mock, "POST", "/session") == {"username": "admin", "password": PASSWORD}
    assert len(mock.requests[("POST", URL(url("/session")))]) == 2
    headers = [c.kwargs["headers"] for c in mock.requests[("GET", URL(url("/scans/7")))]]
    assert [h["X-Cookie"] for h in headers] == [
        f"token={TOKEN}",
        f"token={TOKEN}",
        f"token={TOKEN}-2",
    ]
    assert all("X-API-Token" not in h and "X-ApiKeys" not in h for h in headers)


async def test_concurrent_401s_log_in_again_once(session_client: NessusClient, mock: Any) -> None:
    def scans(_: URL, **kwargs: Any) -> CallbackResult:
        if kwargs["headers"]["X-Cookie"] == f"token={TOKEN}":
            return CallbackResult(
                status=401, payload={"error": "expired"}, response_class=_CompatResponse
            )
        return CallbackResult(payload={"scans": []}, response_class=_CompatResponse)

    mock.post(url("/session"), payload={"token": TOKEN})
    mock.post(url("/session"), payload={"token": TOKEN + "-2"})
    mock.get(url("/scans"), callback=scans, repeat=True)
    first, second = await asyncio.gather(session_client.list_scans(), session_client.list_scans())
    assert first == second == []
    # at least one call saw the expired token; still only one re-login
    assert len(mock.requests[("POST", URL(url("/session")))]) == 2
    assert len(mock.requests[("GET", URL(url("/scans")))]) >= 3


async def test_session_401_after_relogin_is_auth_error(
    session_client: NessusClient, mock: Any
) -> None:
    mock.post(url("/session"), payload={"token": TOKEN}, repeat=True)
    mock.get(url("/scans/7"), status=401, payload={"error": "Invalid Credentials"}, repeat=True)
    with pytest.raises(ScannerAuthError) as info:
        await session_client.scan_details(7)
    assert not info.value.transient
    assert info.value.status == 401 and info.value.endpoint == "GET /scans/{id}"
    assert len(mock.requests[("GET", URL(url("/scans/7")))]) == 2


async def test_bad_password_is_auth_error_without_secret(
    session_client: NessusClient, mock: Any
) -> None:
    mock.post(
        url("/session"),
        status=401,
        payload={"error": f"Invalid Credentials for password {PASSWORD}"},
    )
    with pytest.raises(ScannerAuthError) as info:
        await session_client.list_scans()
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)
    assert info.value.endpoint == "POST /session"


async def test_api_keys_401_is_auth_error_at_once(client: NessusClient, mock: Any) -> None:
    mock.get(url("/scans"), status=401, body=f'{{"error": "bad key {SECRET}"}}')
    with pytest.raises(ScannerAuthError) as info:
        await client.list_scans()
    assert SECRET not in str(info.value) and ACCESS not in str(info.value)
    assert SECRET not in repr(info.value.fields)


# --- error mapping ---------------------------------------------------------------------------


async def test_5xx_is_transient_with_fields(client: NessusClient, mock: Any, calls: Calls) -> None:
    mock.get(url("/scans/3"), status=503, body="<html>busy</html>")
    with pytest.raises(TransientScannerError) as info:
        await client.scan_details(3)
    err = info.value
    assert err.transient and err.status == 503
    assert err.scanner_id == "lan-1" and err.endpoint == "GET /scans/{id}"
    assert calls == [("lan-1", "GET /scans/{id}", "http_5xx", 0.0)]


async def test_malformed_json_is_transient(client: NessusClient, mock: Any) -> None:
    mock.get(url("/scans/3"), status=502, body="{not json")
    mock.get(url("/scans/3"), status=200, body='{"info": {"status": "runn')
    with pytest.raises(TransientScannerError):
        await client.scan_details(3)
    with pytest.raises(TransientScannerError, match="malformed JSON"):
        await client.scan_details(3)


async def test_404_is_remote_not_found(client: NessusClient, mock: Any) -> None:
    mock.post(
        url("/scans/99/stop"), status=404, payload={"error": "The requested file was not found"}
    )
    with pytest.raises(RemoteNotFoundError) as info:
        await client.stop_scan(99)
    assert not info.value.transient
    assert info.value.endpoint == "POST /scans/{id}/stop" and info.value.status == 404


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (302, PermanentScannerError),
        (400, PermanentScannerError),
        (403, ScannerAuthError),
        (409, PermanentScannerError),
        (412, ScanApiUnavailableError),
        (408, ScannerTimeoutError),
        (500, TransientScannerError),
    ],
)
async def test_status_codes(
    client: NessusClient, mock: Any, status: int, error_type: type[ScannerError]
) -> None:
    mock.post(url("/scans/5/pause"), status=status, payload={"error": "nope"})
    with pytest.raises(error_type) as info:
        await client.pause_scan(5)
    assert type(info.value) is error_type
    assert info.value.transient == (status in (408, 500))


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0), ("soon", None), (None, None)],
)
async def test_429_retry_after(
    client: NessusClient, mock: Any, header: str | None, expected: float | None
) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    mock.get(url("/scans"), status=429, headers=headers, payload={"error": "slow down"})
    with pytest.raises(RateLimitedError) as info:
        await client.list_scans()
    assert info.value.transient and info.value.retry_after_s == expected


async def test_timeout_and_connect_errors(client: NessusClient, mock: Any, calls: Calls) -> None:
    mock.get(url("/scans"), timeout=True)
    mock.get(url("/scans"), exception=aiohttp.ClientConnectionError("refused"))
    mock.get(url("/scans"), exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(ScannerTimeoutError) as info:
        await client.list_scans()
    assert isinstance(info.value, TimeoutError) and info.value.transient
    with pytest.raises(TransientScannerError):
        await client.list_scans()
    with pytest.raises(TransientScannerError, match="dropped the connection"):
        await client.list_scans()
    assert [c[2] for c in calls] == ["timeout", "connect_error", "disconnected"]


async def test_412_then_dropped_connection_on_create(client: NessusClient, mock: Any) -> None:
    mock.get(url("/editor/scan/templates"), payload=TEMPLATES)
    mock.post(url("/scans"), status=412, payload={"error": "API is not available"})
    mock.post(url("/scans"), exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(ScanApiUnavailableError) as info:
        await client.create_scan(spec())
    assert not info.value.transient and info.value.status == 412
    assert "API is not available" in str(info.value)
    # Nessus Professional often just drops the connection after that: still not transient
    with pytest.raises(ScanApiUnavailableError) as info2:
        await client.create_scan(spec())
    assert not info2.value.transient


async def test_dropped_connection_on_create_is_transient_by_default(
    client: NessusClient, mock: Any
) -> None:
    mock.get(url("/editor/scan/templates"), payload=TEMPLATES)
    mock.post(url("/scans"), exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(TransientScannerError) as info:
        await client.create_scan(spec())
    assert not isinstance(info.value, ScanApiUnavailableError)


async def test_metrics_hook_failure_does_not_break_calls(clock: FakeClock, mock: Any) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("metrics down")

    mock.get(url("/scans"), payload={"scans": []})
    async with NessusClient(
        "lan-1", BASE, access_key=ACCESS, secret_key=SECRET, clock=clock, on_request=boom
    ) as c:
        assert await c.list_scans() == []


# --- capability probe ------------------------------------------------------------------------


async def test_probe_ready_with_scan_api(client: NessusClient, mock: Any) -> None:
    mock.get(url("/server/status"), payload={"code": 200, "progress": None, "status": "ready"})
    mock.get(
        url("/server/properties"),
        payload={
            "nessus_type": "Nessus Manager",
            "server_version": "10.8.3",
            "license": {"type": "manager", "features": {"scan_api": True}},
        },
    )
    cap = await client.probe()
    assert cap.reachable and cap.ready and cap.scan_api and not cap.export_only
    assert cap.version == "10.8.3" and cap.nessus_type == "Nessus Manager"
    assert "X-ApiKeys" not in sent(mock, "GET", "/server/status")["headers"]


async def test_probe_export_only(client: NessusClient, mock: Any) -> None:
    mock.get(url("/server/status"), payload={"status": "ready"})
    mock.get(
        url("/server/properties"),
        payload={
            "nessus_type": "Nessus Professional",
            "server_version": "10.8.3",
            "license": {"type": "pro", "features": {"scan_api": False, "api": True}},
        },
    )
    cap = await client.probe()
    assert cap.reachable and cap.ready and not cap.scan_api and cap.export_only
    assert cap.message == (
        "Nessus Professional 10.8.3: the licence does not allow scan "
        "creation through the API (export-only)"
    )


async def test_properties_without_features_infer_from_product(
    client: NessusClient, mock: Any
) -> None:
    mock.get(url("/server/properties"), payload={"nessus_type": "Nessus Essentials"})
    mock.get(url("/server/properties"), payload={"nessus_type": "Nessus Manager"})
    assert not (await client.server_properties()).scan_api
    assert (await client.server_properties()).scan_api


async def test_probe_not_ready_and_unreachable(client: NessusClient, mock: Any) -> None:
    mock.get(url("/server/status"), payload={"status": "loading", "progress": 40})
    mock.get(url("/server/status"), status=503, body="<html>starting</html>")
    mock.get(url("/server/status"), exception=aiohttp.ClientConnectionError("refused"))
    cap = await client.probe()
    assert cap.reachable and not cap.ready and "loading (40%)" in cap.message
    cap = await client.probe()
    assert cap.reachable and not cap.ready
    cap = await client.probe()
    assert not cap.reachable and "unreachable" in cap.message


async def test_probe_raises_on_bad_credentials(client: NessusClient, mock: Any) -> None:
    mock.get(url("/server/status"), payload={"status": "ready"})
    mock.get(url("/server/properties"), status=401, payload={"error": "Invalid Credentials"})
    with pytest.raises(ScannerAuthError):
        await client.probe()


# --- templates and scans ---------------------------------------------------------------------


async def test_templates_by_name_cached(client: NessusClient, mock: Any) -> None:
    mock.get(url("/editor/scan/templates"), payload=TEMPLATES)
    assert await client.template_uuid("basic") == "uuid-basic"
    assert await client.template_uuid("Advanced Scan") == "uuid-advanced"
    with pytest.raises(PermanentScannerError, match="available: advanced, asv, basic"):
        await client.template_uuid("nope")
    with pytest.raises(PermanentScannerError, match="licence"):
        await client.template_uuid("asv")
    assert len(mock.requests[("GET", URL(url("/editor/scan/templates")))]) == 1


async def test_create_scan_body_with_password(client: NessusClient, mock: Any) -> None:
    mock.get(url("/editor/scan/templates"), payload=TEMPLATES)
    mock.post(
        url("/scans"),
        payload={"scan": {"id": 42, "uuid": "template-x", "name": "nessus-pool-t1-a1"}},
    )
    cred = SshCredential(
        username="audit",
        password="ssh-pw-1",
        escalation_account="root",
        elevate_privileges_with=Escalation.SUDO,
        escalation_password="sudo-pw-1",
    )
    remote = await client.create_scan(spec(folder_id=3, credential=cred))
    assert (remote.id, remote.uuid, remote.name) == (42, "template-x", "nessus-pool-t1-a1")
    assert sent_json(mock, "POST", "/scans") == {
        "uuid": "uuid-basic",
        "settings": {
            "name": "nessus-pool-t1-a1",
            "text_targets": "10.0.0.1,10.0.0.0/30",
            "description": "t1",
            "enabled": False,
            "launch_now": False,
            "folder_id": 3,
        },
        "credentials": {
            "add": {
                "Host": {
                    "SSH": [
                        {
                            "auth_method": "password",
                            "username": "audit",
                            "password": "ssh-pw-1",
                            "elevate_privileges_with": "sudo",
                            "escalation_account": "root",
                            "escalation_password": "sudo-pw-1",
                        }
                    ]
                }
            }
        },
    }


async def test_create_scan_with_private_key_uploads_it(client: NessusClient, mock: Any) -> None:
    mock.get(url("/editor/scan/templates"), payload=TEMPLATES)
    mock.post(url("/file/upload"), payload={"fileuploaded": "key-123.key"})
    mock.post(url("/scans"), payload={"scan": {"id": 43, "name": "n"}})
    cred = SshCredential(
        username="audit", private_key="-----BEGIN KEY-----", private_key_passphrase="pp-1"
    )
    await client.create_scan(spec(credential=cred, remote_scanner_id=9, template="advanced"))
    body = sent_json(mock, "POST", "/scans")
    assert body["uuid"] == "uuid-advanced" and body["settings"]["scanner_id"] == 9
    assert body["credentials"]["add"]["Host"]["SSH"] == [
        {
            "auth_method": "public key",
            "username": "audit",
            "private_key": "key-123.key",
            "private_key_passphrase": "pp-1",
            "elevate_privileges_with": "Nothing",
        }
    ]
    assert isinstance(sent(mock, "POST", "/file/upload")["data"], aiohttp.FormData)


async def test_create_scan_error_does_not_echo_ssh_secrets(client: NessusClient, mock: Any) -> None:
    mock.get(url("/editor/scan/templates"), payload=TEMPLATES)
    mock.post(url("/scans"), status=400, payload={"error": "bad value ssh-pw-1"})
    with pytest.raises(PermanentScannerError) as info:
        await client.create_scan(spec(credential=SshCredential(username="a", password="ssh-pw-1")))
    assert "ssh-pw-1" not in str(info.value)


async def test_launch_and_controls(client: NessusClient, mock: Any) -> None:
    mock.post(url("/scans/5/launch"), payload={"scan_uuid": "run-uuid-1"})
    for action in ("stop", "pause", "resume", "kill"):
        mock.post(url(f"/scans/5/{action}"), status=200, body="")
    mock.delete(url("/scans/5"), status=200, body="")
    assert await client.launch_scan(5) == "run-uuid-1"
    await client.stop_scan(5)
    await client.pause_scan(5)
    await client.resume_scan(5)
    await client.kill_scan(5)
    await client.delete_scan(5)
    assert ("DELETE", URL(url("/scans/5"))) in mock.requests


async def test_scan_details_progress(client: NessusClient, mock: Any) -> None:
    mock.get(
        url("/scans/8"),
        payload={
            "info": {"name": "s", "uuid": "u-8", "status": "running", "scan_start": 1700000000},
            "hosts": [
                {
                    "hostname": "10.0.0.1",
                    "scanprogresscurrent": 50,
                    "scanprogresstotal": 100,
                    "critical": 1,
                    "high": 2,
                    "medium": 3,
                    "low": 4,
                    "info": 5,
                },
                {"hostname": "10.0.0.2", "scanprogresscurrent": 100, "scanprogresstotal": 100},
                {"hostname": "10.0.0.3", "scanprogresscurrent": 0, "scanprogresstotal": 0},
            ],
        },
    )
    mock.get(url("/scans/9"), payload={"info": {"name": "s", "status": "empty"}, "hosts": None})
    d = await client.scan_details(8)
    assert d.phase is RemotePhase.RUNNING and d.progress_pct == 75
    assert [h.progress_pct for h in d.hosts] == [50, 100, None]
    assert (d.hosts[0].critical, d.hosts[0].info) == (1, 5)
    assert d.scan_start == 1700000000 and d.scan_end is None
    d = await client.scan_details(9)
    assert d.phase is RemotePhase.EMPTY and d.progress_pct is None and d.hosts == []


@pytest.mark.parametrize(
    ("sample", "phase"),
    [
        ("tenable_io__GET_scans_175__completed.json", RemotePhase.COMPLETED),
        ("tenable_io__GET_scans_id__imported.json", RemotePhase.IMPORTED),
    ],
)
async def test_scan_details_recorded_samples(
    client: NessusClient, mock: Any, sample: str, phase: RemotePhase
) -> None:
    path = SAMPLES / sample
    if not path.exists():
        pytest.skip("shared nessus-samples not available")
    # compact: aioresponses' stream reader cannot take more than 128 KiB at once
    body = json.dumps(json.loads(path.read_bytes()), separators=(",", ":"))
    mock.get(url("/scans/175"), body=body)
    d = await client.scan_details(175)
    assert d.phase is phase and is_terminal(d.phase)
    if phase is RemotePhase.COMPLETED:
        assert d.progress_pct == 100 and d.hosts[0].hostname == "162.159.129.83"


async def test_find_scans_by_name_newest_first(client: NessusClient, mock: Any) -> None:
    mock.get(
        url("/scans"),
        payload={
            "folders": [],
            "scans": [
                {"id": 1, "name": "job", "status": "completed", "last_modification_date": 100},
                {"id": 2, "name": "other", "status": "running", "last_modification_date": 300},
                {"id": 3, "name": "job", "status": "empty", "last_modification_date": 200},
                {"id": 4, "name": "Job", "status": "empty", "last_modification_date": 400},
            ],
        },
    )
    found = await client.find_scans_by_name("job")
    assert [s.id for s in found] == [3, 1]
    assert found[0].phase is RemotePhase.EMPTY


# --- export ----------------------------------------------------------------------------------

EXPORT_BODY = b"<?xml version='1.0'?><NessusClientData_v2/>" * 100


def mock_export(
    mock: Any,
    scan_id: int = 5,
    file_id: int | str = 77,
    statuses: tuple[str, ...] = ("ready",),
    body: bytes = EXPORT_BODY,
) -> None:
    mock.post(url(f"/scans/{scan_id}/export"), payload={"file": file_id, "token": "t"})
    for status in statuses:
        mock.get(url(f"/scans/{scan_id}/export/{file_id}/status"), payload={"status": status})
    mock.get(url(f"/scans/{scan_id}/export/{file_id}/download"), body=body)


async def test_export_loading_then_ready(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock_export(mock, statuses=("loading", "loading", "ready"))
    dest = tmp_path / "out" / "t1.nessus"
    res = await with_clock(clock, client.export_scan(5, dest, poll_interval_s=2.0))
    assert dest.read_bytes() == EXPORT_BODY
    assert res.sha256 == hashlib.sha256(EXPORT_BODY).hexdigest()
    assert res.size_bytes == len(EXPORT_BODY) and res.file_id == 77 and res.path == str(dest)
    assert not dest.with_suffix(".part").exists()
    assert clock.monotonic_s() >= 4.0  # slept twice on the injected clock
    assert sent_json(mock, "POST", "/scans/5/export") == {"format": "nessus"}


async def test_export_http_200_without_ready_is_not_ready(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock.post(url("/scans/5/export"), payload={"file": 77})
    mock.get(url("/scans/5/export/77/status"), status=200, body="")
    mock.get(url("/scans/5/export/77/status"), payload={})
    mock.get(url("/scans/5/export/77/status"), payload={"status": "ready"})
    mock.get(url("/scans/5/export/77/download"), body=EXPORT_BODY)
    await with_clock(clock, client.export_scan(5, tmp_path / "x.nessus"))
    assert len(mock.requests[("GET", URL(url("/scans/5/export/77/status")))]) == 3


async def test_export_cloud_string_file_id(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    fid = "SSE-d84bc6a3-nessus"
    mock_export(mock, file_id=fid)
    res = await with_clock(clock, client.export_scan(5, tmp_path / "x.nessus"))
    assert res.file_id == fid


async def test_export_error_status(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock_export(mock, statuses=("loading", "error"))
    with pytest.raises(ExportError, match="failed to generate") as info:
        await with_clock(clock, client.export_scan(5, tmp_path / "x.nessus"))
    assert info.value.transient


async def test_export_running_scan_409(client: NessusClient, mock: Any, tmp_path: Path) -> None:
    mock.post(url("/scans/5/export"), status=409, payload={"error": "Can not export running scans"})
    with pytest.raises(ExportError, match="still running") as info:
        await client.export_scan(5, tmp_path / "x.nessus")
    assert info.value.transient and info.value.status == 409


async def test_export_deadline(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock.post(url("/scans/5/export"), payload={"file": 77})
    mock.get(url("/scans/5/export/77/status"), payload={"status": "loading"}, repeat=True)
    with pytest.raises(ExportError, match="within its 10s deadline"):
        await with_clock(
            clock,
            client.export_scan(5, tmp_path / "x.nessus", deadline_s=10.0, poll_interval_s=1.0),
        )
    assert 10.0 <= clock.monotonic_s() < 12.0


async def test_export_retried_by_the_caller_keeps_one_deadline(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    """The engine retries a failed export; with ``deadline_at_s`` the retry does not get a
    fresh deadline (it took twice the deadline when each attempt started its own)."""
    mock.post(url("/scans/5/export"), payload={"file": 77}, repeat=True)
    mock.get(url("/scans/5/export/77/status"), payload={"status": "loading"}, repeat=True)
    at_s = clock.monotonic_s() + 10.0
    for _ in range(3):
        with pytest.raises(ExportError, match="deadline"):
            await with_clock(
                clock,
                client.export_scan(5, tmp_path / "x.nessus", deadline_s=10.0, deadline_at_s=at_s),
            )
    assert 10.0 <= clock.monotonic_s() < 12.0


async def test_export_expired_is_asked_again(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock.post(url("/scans/5/export"), payload={"file": 77})
    mock.get(url("/scans/5/export/77/status"), payload={"status": "ready"})
    mock.get(url("/scans/5/export/77/download"), status=404, payload={"error": "not found"})
    mock_export(mock, file_id=78)
    res = await with_clock(clock, client.export_scan(5, tmp_path / "x.nessus"))
    assert res.file_id == 78


async def test_export_expired_repeatedly_fails(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock.post(url("/scans/5/export"), payload={"file": 77}, repeat=True)
    mock.get(url("/scans/5/export/77/status"), status=404, payload={"error": "gone"}, repeat=True)
    with pytest.raises(ExportError, match="expired") as info:
        await with_clock(clock, client.export_scan(5, tmp_path / "x.nessus"))
    assert info.value.status == 404
    assert len(mock.requests[("POST", URL(url("/scans/5/export")))]) == 3


async def test_export_of_missing_scan_is_not_found(
    client: NessusClient, mock: Any, tmp_path: Path
) -> None:
    mock.post(url("/scans/5/export"), status=404, payload={"error": "not found"})
    with pytest.raises(RemoteNotFoundError):
        await client.export_scan(5, tmp_path / "x.nessus")


async def test_export_too_large(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock_export(mock)
    dest = tmp_path / "x.nessus"
    with pytest.raises(ExportTooLargeError) as info:
        await with_clock(clock, client.export_scan(5, dest, max_bytes=100))
    assert not info.value.transient
    assert not dest.exists() and not dest.with_suffix(".part").exists()


async def test_export_dropped_during_download(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock.post(url("/scans/5/export"), payload={"file": 77})
    mock.get(url("/scans/5/export/77/status"), payload={"status": "ready"})
    mock.get(url("/scans/5/export/77/download"), exception=aiohttp.ServerDisconnectedError())
    dest = tmp_path / "x.nessus"
    with pytest.raises(TransientScannerError):
        await with_clock(clock, client.export_scan(5, dest))
    assert not dest.with_suffix(".part").exists()


async def test_export_unwritable_destination(
    client: NessusClient, mock: Any, clock: FakeClock, tmp_path: Path
) -> None:
    mock_export(mock)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError):
        await with_clock(clock, client.export_scan(5, blocker / "sub" / "x.nessus"))


# --- secrets ---------------------------------------------------------------------------------


async def test_no_secret_in_logs(
    session_client: NessusClient, mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post(url("/session"), payload={"token": TOKEN}, repeat=True)
    mock.get(url("/scans"), status=401, payload={"error": "expired"})
    mock.get(url("/scans"), payload={"scans": []})
    with caplog.at_level(logging.DEBUG):
        await session_client.list_scans()
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "scanner_session_expired" in text
    for secret in (PASSWORD, TOKEN):
        assert secret not in text
