"""Every long-lived connection has a deadline: a worker whose connections to the broker
are frozen (no FIN, no RST: a TCP proxy stops forwarding) notices within the probe
deadline, says so in one line per listener, resubscribes when the network is back, and
answers remote control again (ping, a broadcast revoke)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import celery
import pytest
import redis
from yarl import URL

from celeriac import Celery
from celeriac.exceptions import TaskRevokedError
from celeriac.transports.redis.resp import RespTimeoutError, parse_endpoint
from celeriac.transports.redis.resp_async import AsyncConnection
from freeze_proxy import FreezeProxy
from servers import AMQP_URL, free_port, leased_database, need_redis_server, pings
from support import WorkerProcess, close_celery_app, closing, wait_until, write_module

#: the probe interval the tests set: a dead connection is found within twice this
PROBE = 1.0

TASKS = """
import os, time
from celeriac import Celery
from celeriac.exceptions import TaskRevokedError
from celeriac.transports.redis.resp import RespTimeoutError, parse_endpoint
from celeriac.transports.redis.resp_async import AsyncConnection

app = Celery("dl", broker=os.environ["DL_BROKER"], backend=os.environ["DL_BACKEND"])
if app.conf.broker_url.startswith("redis"):
    app.conf.broker_transport_options = {"health_check_interval": PROBE}
else:
    app.conf.broker_heartbeat = PROBE * 2

@app.task(name="dl.add")
def add(x, y):
    return x + y

@app.task(name="dl.slow")
def slow(seconds):
    time.sleep(seconds)
    return seconds

@app.task(name="dl.record")
def record(n, seconds):
    import redis
    direct = redis.Redis.from_url(os.environ["DL_DIRECT"])
    direct.incr("started")
    time.sleep(seconds)
    direct.hincrby("runs", str(n), 1)
    direct.close()
    return n
