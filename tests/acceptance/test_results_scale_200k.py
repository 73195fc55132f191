"""Issue 13 at the size it names, scaled to the test budget: 200,000 hosts parsed and stored
by a child process with the peak RSS of 20,000 (bounded by a constant, not by hosts), and
the first status read after the daemon starts on that database under 50 ms. The same check
as the integration layer's 2,000 / 40,000 (tests/integration/test_results_scale.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DaemonFactory
from tests.integration import test_results_scale as scale

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(900)
async def test_200k_hosts_in_bounded_memory(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scale, "PAGE_AT", 199_990)
    await scale.check_scale(tmp_path, start_daemon, 20_000, 200_000)
