"""Settings a celeriac worker or client acts on, end to end with real processes:
``task_default_retry_delay``, ``worker_disable_rate_limits``, connecting at start-up
(``broker_connection_retry_on_startup``, ``broker_connection_max_retries``),
``task_publish_retry`` on a broker that goes away, and the broker URL from
``CELERY_BROKER_URL`` for a worker and a client in different folders."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from celeriac import Celery
from celeriac.exceptions import BrokerError
from servers import PrivateRedis, free_port
from support import WorkerProcess, write_module

TASKS = """
import pathlib, time
from datetime import datetime

from celeriac import Celery

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("stasks", broker=f"sqlite:///{DIR / 'broker.db'}", task_default_retry_delay=1)


@app.task(bind=True, max_retries=1)
def again(self):
    # request.eta is the header's ISO text, as Celery's worker gives it
    eta = datetime.fromisoformat(self.request.eta).timestamp() if self.request.eta else 0
    with (DIR / "again").open("a") as f:
        f.write(f"{self.request.retries} {time.time()} {eta}\\n")
    if self.request.retries == 0:
        raise self.retry()
    return "done"


@app.task(rate_limit="1/m")
def slow_rate(i):
    return i
"""


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    write_module(tmp_path, "stasks", TASKS)
    return tmp_path


def _client(tasks_dir: Path) -> Celery:
    return Celery("stasks", broker=f"sqlite:///{tasks_dir / 'broker.db'}", set_as_current=False)


def test_task_default_retry_delay_sets_the_retry_eta(tasks_dir: Path) -> None:
    app = _client(tasks_dir)
    with WorkerProcess(tasks_dir, "stasks", "-P", "threads", "-l", "info") as w:
        assert app.send_task("stasks.again").get(timeout=20) == "done"
        w.wait_for(r"retry: Retry in 1(\.0)?s")
    first, second = (tasks_dir / "again").read_text().splitlines()
    ran_at = float(first.split()[1])
    eta = float(second.split()[2])
    assert 0.8 <= eta - ran_at <= 1.5  # the ETA of the retry, not how long it took


def test_worker_disable_rate_limits(tasks_dir: Path) -> None:
    app = _client(tasks_dir)
    env = {"CELERIAC_WORKER_DISABLE_RATE_LIMITS": "true"}
    with WorkerProcess(tasks_dir, "stasks", "-P", "threads", env=env):
        results = [app.send_task("stasks.slow_rate", (i,)) for i in range(3)]
        # at 1/m the last would wait two minutes
        assert [r.get(timeout=15) for r in results] == [0, 1, 2]


def _unreachable(tasks_dir: Path, **env: str) -> WorkerProcess:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    return WorkerProcess(
        tasks_dir, "stasks", "-P", "threads", env={"CELERY_BROKER_URL": url, **env}
    )


def test_no_retry_on_startup_fails_at_once_saying_why(tasks_dir: Path) -> None:
    env = {"CELERIAC_BROKER_CONNECTION_RETRY_ON_STARTUP": "false"}
    worker = _unreachable(tasks_dir, **env).start(wait_ready=False)
    try:
        assert worker.wait(15) == 1
    finally:
        worker.stop()
    assert "not retried: broker_connection_retry_on_startup is False" in worker.log
    assert "retry 1" not in worker.log


def test_broker_connection_max_retries_bounds_the_start(tasks_dir: Path) -> None:
    worker = _unreachable(tasks_dir, CELERIAC_BROKER_CONNECTION_MAX_RETRIES="2")
    worker.start(wait_ready=False)
    try:
        assert worker.wait(20) == 1
    finally:
        worker.stop()
    assert "retry 1/2" in worker.log and "retry 2/2" in worker.log
    assert "gave up after 2 retries: broker_connection_max_retries=2" in worker.log


class _RestartOnRetry(logging.Handler):
    """Starts the stopped server when the client logs its first publish retry."""

    def __init__(self, server: PrivateRedis) -> None:
        super().__init__()
        self.server = server
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Cannot publish to broker"):
            self.retries += 1
            if self.retries == 1:
                self.server.start()


async def _send_and_close(app: Celery, name: str) -> None:
    try:
        await app.asend_task(name)
    finally:
        await app.close_clients()


def _queued(server: PrivateRedis) -> int:
    client = redis.Redis(port=server.port)
    try:
        return int(client.llen("celery"))
    finally:
        client.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_task_publish_retry_survives_a_broker_restart(
    private_redis: PrivateRedis, api: str
) -> None:
    policy = {"max_retries": 30, "interval_start": 0.05, "interval_step": 0.05, "interval_max": 0.2}
    app = Celery(
        "p", broker=private_redis.url, task_publish_retry_policy=policy, set_as_current=False
    )
    handler = _RestartOnRetry(private_redis)
    logger = logging.getLogger("celeriac.app")
    logger.addHandler(handler)
    try:
        app.send_task("t.first")  # connected
        private_redis.kill()
        if api == "sync":
            app.send_task("t.second")
        else:
            asyncio.run(_send_and_close(app, "t.second"))
    finally:
        logger.removeHandler(handler)
        app.close()
    assert handler.retries >= 1
    assert _queued(private_redis) == 2


def test_without_publish_retry_a_lost_broker_fails_the_send(private_redis: PrivateRedis) -> None:
    app = Celery("p", broker=private_redis.url, task_publish_retry=False, set_as_current=False)
    bounded = Celery(
        "q",
        broker=private_redis.url,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0},
        set_as_current=False,
    )
    try:
        app.send_task("t.first")
        private_redis.kill()
        with pytest.raises((OSError, BrokerError)):
            app.send_task("t.second")
        with pytest.raises((OSError, BrokerError)):
            bounded.send_task("t.third")  # two retries, then the error
    finally:
        app.close()
        bounded.close()


CLIENT = """
import sys
from etasks import add
print(add.delay(2, 3).get(timeout=15))
"""


ADD = """
from celeriac import Celery
app = Celery("{name}")