"""


@pytest.fixture
def redis_url() -> Iterator[str]:
    with leased_database() as url:
        yield url


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}").geturl()


def _worker(tmp_path: Path, broker: str, backend: str, direct: str = "") -> WorkerProcess:
    write_module(tmp_path, "dltasks", TASKS.replace("PROBE", repr(PROBE)))
    env = {"DL_BROKER": broker, "DL_BACKEND": backend, "DL_DIRECT": direct}
    name = f"dl-{uuid.uuid4().hex[:8]}@%h"
    args = ("-P", "threads", "-c", "2", "-n", name, "-l", "info")
    return WorkerProcess(tmp_path, "dltasks", *args, env=env)


def _freeze_and_recover(
    worker: WorkerProcess, proxy: FreezeProxy, app: Celery, lost: str, again: str
) -> None:
    broker_url = app.broker_url
    control = app.control
    wait_until(lambda: control.ping(timeout=1), 20, "a ping answered before the freeze")
    proxy.freeze()
    frozen = time.monotonic()
    worker.wait_for(lost, 15)
    noticed = time.monotonic() - frozen
    assert noticed < 4 * PROBE + 3, f"noticed after {noticed:.1f} s:\n{worker.log}"
    # still frozen a while: reconnecting fails meanwhile, and says nothing more
    time.sleep(3 * PROBE)
    proxy.resume()
    resumed = time.monotonic()
    worker.wait_for(again, 15)
    wait_until(lambda: control.ping(timeout=1), 15, "a ping answered after the freeze")
    assert time.monotonic() - resumed < 15
    # a broadcast revoke sent now (by a Celery client: it reaches the worker only by the
    # pub/sub or fanout listener) takes effect: the revoked task does not run
    task_id = f"revoked-{uuid.uuid4().hex}"
    peer = celery.Celery("dl-peer", broker=broker_url)
    try:
        peer.control.revoke(task_id)
    finally:
        close_celery_app(peer)
    worker.wait_for(f"Remote control: revoke .*{task_id}", 10)
    result = app.send_task("dl.add", (1, 2), task_id=task_id)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=10)
    assert app.send_task("dl.add", (2, 3)).get(timeout=10) == 5
    # one line per change of state: lost once, restored once
    lines = worker.lines
    assert len([x for x in lines if re.search(lost, x)]) == 1, worker.log
    assert len([x for x in lines if re.search(again, x)]) == 1, worker.log


def test_redis_remote_control_survives_a_silent_connection_loss(
    tmp_path: Path, redis_url: str
) -> None:
    port = int(urlsplit(redis_url).port or 6379)
    with FreezeProxy(port) as proxy:
        proxied = _proxied(redis_url, proxy.port)
        app = Celery("dl-client", broker=redis_url, backend=redis_url)
        with closing(app), _worker(tmp_path, proxied, redis_url) as worker:
            _freeze_and_recover(
                worker,
                proxy,
                app,
                r"Remote control: lost .*no reply from the server",
                r"Remote control: listening on .* again after [\d.]+ s",
            )


def test_redis_tasks_that_finish_during_a_freeze_run_once(tmp_path: Path, redis_url: str) -> None:
    """Tasks finish while broker and backend are frozen: their results and acks are
    retried on the new connections, and the leases (extended meanwhile) hold, so each
    task ran once and every result is there."""
    port = int(urlsplit(redis_url).port or 6379)
    direct = redis.Redis.from_url(redis_url)
    with FreezeProxy(port) as proxy:
        proxied = _proxied(redis_url, proxy.port)
        app = Celery("dl-client", broker=redis_url, backend=redis_url)
        with closing(app), _worker(tmp_path, proxied, proxied, redis_url) as worker:
            results = [app.send_task("dl.record", (n, 1.0)) for n in range(4)]
            wait_until(lambda: int(direct.get("started") or 0) >= 2, 20, "two tasks running")
            proxy.freeze()
            worker.wait_for("Broker connection lost|Remote control: lost", 15)
            wait_until(lambda: direct.hlen("runs") >= 2, 10, "tasks done during the freeze")
            time.sleep(2 * PROBE)  # the freeze goes on: results and acks wait
            proxy.resume()
            assert sorted(r.get(timeout=20) for r in results) == [0, 1, 2, 3]
        runs = {int(k): int(v) for k, v in direct.hgetall("runs").items()}
        direct.close()
    assert runs == {n: 1 for n in range(4)}, worker.log
    # fetching, settling and extending met the same outage: one line for it, one after
    assert len([x for x in worker.lines if "Broker connection lost" in x]) == 1, worker.log
    assert len([x for x in worker.lines if "Broker connection restored after" in x]) == 1


def test_amqp_connection_loss_is_noticed_by_heartbeat(tmp_path: Path, rabbit: str) -> None:
    port = int(urlsplit(AMQP_URL).port or 5672)
    with FreezeProxy(port) as proxy:
        proxied = _proxied(rabbit, proxy.port)
        app = Celery("dl-client", broker=rabbit)
        with closing(app), _worker(tmp_path, proxied, "rpc://") as worker:
            _freeze_and_recover(
                worker,
                proxy,
                app,
                r"Remote control: lost .*missed heartbeats",
                r"Remote control: listening on .* again after [\d.]+ s",
            )


# -- "ready" only once the broker has accepted the connection ---------------------------

REFUSED_TASKS = """
import os
from celeriac import Celery

app = Celery("dl", broker=os.environ["DL_BROKER"], backend=os.environ["DL_BACKEND"])

@app.task(name="dl.add")
def add(x, y):
    return x + y
