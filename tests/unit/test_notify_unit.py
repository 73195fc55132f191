"""Pure parts of notifications: the signature (and README's verification snippet), the
payload's schema and what it must never hold, the SSRF rules, the resolver guard, backoff,
and the [[notifications]] config checks."""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from nessus_pool.config import parse_config
from nessus_pool.errors import ConfigError
from nessus_pool.models import ScanType, Task, TaskStatus
from nessus_pool.notify import payload as pl
from nessus_pool.notify.signing import signature_header, verify
from nessus_pool.notify.ssrf import address_allowed, parse_allow_hosts, url_problem
from nessus_pool.notify.worker import GuardedResolver, RefusedAddressError, backoff_s

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-" + "f" * 40


def readme_verify() -> Any:
    """The ``verify`` function of README's snippet, as a receiver would paste it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- webhook-verify -->", 1)[1].split("```python\n", 1)[1]
    code = block.split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    return scope["verify"]


@pytest.mark.parametrize("check", ["ours", "readme"])
def test_signature_verifies_and_refuses_tampering_replay_and_garbage(check: str) -> None:
    now = int(time.time())
    body = b'{"version": 1, "event": "completed"}'

    def ok(secret: str, header: str, data: bytes) -> bool:
        if check == "ours":
            return verify(secret, header, data, now)
        return bool(readme_verify()(secret, header, data))

    header = signature_header(SECRET, now, body)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert ok(SECRET, header, body)
    assert not ok(SECRET, header, body + b" ")
    assert not ok("whsec-" + "e" * 40, header, body)
    assert not ok(SECRET, signature_header(SECRET, now - 301, body), body)
    for garbage in ("", "t=abc,v1=00", "v1=00", "t=,v1=", ",,,", f"t={now}"):
        assert not ok(SECRET, garbage, body)


def _task(**kw: Any) -> Task:
    base: dict[str, Any] = {
        "task_id": "tsk-1",
        "seq": 1,
        "pool": "lan",
        "name": "weekly",
        "targets": ["10.0.0.1"],
        "status": TaskStatus.COMPLETED,
        "created_at_ms": 1,
        "updated_at_ms": 2,
        "finished_at_ms": 3,
        "credential": "prod-ssh",
        "scan_type": ScanType.AUTHENTICATED,
        "authentication_status": "success",
    }
    base.update(kw)
    return Task(**base)


def test_payload_schema_version_1_and_nothing_secret() -> None:
    t = _task(error="x" * 5000)
    body = pl.initial_payload("completed", "dlv-1", t, "high", 1234)
    doc = pl.decode(body)
    assert set(doc) == {
        "version", "event", "delivery_id", "occurred_at_ms", "task", "counts", "min_severity",
        "matching", "new_findings", "top_findings", "links",
    }  # fmt: skip
    assert (doc["version"], doc["event"], doc["delivery_id"]) == (1, "completed", "dlv-1")
    assert set(doc["task"]) == {
        "task_id", "name", "pool", "status", "reason", "error", "targets", "targets_total",
        "scan_type", "scanner_id", "attempt", "dead_letter", "authentication_status",
        "schedule_id", "created_at_ms", "started_at_ms", "finished_at_ms",
    }  # fmt: skip
    assert len(doc["task"]["error"]) == 500  # clipped
    assert "prod-ssh" not in body.decode()  # not even the credential set's name
    assert doc["links"]["results"] == "/api/v1/scans/tsk-1/results"
    doc.update(counts=pl.count_by_severity([4, 3, 3, 0]), matching=3)
    doc["top_findings"] = [
        {"host": "h", "port": 22, "severity": "high", "plugin_id": 1, "plugin_name": "ssh"}
    ]
    slack = pl.decode(pl.slack_body(doc))
    assert set(slack) == {"text"} and "weekly" in slack["text"] and "[high] h: ssh" in slack["text"]
    assert doc["counts"] == {"critical": 1, "high": 2, "medium": 0, "low": 0, "info": 1}
    assert pl.at_or_above(doc["counts"], "high") == 3


def test_events_of_a_final_state() -> None:
    assert pl.events_for(_task()) == ["completed", "findings", "new_findings"]
    assert pl.events_for(_task(status=TaskStatus.TIMED_OUT, authentication_status=None)) == [
        "failed"
    ]
    auth = _task(status=TaskStatus.FAILED, authentication_status="failed", dead_letter=True)
    assert pl.events_for(auth) == [
        "failed", "dead_lettered", "authentication_failed", "findings", "new_findings",
    ]  # fmt: skip
    assert pl.events_for(_task(status=TaskStatus.CANCELED)) == []


@pytest.mark.parametrize(
    ("url", "allow", "problem"),
    [
        ("https://hooks.example/x", [], None),
        ("http://127.0.0.1:9000/x", [], None),
        ("http://localhost/x", [], None),
        ("http://[::1]:80/x", [], None),
        ("http://hooks.example/x", [], "http:// is allowed to loopback addresses only"),
        ("http://hooks.example/x", ["hooks.example"], None),
        ("https://10.0.0.5/x", [], "not a public or loopback address"),
        ("https://10.0.0.5/x", ["10.0.0.0/8"], None),
        ("https://169.254.169.254/latest", [], "not a public or loopback address"),
        ("https://[::ffff:10.0.0.1]/x", [], "not a public or loopback address"),
        ("https://user:pw@hooks.example/x", [], "holds credentials"),
        ("ftp://hooks.example/x", [], "use an https:// URL"),
        ("https:///x", [], "names no host"),
        ("https://hooks.example:99999/x", [], "not a valid URL"),
    ],
)
def test_url_rules(url: str, allow: list[str], problem: str | None) -> None:
    got = url_problem(url, parse_allow_hosts(allow))
    assert (got is None) if problem is None else (got is not None and problem in got)


@pytest.mark.parametrize(
    ("addr", "allowed"),
    [
        ("8.8.8.8", True), ("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
        ("2606:4700::1111", True), ("10.0.0.1", False), ("172.16.0.1", False),
        ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
        ("0.0.0.0", False), ("224.0.0.1", False), ("fc00::1", False), ("fe80::1", False),
        ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True),
    ],
)  # fmt: skip
def test_address_rules(addr: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(addr), parse_allow_hosts([])) is allowed
    assert address_allowed(ipaddress.ip_address(addr), parse_allow_hosts(["::/0", "0.0.0.0/0"]))


def test_allow_hosts_refuses_what_is_neither_name_nor_network() -> None:
    for bad in ("", "exa mple", "a/b", "-x-.example"):
        with pytest.raises(ValueError):
            parse_allow_hosts([bad])


class _FakeDns(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        pass


async def test_a_public_name_resolving_to_a_private_address_is_refused() -> None:
    dns = _FakeDns(
        {
            "hooks.example": ["93.184.216.34"],
            "rebind.example": ["93.184.216.34", "10.0.0.5"],
            "metadata.example": ["169.254.169.254"],
            "internal.corp": ["10.1.2.3"],
        }
    )
    guard = GuardedResolver(parse_allow_hosts(["internal.corp"]), dns)
    assert [r["host"] for r in await guard.resolve("hooks.example", 443)] == ["93.184.216.34"]
    assert [r["host"] for r in await guard.resolve("internal.corp", 443)] == ["10.1.2.3"]
    for host in ("rebind.example", "metadata.example"):
        with pytest.raises(RefusedAddressError, match="not a public or loopback"):
            await guard.resolve(host, 443)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    waits = [backoff_s(n, 5.0, 60.0, rng) for n in range(1, 9)]
    for n, w in enumerate(waits, start=1):
        cap = min(60.0, 5.0 * 2 ** (n - 1))
        assert cap / 2 <= w <= cap
    assert max(waits) <= 60.0 and waits[0] < 5.0
    assert len({round(backoff_s(3, 5.0, 60.0, random.Random(s)), 6) for s in range(5)}) == 5
    assert backoff_s(10_000, 1.0, 30.0, rng) <= 30.0  # no overflow on absurd attempts


def _cfg(**hook: Any) -> str:
    import tomli_w

    base: dict[str, Any] = {
        "name": "ops",
        "url": "https://hooks.example/x",
        "secret": SECRET,
        "events": ["completed"],
    }
    base.update(hook)
    return tomli_w.dumps({"pools": [{"name": "lan"}], "notifications": [base]})


@pytest.mark.parametrize(
    ("hook", "path", "text"),
    [
        ({"url": "http://hooks.example/x"}, "$.notifications[0].url", "loopback addresses only"),
        ({"secret": "short-secret"}, "$.notifications[0].secret", "at least 24"),
        ({"pools": ["nope"]}, "$.notifications[0].pools[0]", "no pool named"),
        ({"events": []}, "$.notifications[0].events", "length >= 1"),
        ({"events": ["completed", "completed"]}, "$.notifications[0].events", "twice"),
        ({"events": ["exploded"]}, "$.notifications[0].events[0]", "completed"),
        ({"min-severity": "severe"}, "$.notifications[0].min-severity", "high"),
        ({"allow-hosts": ["a b"]}, "$.notifications[0].allow-hosts", "not a host name"),
        ({"max-attempts": 0}, "$.notifications[0].max-attempts", ">= 1"),
        ({"timeout-s": 1e9}, "$.notifications[0].timeout-s", "<= 120"),
    ],
)
def test_bad_targets_are_refused_naming_the_field(
    hook: dict[str, Any], path: str, text: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_cfg(**hook))
    assert path in str(err.value) and text in str(err.value)
    assert "short-secret" not in str(err.value)


def test_a_good_target_loads_and_the_example_file_validates(tmp_path: Path) -> None:
    loaded = parse_config(_cfg(**{"secret": {"env": "HOOK_SECRET_UNSET"}}))
    assert loaded.config.notifications[0].min_severity == "high"
    import tomli_w

    twice = {"notifications": [{"name": "ops", "url": "https://h.example/", "secret": SECRET,
                                "events": ["failed"]}] * 2}  # fmt: skip
    with pytest.raises(ConfigError, match="duplicate notification name"):
        parse_config(tomli_w.dumps(twice))
    example = (ROOT / "examples" / "notifications.toml").read_text(encoding="utf-8")
    cfg = parse_config('[[pools]]\nname = "dmz"\n' + example, base_dir=tmp_path).config
    assert [n.name for n in cfg.notifications] == ["secops", "slack-dmz"]
    assert cfg.notifications[1].format == "slack"
