"""Lint, format and strict typing of the package stay clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_check() -> None:
    proc = run(
        "ruff", "check", "src", "tests", "bench", "soak", "examples", "docs/examples", "docs/_hooks"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    proc = run(
        "ruff",
        "format",
        "--check",
        "src",
        "tests",
        "bench",
        "soak",
        "examples",
        "docs/examples",
        "docs/_hooks",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(600)  # a whole-package subprocess run; slow on a loaded machine
def test_mypy_strict_on_the_package() -> None:
    proc = run("mypy", "--cache-dir=/dev/null")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_ships_py_typed() -> None:
    assert (ROOT / "src" / "celeriac" / "py.typed").exists()
