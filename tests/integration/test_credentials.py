"""Credentials: named sets resolved at use, inline ones kept in memory only and never
written anywhere; lost inline credentials fail the task with a reason that says so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nessus_pool.config import load_config
from nessus_pool.daemon import Daemon
from nessus_pool.errors import ValidationError
from nessus_pool.models import ScanType
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config, write_config

CANARY = "canary-Pw-7f3a9c"


async def test_named_credential_and_inline_never_reach_disk_or_logs(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("NP_LAB_PW", "audit")
    d: Daemon = await start_daemon(
        sim_config(
            tmp_path,
            scan_seconds=0.2,
            credentials={"lab": {"username": "audit", "password": {"env": "NP_LAB_PW"}}},
        )
    )
    assert d.service is not None
    caplog.set_level(logging.DEBUG, logger="nessus_pool")
    named = await d.service.submit(
        SubmitRequest(targets="10.5.0.1", scan_type=ScanType.AUTHENTICATED, credential="lab")
    )
    inline = await d.service.submit(
        SubmitRequest(
            targets="10.5.0.2",
            scan_type=ScanType.AUTHENTICATED,
            ssh_username="audit",
            ssh_password=CANARY,
        )
    )
    v1 = await d.service.wait_for(named.task_id, 30)
    v2 = await d.service.wait_for(inline.task_id, 30)
    assert (v1.status, v1.authentication_status) == ("completed", "success")
    assert (v2.status, v2.reason) == ("failed", "authentication_failed")
    assert v2.credential == "(inline)"
    storage = Path(d.config.storage.path)
    for f in storage.rglob("*"):
        if f.is_file():
            assert CANARY.encode() not in f.read_bytes(), f
    assert CANARY not in caplog.text
    assert CANARY not in repr(v2)


async def test_unknown_credential_and_disabled_inline_are_refused(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(
        sim_config(tmp_path, security={"allow-inline-credentials": False})
    )
    assert d.service is not None
    with pytest.raises(ValidationError, match="not configured") as e1:
        await d.service.submit(
            SubmitRequest(targets="10.0.0.1", scan_type=ScanType.AUTHENTICATED, credential="nope")
        )
    assert e1.value.field == "credential"
    with pytest.raises(ValidationError, match="disabled by configuration"):
        await d.service.submit(
            SubmitRequest(
                targets="10.0.0.1",
                scan_type=ScanType.AUTHENTICATED,
                ssh_username="a",
                ssh_password="b",
            )
        )
    with pytest.raises(ValidationError, match="untrusted scan"):
        await d.service.submit(SubmitRequest(targets="10.0.0.1", credential="x"))


async def test_inline_credentials_lost_in_restart_fail_with_reason(tmp_path: Path) -> None:
    data = sim_config(tmp_path, scan_seconds=0.2)
    path = write_config(tmp_path / "np.toml", data)
    d1 = Daemon(load_config(path), config_path=str(path))
    await d1.start()
    assert d1.service is not None
    d1.service.set_scanner_enabled("sim-1", False)
    d1.service.set_scanner_enabled("sim-2", False)
    sub = await d1.service.submit(
        SubmitRequest(
            targets="10.5.0.3",
            scan_type=ScanType.AUTHENTICATED,
            ssh_username="audit",
            ssh_password="audit",
        )
    )
    await d1.stop()
    d2 = Daemon(load_config(path), config_path=str(path))
    await d2.start()
    try:
        assert d2.service is not None
        view = await d2.service.wait_for(sub.task_id, 30)
    finally:
        await d2.stop()
    assert (view.status, view.reason) == ("failed", "inline_credentials_lost")
    assert "submit the scan again" in (view.error or "")
