"""Repository hygiene a fresh clone depends on: no build artefacts tracked, metadata that
current setuptools accepts without deprecation warnings."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTEFACT_SUFFIXES = (".whl", ".tar.gz", ".db", ".db-wal", ".db-shm", ".pyc")


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()


def test_no_build_artefacts_tracked() -> None:
    tracked = _tracked()
    assert len(tracked) > 50  # the listing really is the repo's
    bad = [p for p in tracked if p.endswith(ARTEFACT_SUFFIXES)]
    assert bad == []


def test_gitignore_keeps_wheels_out() -> None:
    patterns = (ROOT / ".gitignore").read_text().split()
    assert "*.whl" in patterns


def test_license_is_an_spdx_string() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    requires = meta["build-system"]["requires"]
    assert any(r.startswith("setuptools>=77") for r in requires), requires
