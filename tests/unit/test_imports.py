"""Every module of the package imports alone, in a fresh interpreter: no import cycle
hides behind the order in which other modules happen to be imported first."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "celeriac"


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # runs the command line when imported: that is its job
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def import_alone(name: str) -> str | None:
    """None when ``name`` imports in a new interpreter, else the error's last line."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def test_the_package_has_the_modules_this_test_walks() -> None:
    names = module_names()
    assert "celeriac" in names
    assert "celeriac.transports.redis.broker" in names
    assert len(names) > 40


@pytest.mark.timeout(600)  # a whole-package subprocess run; slow on a loaded machine
def test_every_module_imports_alone() -> None:
    names = module_names()
    with ThreadPoolExecutor(max_workers=4) as pool:
        errors = dict(zip(names, pool.map(import_alone, names), strict=True))
    failed = {name: error for name, error in errors.items() if error is not None}
    assert failed == {}
