"""The files in examples/ stay true to the code: the production config validates and every
secret it references resolves the way systemd provides it; the unit file loads those secrets;
alert rules and the dashboard only query metrics a live daemon exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nessus_pool.config import Config, SecretSource, parse_config, resolve_secret
from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory, sim_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROD_TOML = EXAMPLES / "nessus-pool.prod.toml"
SERVICE = EXAMPLES / "nessus-pool.service"
ALERTS = EXAMPLES / "alerts.yml"
DASHBOARD = EXAMPLES / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bnessus_pool_[a-z0-9_]+\b")

#: what the dashboard must show (the issue's list)
DASHBOARD_METRICS = {
    "nessus_pool_scanner_active_scans", "nessus_pool_scanner_capacity", "nessus_pool_scanner_up",
    "nessus_pool_scanner_requests_total", "nessus_pool_scanner_request_duration_seconds_bucket",
    "nessus_pool_queue_depth", "nessus_pool_dlq_depth", "nessus_pool_oldest_queued_age_seconds",
    "nessus_pool_scans_total", "nessus_pool_scan_duration_seconds_bucket",
    "nessus_pool_queue_wait_seconds_bucket", "nessus_pool_validation_total",
    "nessus_pool_config_reloads_total", "nessus_pool_build_info",
}  # fmt: skip
ALERT_METRICS = {
    "nessus_pool_oldest_queued_age_seconds", "nessus_pool_queue_depth", "nessus_pool_dlq_depth",
    "nessus_pool_scanner_up", "nessus_pool_validation_total",
}  # fmt: skip
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
            "_created"), "summary": ("_sum", "_count", "_created")}  # fmt: skip


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (comments and sections skipped), repeats kept."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def secret_refs(node: Any) -> list[SecretSource]:
    """Every ``{ env = ... }`` / ``{ file = ... }`` reference anywhere in the config."""
    if isinstance(node, SecretSource):
        return [node]
    if isinstance(node, list):
        return [r for item in node for r in secret_refs(item)]
    if isinstance(node, dict):
        return [r for item in node.values() for r in secret_refs(item)]
    if hasattr(node, "__struct_fields__"):
        return [r for f in node.__struct_fields__ for r in secret_refs(getattr(node, f))]
    return []


def prod_config() -> Config:
    loaded = parse_config(PROD_TOML.read_text(encoding="utf-8"), str(PROD_TOML))
    assert loaded.warnings == []
    return loaded.config


# --- config and unit file ----------------------------------------------------------------


def test_prod_config_validates_with_two_pools_and_no_inline_secret() -> None:
    cfg = prod_config()
    assert [p.name for p in cfg.pools] == ["dmz", "lan"]
    assert all(p.scanners for p in cfg.pools)
    assert cfg.simulator is None
    assert cfg.server.admin_tokens and cfg.server.read_tokens
    assert cfg.security.allow_inline_credentials is False
    for sc in (s for p in cfg.pools for s in p.scanners):
        assert isinstance(sc.access_key, SecretSource)
        assert isinstance(sc.secret_key, SecretSource)
        assert sc.url.startswith("https://") and sc.verify_tls


def test_prod_secrets_resolve_from_systemd_credentials_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = secret_refs(prod_config())
    files = {r.file for r in refs if r.file is not None}
    envs = {r.env for r in refs if r.env is not None}
    assert files and envs
    loaded_by_unit = {
        v.split(":", 1)[0] for v in unit_settings(SERVICE.read_text())["LoadCredential"]
    }
    assert files == loaded_by_unit, "every { file = NAME } needs LoadCredential=NAME:..."
    for name in files:
        (tmp_path / name).write_text(f"value-of-{name}\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    for var in envs:
        monkeypatch.setenv(var, f"value-of-{var}")
    for ref in refs:
        assert resolve_secret(ref) == f"value-of-{ref.file or ref.env}"


def test_unit_file_matches_the_daemon() -> None:
    s = unit_settings(SERVICE.read_text(encoding="utf-8"))
    assert s["Type"] == ["notify"]
    assert "/bin/kill -HUP $MAINPID" in s["ExecReload"]
    # the daemon pings WATCHDOG=1 at half the interval (test_logs_notify.py proves it)
    assert s["WatchdogSec"] == ["30s"]
    assert s["ExecStart"][0].endswith(" serve --config /etc/nessus-pool/nessus-pool.toml")
    assert s["StateDirectory"] == ["nessus-pool"]
    assert prod_config().storage.path == "/var/lib/nessus-pool"
    assert s.get("DynamicUser") == ["yes"] or s.get("User") == ["nessus-pool"]
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes",
    }  # fmt: skip
    for key, value in expected.items():
        assert s.get(key) == [value], key
    assert "@system-service" in s["SystemCallFilter"]


# --- metrics used by alerts and the dashboard ----------------------------------------------------


async def exported_metric_names(d: Daemon) -> set[str]:
    """Series names a daemon exports after one completed scan and one reload; a family with
    no series yet counts with the suffixes its type gives it."""
    assert d.service is not None
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.url}/api/v1/scans", json={"targets": "10.0.0.1"}) as r:
            assert r.status == 202, await r.text()
            task_id = (await r.json())["task_id"]
        assert (await d.service.wait_for(task_id, 30)).status == "completed"
        async with http.post(f"{d.url}/api/v1/reload") as r:
            assert r.status == 200, await r.text()
        async with http.get(f"{d.url}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + sfx for sfx in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


async def test_alerts_and_dashboard_use_only_exported_metrics(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    exported = await exported_metric_names(d)
    alert_names = set(METRIC_NAME.findall(ALERTS.read_text(encoding="utf-8")))
    dashboard_names = set(METRIC_NAME.findall(DASHBOARD.read_text(encoding="utf-8")))
    assert alert_names - exported == set()
    assert dashboard_names - exported == set()
    assert alert_names >= ALERT_METRICS
    assert dashboard_names >= DASHBOARD_METRICS


def test_dashboard_is_importable_json() -> None:
    import json

    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] == "nessus-pool"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        for t in p.get("targets", []):
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    proc = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- README's metrics table ----------------------------------------------------------------

README = EXAMPLES.parent / "README.md"


def readme_section(title: str) -> str:
    """The text of README's section ``title`` (any heading level) up to the next heading;
    ``#`` lines inside code blocks are shell comments, not headings."""
    lines: list[str] | None = None
    fenced = False
    for line in README.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        heading = not fenced and re.match(r"#+ ", line) is not None
        if heading and lines is not None:
            break
        if lines is not None:
            lines.append(line)
        elif heading and line.rstrip("\n").split(" ", 1)[1] == title:
            lines = []
    assert lines is not None, f"README has no section {title!r}"
    return "".join(lines)