"""


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    """A private ``redis-server`` on a free port that asks for the password ``right``."""
    need_redis_server()
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            "right",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, password="right")
        wait_until(lambda: pings(client), 10, "the private redis-server")
        client.close()
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def _refused(tmp_path: Path, broker: str, backend: str, *args: str) -> WorkerProcess:
    write_module(tmp_path, "dlrefused", REFUSED_TASKS)
    env = {"DL_BROKER": broker, "DL_BACKEND": backend}
    worker = WorkerProcess(tmp_path, "dlrefused", "-l", "info", *args, env=env)
    worker.start(wait_ready=False)
    try:
        assert worker.wait(30) != 0, worker.log
    finally:
        worker.stop()
    assert "ready." not in worker.log, worker.log
    assert "retry" not in worker.log, worker.log  # refused at once, not retried
    return worker


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_wrong_redis_password_fails_at_startup(
    tmp_path: Path, redis_with_password: int, pool: str
) -> None:
    url = f"redis://:wrong@127.0.0.1:{redis_with_password}/0"
    worker = _refused(tmp_path, url, url, "-P", pool, "-c", "1")
    masked = f"redis://:**@127.0.0.1:{redis_with_password}/0"
    assert f"cannot connect to broker {masked}" in worker.log, worker.log
    assert "WRONGPASS" in worker.log and "wrong" not in worker.log.replace("WRONG", "")


def test_wrong_backend_password_fails_at_startup(
    tmp_path: Path, redis_with_password: int, redis_url: str
) -> None:
    backend = f"redis://:wrong@127.0.0.1:{redis_with_password}/0"
    worker = _refused(tmp_path, redis_url, backend, "-c", "1")
    masked = f"redis://:**@127.0.0.1:{redis_with_password}/0"
    assert f"cannot connect to the result backend {masked}" in worker.log, worker.log


def test_wrong_amqp_password_fails_at_startup(tmp_path: Path, rabbit: str) -> None:
    url = str(URL(rabbit).with_password("wrong"))
    worker = _refused(tmp_path, url, "rpc://", "-P", "solo")
    assert "cannot connect to broker amqp://guest:**@" in worker.log, worker.log
    assert "ACCESS_REFUSED" in worker.log, worker.log


def test_a_silent_redis_connection_is_dropped_within_twice_the_interval(redis_url: str) -> None:
    """The client's own deadline: an idle (pub/sub) connection is PINGed and dropped, a
    call made while frozen fails after the interval instead of the 30 s socket timeout,
    and the next call after the freeze connects again."""
    port = int(urlsplit(redis_url).port or 6379)

    async def main(proxied: str, proxy: FreezeProxy) -> None:
        endpoint = parse_endpoint(proxied, {"health_check_interval": 0.5})
        assert endpoint is not None
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[BaseException] = loop.create_future()
        idle = AsyncConnection(endpoint, push=lambda item: None, on_lost=lost.set_result)
        busy = AsyncConnection(endpoint)
        try:
            assert await idle.execute("PING") == b"PONG"
            assert await busy.execute("PING") == b"PONG"
            proxy.freeze()
            start = loop.time()
            with pytest.raises(RespTimeoutError, match="no reply from the server"):
                await busy.execute("PING")
            assert loop.time() - start < 1.5
            reason = await asyncio.wait_for(lost, 5)
            assert isinstance(reason, RespTimeoutError)
            assert loop.time() - start < 2.0  # quiet 0.5 s, then 0.5 s for the PONG
            with pytest.raises(RespTimeoutError):  # a new connection, frozen too
                await busy.execute("PING")
            proxy.resume()
            assert await busy.execute("PING") == b"PONG"
        finally:
            idle.close()
            busy.close()

    with FreezeProxy(port) as proxy:
        asyncio.run(main(_proxied(redis_url, proxy.port), proxy))


def test_the_deadline_settings() -> None:
    from celeriac.transports.amqp.broker import AMQPBroker

    def heartbeat(options: dict[str, object]) -> str:
        return URL(AMQPBroker("amqp://", options=options)._url).query["heartbeat"]

    assert heartbeat({}) == "10"  # RabbitMQ's advice is 5-20 s; Celery's default is 120
    assert heartbeat({"heartbeat": 3}) == "3"  # broker_heartbeat, through the options
    assert heartbeat({"heartbeat": 0}) == "0"  # asked for none: no heartbeat, no deadline
    default = parse_endpoint("redis://localhost/0")
    assert default is not None and default.health_check == 5.0
    given = parse_endpoint("redis://localhost/0?health_check_interval=2.5")
    assert given is not None and given.health_check == 2.5
    off = parse_endpoint("redis://localhost/0", {"health_check_interval": 0})
    assert off is not None and off.health_check is None
