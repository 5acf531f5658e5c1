"""The typed API: mypy accepts correct calls and rejects wrong ones (ParamSpec)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent / "typing"


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            "--cache-dir=/dev/null",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_correct_usage_type_checks() -> None:
    result = mypy(HERE / "ok_usage.py")
    assert result.returncode == 0, result.stdout


def test_wrong_arguments_and_result_types_are_errors() -> None:
    result = mypy(HERE / "bad_usage.py")
    expected = {
        i
        for i, line in enumerate((HERE / "bad_usage.py").read_text().splitlines(), 1)
        if "# E:" in line
    }
    reported = {
        int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line
    }
    assert reported == expected, result.stdout
