"""The MCP conformance suite (npm @modelcontextprotocol/conformance 0.1.13, the last release
for Node 20) against a live daemon over Streamable HTTP (issue 15 item 6).

Every scenario of ``--suite all`` runs; the ones that need the suite's own fixture tools,
prompts or resources (``test_simple_text``, ``test_prompt_with_arguments``,
``test://static-text``, sampling and elicitation round trips, ...) are the expected failures
below, each with why, and the suite itself fails the run if one of them starts passing (a
stale baseline) or anything else fails. Not run where ``CI`` is set (cost); skipped only when
npm cannot fetch the suite."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from nessus_pool.daemon import Daemon
from tests.conftest import DaemonFactory
from tests.integration.test_mcp_sdk import mcp_config
from tests.npm_tools import npm_install

SUITE = "@modelcontextprotocol/conformance@0.1.13"
#: scenarios that need the suite's fixture server ("Implement tool `test_...`"), and why
NOT_APPLICABLE = {
    "completion-complete": "completes the fixture prompt test_prompt_with_arguments",
    "tools-call-simple-text": "calls the fixture tool test_simple_text",
    "tools-call-image": "calls the fixture tool test_image_content",
    "tools-call-audio": "calls the fixture tool test_audio_content",
    "tools-call-embedded-resource": "calls the fixture tool test_embedded_resource",
    "tools-call-mixed-content": "calls the fixture tool test_multiple_content_types",
    "tools-call-with-logging": "calls the fixture tool test_tool_with_logging",
    "tools-call-error": "calls the fixture tool test_error_handling",
    "tools-call-with-progress": "calls the fixture tool test_tool_with_progress",
    "tools-call-sampling": "calls the fixture tool test_sampling (we never sample)",
    "tools-call-elicitation": "calls the fixture tool test_elicitation (we never elicit)",
    "elicitation-sep1034-defaults": "calls the fixture tool test_elicitation_sep1034_defaults",
    "elicitation-sep1330-enums": "calls the fixture tool test_elicitation_sep1330_enums",
    "json-schema-2020-12": "lists the fixture tool json_schema_2020_12_tool",
    "resources-read-text": "reads the fixture resource test://static-text",
    "resources-read-binary": "reads the fixture resource test://static-binary",
    "resources-templates-read": "reads the fixture template test://template/{id}/data",
    "prompts-get-simple": "gets the fixture prompt test_simple_prompt",
    "prompts-get-with-args": "gets the fixture prompt test_prompt_with_arguments",
    "prompts-get-embedded-resource": "gets the fixture prompt test_prompt_with_embedded_resource",
    "prompts-get-with-image": "gets the fixture prompt test_prompt_with_image",
}
#: the scenarios that apply to nessus-pool, all of which must pass
MUST_PASS = {
    "server-initialize", "ping", "tools-list", "resources-list", "logging-set-level",
    "dns-rebinding-protection", "server-sse-multiple-streams", "resources-subscribe",
    "resources-unsubscribe", "prompts-list",
}  # fmt: skip
_LINE = re.compile(r"^[✓✗] (\S+): (\d+) passed, (\d+) failed", re.MULTILINE)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(bool(os.environ.get("CI")), reason="the conformance suite is not run in CI"),
]


async def test_conformance_suite(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    folder = tmp_path / "conformance"
    await npm_install(folder, SUITE)
    baseline = folder / "expected-failures.yml"
    baseline.write_text("server:\n" + "".join(f"  - {name}\n" for name in NOT_APPLICABLE))
    d: Daemon = await start_daemon(mcp_config(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        str(folder / "node_modules" / ".bin" / "conformance"), "server",
        "--url", f"{d.url}/mcp", "--suite", "all", "--expected-failures", str(baseline),
        cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(240):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    results = {m[1]: (int(m[2]), int(m[3])) for m in _LINE.finditer(text)}
    passed = {name for name, (ok, failed) in results.items() if ok and not failed}
    assert passed >= MUST_PASS, (sorted(MUST_PASS - passed), text[-4000:])
    # exit 0: only the expected failures failed, and none of them passes now (stale)
    assert proc.returncode == 0, text[-4000:]
    unknown = set(results) - MUST_PASS - set(NOT_APPLICABLE) - {"server-sse-polling"}
    assert not unknown, f"new scenarios to classify: {sorted(unknown)}"
