"""What each pip extra installs is what its transport imports: a fresh virtual environment
per extra (none, ``redis``, ``amqp``) gets the built wheel, and runs a task on that
transport with only what the extra brought. The wheel is built from a copy of the
tracked files, so a data file the package forgets (a ``.lua`` or ``.sql``) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import venv
from pathlib import Path

import pytest

from servers import REDIS_URL, scratch_prefix

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built from the files git tracks (no local leftovers)."""
    top = tmp_path_factory.mktemp("wheel")
    source = top / "source"
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        path = Path(os.fsdecode(name))
        if (ROOT / path).is_file():
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, source / path)
    out = top / "dist"
    pip(sys.executable, "wheel", "--no-deps", "-w", str(out), str(source))
    (built,) = out.glob("celeriac-*.whl")
    return built


def pip(python: str, *args: str) -> None:
    command = [python, "-m", "pip", "-q", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def fresh_env(where: Path, wheel: Path, extra: str) -> str:
    """A new venv with the wheel (and ``extra``) installed; its interpreter's path."""
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    python = str(where / "bin" / "python")
    pip(python, "install", f"{wheel}[{extra}]" if extra else str(wheel))
    return python


def run_in(python: str, code: str, cwd: Path) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    done = subprocess.run(
        [python, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


#: Runs one task through the real worker on ``URL``; prints the result.
TASK_ROUND_TRIP = """
    import sys
    from celeriac import Celery
    from celeriac.testing import TestWorker

    app = Celery("pkgcheck", broker=URL)
    app.conf.task_default_queue = QUEUE

    @app.task
    def add(x, y):
        return x + y

    with TestWorker(app) as worker:
        result = add.delay(2, 3)
        print(result.get(timeout=20))
    app.close()
"""


def imports(python: str, cwd: Path, *names: str) -> dict[str, bool]:
    """Which of ``names`` the venv can import."""
    code = "import importlib.util\n" + "".join(
        f"print({name!r}, importlib.util.find_spec({name!r}) is not None)\n" for name in names
    )
    found = {}
    for line in run_in(python, code, cwd).splitlines():
        name, ok = line.split()
        found[name] = ok == "True"
    return found


@pytest.fixture
def queue() -> str:
    return f"pkg-{uuid.uuid4().hex[:12]}"


def test_the_base_install_runs_on_sqlite_and_names_the_extras(
    wheel: Path, tmp_path: Path, queue: str
) -> None:
    python = fresh_env(tmp_path / "env", wheel, "")
    found = imports(python, tmp_path, "redis", "hiredis", "aiormq", "pamqp", "psycopg")
    assert found == dict.fromkeys(["redis", "hiredis", "aiormq", "pamqp", "psycopg"], False)
    db = tmp_path / "broker.sqlite3"
    head = f"URL = 'sqlite:///{db}'\nQUEUE = {queue!r}\n"
    assert run_in(python, head + textwrap.dedent(TASK_ROUND_TRIP), tmp_path).strip() == "5"
    missing = """
        from celeriac import Celery
        from celeriac.exceptions import ImproperlyConfigured
        for url, extra in [
            ("redis://127.0.0.1/0", "redis"),
            ("amqp://127.0.0.1//", "amqp"),
            ("postgresql://127.0.0.1/x", "postgres"),
        ]:
            try:
                Celery("x", broker=url).check_configuration()
            except ImproperlyConfigured as exc:
                assert f"celeriac[{extra}]" in str(exc), exc
            else:
                raise AssertionError(f"{url} started without its extra")
        print("ok")
    """
    assert run_in(python, missing, tmp_path).strip() == "ok"


def test_the_redis_extra_runs_the_redis_transport(wheel: Path, tmp_path: Path, queue: str) -> None:
    python = fresh_env(tmp_path / "env", wheel, "redis")
    found = imports(python, tmp_path, "hiredis", "redis", "aiormq", "pamqp")
    assert found == {"hiredis": True, "redis": False, "aiormq": False, "pamqp": False}
    with scratch_prefix("packaging") as prefix:
        head = f"URL = '{REDIS_URL}?global_keyprefix={prefix}'\nQUEUE = {queue!r}\n"
        assert run_in(python, head + textwrap.dedent(TASK_ROUND_TRIP), tmp_path).strip() == "5"


def test_the_amqp_extra_runs_the_rabbitmq_transport(
    wheel: Path,
    tmp_path: Path,
    queue: str,
    rabbit: str,
) -> None:
    python = fresh_env(tmp_path / "env", wheel, "amqp")
    found = imports(python, tmp_path, "aiormq", "pamqp", "redis", "hiredis")
    assert found == {"aiormq": True, "pamqp": True, "redis": False, "hiredis": False}
    head = f"URL = {rabbit!r}\nQUEUE = {queue!r}\n"
    assert run_in(python, head + textwrap.dedent(TASK_ROUND_TRIP), tmp_path).strip() == "5"
    cleanup = f"""
        import asyncio, aiormq
        async def main():
            conn = await aiormq.connect({rabbit!r})
            channel = await conn.channel()
            await channel.queue_delete({queue!r})
            await conn.close()
        asyncio.run(main())
    """
    run_in(python, cleanup, tmp_path)
