"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing
API reference or any other warning fails it), and its generated tables cover every
setting and every command-line option the code knows.

Skipped when the ``docs`` extra is not installed, except under ``CI=true`` (the dev extra
installs it), where that fails."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def need_mkdocs() -> None:
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
        if importlib.util.find_spec(name.split(".")[0]) is None
    ]
    if missing:
        message = f"the docs extra is not installed (no {', '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "celeriac_docs_hooks", ROOT / "docs" / "_hooks" / "generated.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    need_mkdocs()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "apply_async" in api  # the API reference was rendered from the docstrings


def test_the_settings_table_has_every_setting() -> None:
    from celeriac._config import SETTINGS
    from celeriac._settings_table import NOTES

    table = hooks().settings_table()
    for name in {*SETTINGS, *NOTES}:
        assert f"| `{name}` |" in table, name
    assert "| `task_acks_late` | `CELERY_ACKS_LATE` | `True` | **implemented** |" in table


def test_the_cli_table_has_every_worker_option() -> None:
    import click

    from celeriac._cli.worker import NO_MEANING, worker

    table = hooks().cli_tables()
    for param in worker.params:
        if isinstance(param, click.Option):
            assert f"`{param.opts[0]}`" in table, param.opts
    for text in NO_MEANING.values():
        assert text.replace("|", "\\|") in table


def test_an_unknown_generated_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        hooks().expand("text\n<!-- generated: nope -->\n")


def test_the_benchmark_charts_are_the_ones_their_json_gives(tmp_path: Path) -> None:
    """docs/benchmarks/ holds what bench/charts.py draws from bench/published/*.json."""
    spec = importlib.util.spec_from_file_location("bench_charts", ROOT / "bench" / "charts.py")
    assert spec is not None and spec.loader is not None
    charts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(charts)
    published = sorted((ROOT / "bench" / "published").glob("*.json"))
    assert published, "no benchmark results in bench/published/"
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in published]
    written = charts.figures(reports, tmp_path)
    committed = ROOT / "docs" / "benchmarks"
    for path in written:
        assert (committed / path.name).read_text(encoding="utf-8") == path.read_text(
            encoding="utf-8"
        ), f"docs/benchmarks/{path.name} is stale: run python bench/charts.py"
    stale = {p.name for p in committed.glob("*.svg")} - {p.name for p in written}
    assert not stale, f"charts no published run gives: {sorted(stale)}"
