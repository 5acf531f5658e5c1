"""Every code example of the documentation runs: the site's Python examples are files in
``docs/examples/`` that the pages include (``--8<--``, pymdownx.snippets), and each is run
here against the memory broker or an embedded SQLite file in a fresh folder. The pages
hold no other Python block unless it says why it is not run (``<!-- not run: why -->``
on the line before it), so no example can rot unseen."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
#: run together: a worker subprocess on tasks.py, and call_tasks.py as its client
GETTING_STARTED = {"tasks.py", "call_tasks.py"}
#: run against a worker on Redis (test_the_probe_..., test_remote_control_...)
PROBE = "probe.py"
REMOTE_CONTROL = "remote_control.py"
SCRIPTS = sorted(
    p.name for p in EXAMPLES.glob("*.py") if p.name not in {*GETTING_STARTED, PROBE, REMOTE_CONTROL}
)

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
INCLUDE = re.compile(r'^\s*--8<-- "([^"]+)"\s*$', re.M)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def run_python(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd), "PYTHONUNBUFFERED": "1"}
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CELERIAC_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_example_runs(name: str, tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / name, tmp_path / name)
    proc = run_python(name, cwd=tmp_path)
    assert proc.returncode == 0, f"docs/examples/{name} failed:\n{proc.stdout}\n{proc.stderr}"


def test_the_testing_example_passes_under_pytest(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "testing_worker.py", tmp_path / "test_example.py")
    proc = run_python(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        os.devnull,
        "test_example.py",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout, proc.stdout


def start_worker(
    cwd: Path, env: dict[str, str], *options: str, app: str = "tasks"
) -> subprocess.Popen[bytes]:
    log = (cwd / "worker.log").open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", app, "worker", "-l", "info", *options],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """A warm stop (SIGTERM); its exit code."""
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        raise


def test_the_probe_answers_for_a_live_worker_only(tmp_path: Path, redis_db: str) -> None:
    shutil.copy(EXAMPLES / "tasks.py", tmp_path / "tasks.py")
    shutil.copy(EXAMPLES / PROBE, tmp_path / PROBE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CELERY_BROKER_URL": redis_db}
    env.pop("CELERIAC_BROKER_URL", None)

    def probe(node: str, timeout: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, PROBE, "tasks", node, timeout],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    nobody = probe("celeriac@nobody-here", "0.5")
    assert nobody.returncode == 1, nobody.stdout + nobody.stderr
    assert "celeriac@nobody-here: no answer" in nobody.stdout
    worker = start_worker(tmp_path, env, "-P", "threads", "-c", "1", "-n", "celeriac@probed")
    try:
        deadline = time.monotonic() + 60
        while True:  # each probe waits up to 2 s for the answer; the worker may still start
            answer = probe("celeriac@probed", "2")
            if answer.returncode == 0 or time.monotonic() > deadline or worker.poll() is not None:
                break
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert "celeriac@probed: pong" in answer.stdout
    finally:
        code = stop_worker(worker)
    assert code == 0, (tmp_path / "worker.log").read_text()


def test_remote_control_example_on_redis(tmp_path: Path, redis_db: str) -> None:
    """The monitoring page's example: ping, registered, a custom inspect command, and a
    broadcast shutdown that stops the worker (exit code 0)."""
    shutil.copy(EXAMPLES / REMOTE_CONTROL, tmp_path / REMOTE_CONTROL)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CELERY_BROKER_URL": redis_db}
    env.pop("CELERIAC_BROKER_URL", None)
    worker = start_worker(tmp_path, env, "-P", "threads", "-c", "1", app="remote_control")
    try:
        proc = subprocess.run(
            [sys.executable, REMOTE_CONTROL],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            stop_worker(worker)


def test_getting_started_worker_and_client(tmp_path: Path) -> None:
    """The two terminals of Getting started: a worker on the embedded SQLite file, then
    the client script, in one folder."""
    for name in GETTING_STARTED:
        shutil.copy(EXAMPLES / name, tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CELERIAC_BROKER_URL", None)
    worker = start_worker(tmp_path, env, "-c", "2")  # prefork, on ./celeriac.sqlite3
    try:
        proc = run_python("call_tasks.py", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "8"
        assert lines[1].startswith("hello Ada, from task ")
        assert lines[2] == "90"
    finally:
        code = stop_worker(worker)
    assert code == 0, (tmp_path / "worker.log").read_text()


def test_every_python_block_of_the_docs_is_a_tested_example() -> None:
    """A Python block is an include of a file under docs/examples/ (run above), or says
    on the line before it why it is not run."""
    bad = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            info = match.group("info").strip().split()
            if not info or info[0] not in {"python", "py", "pycon"}:
                continue
            body = match.group("body").strip()
            includes = INCLUDE.findall(body)
            if includes and len(includes) == len(body.splitlines()):
                continue
            before = text[: match.start()].rstrip().splitlines()[-1:] or [""]
            if before[0].strip().startswith("<!-- not run:"):
                continue
            line = text[: match.start()].count("\n") + 1
            bad.append(f"{page.relative_to(ROOT)}:{line}")
    assert not bad, f"Python blocks that are neither included examples nor marked: {bad}"


def test_every_example_is_shown_on_a_page() -> None:
    included = set()
    for page in pages():
        for path in INCLUDE.findall(page.read_text(encoding="utf-8")):
            included.add(path.split(":", 1)[0])
    for path in included:
        assert (ROOT / path).is_file(), f"a page includes {path}, which does not exist"
    orphans = [p.name for p in EXAMPLES.glob("*.py") if f"docs/examples/{p.name}" not in included]
    assert not orphans, f"examples no page shows: {orphans}"
