"""Static checks run with the suite, so that one command gates everything."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from sse_service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # a process of its own
def test_mypy_strict() -> None:
    result = run("mypy")  # files and strictness from setup.cfg
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # a process of its own
def test_ruff() -> None:
    result = run("ruff", "check", "sse_service", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_operations_guide_documents_every_setting() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(Settings):
        assert f"| `SSE_{f.name.upper()}` |" in guide, f"SSE_{f.name.upper()} is not documented"