@app.task
def add(x, y):
    return x + y
"""


def test_celery_broker_url_joins_a_worker_and_a_client_in_other_folders(tmp_path: Path) -> None:
    source = ADD.format(name="etasks")
    worker_dir, client_dir = tmp_path / "worker", tmp_path / "client"
    for folder in (worker_dir, client_dir):
        folder.mkdir()
        write_module(folder, "etasks", source)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with WorkerProcess(worker_dir, "etasks", "-P", "threads", env={"CELERY_BROKER_URL": url}) as w:
        assert f"transport:   {url} ({tmp_path / 'shared.db'})" in w.log
        env = {"CELERY_BROKER_URL": url, "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-c", CLIENT],
            cwd=client_dir,
            env={**env, "PYTHONPATH": str(client_dir)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.stdout.strip() == "5", done.stderr
    assert not (worker_dir / "celeriac.sqlite3").exists()


def test_the_default_sqlite_file_is_shown_and_its_creation_said(tmp_path: Path) -> None:
    source = ADD.format(name="dtasks")
    write_module(tmp_path, "dtasks", source)
    with WorkerProcess(tmp_path, "dtasks", "-P", "threads") as w:
        assert f"sqlite:///celeriac.sqlite3 ({tmp_path / 'celeriac.sqlite3'})" in w.log
    client_dir = tmp_path / "elsewhere"
    client_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "from celeriac import Celery; Celery('c').send_task('t')"],
        cwd=client_dir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"Created the SQLite database {client_dir / 'celeriac.sqlite3'}" in done.stderr


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_no_connection_retry_stops_the_worker_when_the_broker_goes(
    tmp_path: Path, private_redis: PrivateRedis, pool: str
) -> None:
    write_module(tmp_path, "rtasks", ADD.format(name="rtasks"))
    env = {"CELERY_BROKER_URL": private_redis.url, "CELERIAC_BROKER_CONNECTION_RETRY": "false"}
    worker = WorkerProcess(tmp_path, "rtasks", "-P", pool, "-c", "1", env=env).start()
    try:
        private_redis.kill()
        assert worker.wait(20) == 1
    finally:
        worker.stop()
    assert "not reconnecting: broker_connection_retry is False" in worker.log
