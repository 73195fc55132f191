"""npm packages for the tests that drive nessus-pool with clients nobody here wrote (the
TypeScript MCP SDK, the MCP conformance suite). Each test installs into its own temp folder;
npm's download cache is kept across runs under ``NESSUS_POOL_NPM_CACHE`` (default
``~/.cache/nessus-pool-tests/npm``), so a repeat run installs offline in a few seconds."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

INSTALL_TIMEOUT_S = 240.0


def npm_cache() -> Path:
    default = Path.home() / ".cache" / "nessus-pool-tests" / "npm"
    return Path(os.environ.get("NESSUS_POOL_NPM_CACHE", default))


async def npm_install(folder: Path, *packages: str) -> None:
    """``npm install`` the exact versions into ``folder``; skips the test when npm is
    missing or cannot fetch them (no registry), never on any other failure."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node/npm are not installed")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text('{"private": true, "type": "module"}\n')
    proc = await asyncio.create_subprocess_exec(
        npm, "install", "--no-audit", "--no-fund", "--prefer-offline",
        "--cache", str(npm_cache()), *packages,
        cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(INSTALL_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.skip(f"npm could not fetch {' '.join(packages)} in {INSTALL_TIMEOUT_S:.0f} s")
    if proc.returncode != 0:
        text = out.decode(errors="replace")
        if any(s in text for s in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "E404")):
            pytest.skip(f"npm cannot fetch {' '.join(packages)}: {text[-300:]}")
        raise AssertionError(f"npm install failed:\n{text[-2000:]}")