def documented_metrics() -> dict[str, tuple[str, str]]:
    """README's Monitoring table: name -> (type, labels)."""
    rows = re.findall(
        r"^\| `(nessus_pool_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", readme_section("Monitoring"), re.M
    )
    return {name: (kind, labels.strip()) for name, kind, labels in rows}


async def test_readme_documents_every_metric_and_no_created_series(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    await exported_metric_names(d)  # one scan and one reload, so labelled families have series
    async with aiohttp.ClientSession() as http, http.get(f"{d.url}/metrics") as r:
        text = await r.text()
    families = list(text_string_to_metric_families(text))
    created = [s.name for f in families for s in f.samples if s.name.endswith("_created")]
    assert created == [], f"{len(created)} _created series, e.g. {created[:3]}"
    live = {
        (f.name + "_total" if f.type == "counter" else f.name): f.type
        for f in families
        if f.name.startswith("nessus_pool_")
    }
    documented = documented_metrics()
    assert sorted(live.keys() - documented.keys()) == [], "exported but not in README"
    assert sorted(documented.keys() - live.keys()) == [], "in README but not exported"
    for name, kind in live.items():
        assert documented[name][0] == kind, name
    labels = {
        f.name: sorted({k for s in f.samples for k in s.labels if k not in ("le", "quantile")})
        for f in families
    }
    for name, (_, doc_labels) in documented.items():
        base = name.removesuffix("_total") if live[name] == "counter" else name
        shown = sorted(re.findall(r"`([a-z_]+)`", doc_labels))
        if labels[base]:
            assert shown == labels[base], name


# --- README's systemd steps create what the unit loads ---------------------------------------


def readme_created_credentials(steps: str) -> set[str]:
    """Files README's systemd steps write under /etc/nessus-pool/credentials/, by name or in a
    ``for name in ...; do ... "$name" ...; done`` loop."""
    steps = steps.replace("\\\n", " ")
    made = set(re.findall(r"/etc/nessus-pool/credentials/([A-Za-z0-9_.-]+)", steps))
    for var, names, body in re.findall(r"for (\w+) in ([^;]*); do(.*?)done", steps, re.S):
        if f"/etc/nessus-pool/credentials/${var}" in body:
            made.update(names.split())
    return made


def test_readme_systemd_steps_create_every_credential_the_unit_loads() -> None:
    section = readme_section("systemd")
    [steps] = re.findall(r"```sh\n(.*?)```", section, re.S)
    loaded_by_unit = {
        v.split(":", 1)[0] for v in unit_settings(SERVICE.read_text())["LoadCredential"]
    }
    assert readme_created_credentials(steps) == loaded_by_unit
    for value in unit_settings(SERVICE.read_text())["LoadCredential"]:
        name, path = value.split(":", 1)
        assert path == f"/etc/nessus-pool/credentials/{name}"
    cfg = prod_config()
    refs = secret_refs(cfg)
    assert {r.file for r in refs if r.file is not None} == loaded_by_unit
    for var in {r.env for r in refs if r.env is not None}:
        assert var in steps, f"README's steps do not say where {var} is set"
    assert "EnvironmentFile=-/etc/nessus-pool/env" in SERVICE.read_text()
    assert "/etc/nessus-pool/env" in steps
    for ca in {sc.ca_file for p in cfg.pools for sc in p.scanners if sc.ca_file}:
        assert ca in steps, f"README's steps do not install {ca}"
    # the check README runs is the one systemd runs, with the secrets where systemd puts them
    assert "CREDENTIALS_DIRECTORY=/etc/nessus-pool/credentials" in steps
    assert "config check --config /etc/nessus-pool/nessus-pool.toml" in steps
