"""Hostile input against the MCP JSON-RPC layer over both transports (hypothesis): malformed
JSON, wrong types, unknown methods and tools, huge values, unknown fields. Only JSON-RPC
errors, `isError` results or 4xx answers; never a 5xx, a crash, a non-JSON-RPC line on stdout,
or a task accepted half-way.

The HTTP request count and the answers by class are printed at the end of the module; CI
runs the quick sizes, ``NESSUS_POOL_FUZZ_FULL=1`` more than 10,000 HTTP requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import sim_config, write_config
from tests.integration.test_fuzz_admin import TIMEOUT_S, LiveDaemon, fuzz_settings, json_values

pytestmark = pytest.mark.acceptance

METHODS = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "server/discover",
    "notifications/initialized",
    "resources/list",
    "nope",
    # issue 15: tasks, prompts, completions, logging, subscriptions
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "tasks/update",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
]
TOOLS = [
    "run_untrusted_scan",
    "run_authenticated_scan",
    "get_scan_status",
    "get_scan_results",
    "list_tasks",
    "cancel_scan",
    "pause_scan",
    "resume_scan",
    "compare_scans",
    "wait_for_scan",
    "list_pools",
    "bogus",
    "triage_scan",  # prompts
    "plan_scan",
]

requests = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "method": st.sampled_from(METHODS) | st.text(max_size=20),
    },
    optional={
        "id": st.integers(-(2**40), 2**40) | st.text(max_size=8) | st.none(),
        "params": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(TOOLS),
                "arguments": st.dictionaries(st.text(max_size=15), json_values, max_size=6)
                | json_values,
                "protocolVersion": st.text(max_size=12),
                "task": json_values,
                "taskId": st.text(max_size=20) | json_values,
                "cursor": st.text(max_size=20) | json_values,
                "uri": st.text(max_size=40) | json_values,
                "level": st.text(max_size=10) | json_values,
                "ref": st.fixed_dictionaries(
                    {"type": st.sampled_from(["ref/prompt", "ref/resource", "x"])},
                    optional={"name": st.text(max_size=20), "uri": st.text(max_size=40)},
                )
                | json_values,
                "argument": st.dictionaries(st.text(max_size=10), json_values, max_size=3),
                "notifications": json_values,
            },
        )
        | json_values,
    },
)


def valid_jsonrpc_answer(body: Any) -> None:
    items = body if isinstance(body, list) else [body]
    for item in items:
        assert item["jsonrpc"] == "2.0"
        assert ("result" in item) != ("error" in item)
        if "error" in item:
            assert isinstance(item["error"]["code"], int) and item["error"]["message"]


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LiveDaemon]:
    with LiveDaemon(tmp_path_factory.mktemp("fuzz-mcp")) as d:
        yield d
        d.report(request.config, "MCP HTTP fuzz")
        assert d.counts.get("5xx", 0) == 0, d.counts


@pytest.fixture(scope="module")
def session(live: LiveDaemon) -> str:
    req = urllib.request.Request(
        live.daemon.url + "/mcp",
        method="POST",
        data=json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "fuzz", "version": "1"},
                },
            }
        ).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.headers["Mcp-Session-Id"])


def post_mcp(live: LiveDaemon, session: str, data: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(
        live.daemon.url + "/mcp",
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": "2025-06-18",
            "Accept": "application/json, text/event-stream",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    live.count(status)
    text = raw.decode(errors="replace")
    if text.startswith("event:") or "\ndata:" in text or text.startswith("data:"):
        lines = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
        return status, json.loads(lines[-1]) if lines else None
    return status, json.loads(text) if text.strip().startswith(("{", "[")) else text


@pytest.mark.timeout(TIMEOUT_S)
@fuzz_settings(100, 6000)
@given(requests)
def test_http_requests(live: LiveDaemon, session: str, body: dict[str, Any]) -> None:
    before = live.tasks()
    status, answer = post_mcp(live, session, json.dumps(body).encode())
    assert status < 500, (body, answer)
    if status == 200 and isinstance(answer, dict | list):
        valid_jsonrpc_answer(answer)
    if live.tasks() != before:  # only a well-formed submit tool call may add one task
        assert live.tasks() == before + 1
        assert body.get("method") == "tools/call"
        assert status == 200 and not answer["result"].get("isError")


@pytest.mark.timeout(TIMEOUT_S)
@fuzz_settings(100, 4500)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_http_bytes(live: LiveDaemon, session: str, raw: bytes) -> None:
    before = live.tasks()
    status, answer = post_mcp(live, session, raw)
    assert status < 500, (raw, answer)
    assert live.tasks() == before


@pytest.fixture(scope="module")
def stdio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    tmp = tmp_path_factory.mktemp("fuzz-stdio")
    cfg = write_config(tmp / "np.toml", sim_config(tmp, scan_seconds=30))
    exe = Path(sys.executable).parent / "nessus-pool"
    proc = subprocess.Popen(
        [str(exe), "mcp", "--config", str(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", "")},
    )
    yield proc
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0  # exits promptly on EOF
    proc.stdout.close()


def stdio_call(proc: subprocess.Popen[bytes], line: bytes) -> list[Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.replace(b"\n", b" ") + b"\n")
    # a ping with a known id after every input: everything before it must be JSON-RPC
    proc.stdin.write(b'{"jsonrpc":"2.0","id":"sync","method":"ping"}\n')
    proc.stdin.flush()
    answers: list[Any] = []
    while True:
        out = proc.stdout.readline()
        assert out, "the stdio server exited"
        msg = json.loads(out)
        valid_jsonrpc_answer(msg)
        if msg.get("id") == "sync":
            return answers
        answers.append(msg)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    requests.map(lambda b: json.dumps(b).encode())
    | st.binary(max_size=120).filter(lambda b: b"\n" not in b and b"\r" not in b)
)
def test_stdio_lines(stdio: subprocess.Popen[bytes], line: bytes) -> None:
    stdio_call(stdio, line)
    assert stdio.poll() is None
