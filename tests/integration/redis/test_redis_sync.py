"""The sync Redis fast path (``transports.redis.sync``): ``delay()`` publishing on the
calling thread's blocking connection and ``AsyncResult.get`` waiting on its socket, against
real Redis (a key prefix of the test's own; outage tests on a private ``redis-server``),
also over TLS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from celeriac import Celery, Middleware, signals
from celeriac._loop import loop_thread
from celeriac.exceptions import BackendError, BrokerError, TimeoutError
from celeriac.protocol import Message, build_task_message, json_dumps, result_meta
from celeriac.testing import TestWorker
from celeriac.testing.conformance import opened, run
from celeriac.transports.redis import sync as _redis_sync
from celeriac.transports.redis.broker import RedisBroker
from celeriac.transports.redis.layout import publish_group
from celeriac.transports.redis.resp import (
    RespConnectionError,
    RespError,
    parse_endpoint,
)
from celeriac.transports.redis.resp_blocking import Connection
from celeriac.transports.redis.scripts import script
from servers import REDIS_URL, PrivateRedis, free_port, require_redis, scratch_prefix
from support import wait_until


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_prefix("test-redis-sync") as value:
        yield value


def _conn(url: str, **options: Any) -> Connection:
    endpoint = parse_endpoint(url, options)
    assert endpoint is not None
    return Connection(endpoint)


# --------------------------------------------------------------------------- publishing


def _dump(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` (prefix taken off) with its type and content."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        if kind == b"list":
            value: Any = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.get(key)
        out[key[len(prefix) :]] = (kind, value)
    return out


def _messages() -> list[tuple[str, Message, int, float | None]]:
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    items = [
        ("celery", build_task_message("t.add", (1, 2), queue="celery"), 0, None),
        ("celery", build_task_message("t.add", ("\u00e9", b"\xff"), queue="celery"), 7, None),
        ("other", build_task_message("t.mul", (3,), kwargs={"k": [1]}, queue="other"), 4, None),
        ("celery", build_task_message("t.later", (), queue="celery"), 0, 4102444800.0),
        ("celery", build_task_message("t.eta", (), eta=eta, queue="celery"), 9, eta.timestamp()),
    ]
    for n, (_, message, _, _) in enumerate(items):
        message.properties["delivery_tag"] = f"tag-{n}"  # else a fresh uuid per encoding
    return items


def test_sync_publish_puts_the_same_bytes_as_the_async_path(prefix: str) -> None:
    client = require_redis()
    items = _messages()
    sync_prefix, async_prefix = prefix + "sync:", prefix + "async:"
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={sync_prefix}")
    try:
        publisher = _redis_sync.publisher(app)
        assert publisher is not None
        for queue, message, priority, not_before in items:
            publisher.publish(queue, message, priority, not_before)

        async def main() -> None:
            async with opened(
                RedisBroker(REDIS_URL, options={"global_keyprefix": async_prefix})
            ) as b:
                for queue, message, priority, not_before in items:
                    await b.publish(queue, message, priority=priority, not_before=not_before)

        run(main())
        synced, asynced = _dump(client, sync_prefix), _dump(client, async_prefix)
        assert synced == asynced
        assert len(synced[b"celery\x06\x169"][1]) == 1  # eta: in the list (Celery's way)
        assert b"celeriac.delayed.celery" in synced
    finally:
        app.close()
        client.close()


class _Recorder(Middleware):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str]] = []

    def before_publish(self, app: Any, message: Message, queue: str) -> None:
        message.headers["stamped"] = "yes"
        self.calls.append(("before", message.task_id, queue))

    def after_publish(self, app: Any, message: Message, queue: str) -> None:
        self.calls.append(("after", message.task_id, queue))


def test_send_task_fast_path_runs_middleware_and_signals(prefix: str) -> None:
    client = require_redis()
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")
    recorder = _Recorder()
    app.add_middleware(recorder)
    seen: list[Any] = []

    def on_publish(sender: Any = None, headers: Any = None, **_: Any) -> None:
        seen.append((sender, headers["id"]))

    signals.before_task_publish.connect(on_publish)
    try:
        assert _redis_sync.publisher(app) is not None
        result = app.send_task("t.add", (1, 2), queue="fast")
        assert recorder.calls == [("before", result.id, "fast"), ("after", result.id, "fast")]
        assert seen == [("t.add", result.id)]
        (raw,) = client.lrange(f"{prefix}fast", 0, -1)
        assert b'"stamped": "yes"' in raw
    finally:
        signals.before_task_publish.disconnect(on_publish)
        app.close()
        client.close()


def test_general_path_where_the_fast_one_does_not_apply(prefix: str) -> None:
    client = require_redis()
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")
    try:

        async def inside_a_loop() -> str:
            assert _redis_sync.publisher(app) is None
            assert _redis_sync.waiter(app) is None
            return app.send_task("t.add", (1,), queue="inloop").id  # the loop-thread path

        task_id = asyncio.run(inside_a_loop())
        (raw,) = client.lrange(f"{prefix}inloop", 0, -1)
        assert task_id.encode() in raw
        assert _redis_sync.publisher(Celery("s", broker="sentinel://127.0.0.1:1")) is None
        assert _redis_sync.publisher(Celery("m", broker="memory://")) is None
        assert _redis_sync.waiter(Celery("m", broker="memory://")) is None
        other = Celery("q", broker=f"{REDIS_URL}?global_keyprefix={prefix}&unheard_of=1")
        assert _redis_sync.publisher(other) is None
        app.conf["broker_url"] = "memory://"  # settings changed: the fast path follows
        assert _redis_sync.publisher(app) is None
    finally:
        loop_thread().run(app.close_clients())  # where send_task ran inside the loop
        app.close()
        client.close()


def test_publish_errors_are_broker_errors(private_redis: PrivateRedis) -> None:
    app = Celery(
        "resp", broker=private_redis.url, broker_transport_options={"socket_connect_timeout": 2}
    )
    try:
        app.send_task("t.add", (1,))
        private_redis.kill()
        with pytest.raises(BrokerError) as info:
            app.send_task("t.add", (2,))
        text = str(info.value)
        assert text.startswith(f"Redis broker {private_redis.url}: ConnectionError: ")
        private_redis.start()
        app.send_task("t.add", (3,))
        with redis.Redis(port=private_redis.port) as check:
            assert check.llen("celery") == 2
    finally:
        app.close()


def test_a_refused_publish_is_a_broker_error_on_both_paths(prefix: str) -> None:
    client = require_redis()
    client.set(prefix + "celery", "not a list")  # the queue's key holds a string
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")
    try:
        with pytest.raises(BrokerError, match="WRONGTYPE"):
            app.send_task("t.add", (1,))  # the sync path: MULTI/EXEC on a socket

        async def main() -> None:
            try:
                with pytest.raises(BrokerError, match="WRONGTYPE"):
                    await app.asend_task("t.add", (2,))  # the worker's connection
            finally:
                await app.close_clients()

        run(main())
        client.delete(prefix + "celery")
        app.send_task("t.add", (3,))  # the connection is still in step
        assert client.llen(prefix + "celery") == 1
        assert client.llen(prefix + "celeriac.notify.celery") == 1
    finally:
        app.close()
        client.close()


# --------------------------------------------------------------------------- waiting


def _store(client: redis.Redis, key_prefix: str, task_id: str, meta: dict[str, Any]) -> None:
    key = f"{key_prefix}celery-task-meta-{task_id}"
    text = json_dumps(meta)
    with client.pipeline(transaction=True) as pipe:
        pipe.set(key, text, ex=60)
        pipe.publish(key, text)
        pipe.execute()


def _subscribed(client: redis.Redis, channel: str) -> bool:
    return dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) > 0


def test_get_waits_on_the_socket(prefix: str) -> None:
    client = require_redis()
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")
    try:
        assert _redis_sync.waiter(app) is not None
        ready = app.AsyncResult("done-before")
        _store(client, prefix, ready.id, result_meta(ready.id, "SUCCESS", [1, "a"]))
        assert ready.get(timeout=5) == [1, "a"]  # the GET sees it

        later = app.AsyncResult("done-later")
        channel = f"{prefix}celery-task-meta-{later.id}"

        def finish() -> None:
            wait_until(lambda: _subscribed(client, channel), 10, "the subscription")
            _store(client, prefix, later.id, result_meta(later.id, "STARTED", None))
            _store(client, prefix, later.id, result_meta(later.id, "SUCCESS", 42))

        thread = threading.Thread(target=finish)
        thread.start()
        assert later.get(timeout=10) == 42  # STARTED is not ready: waits on
        thread.join()
        assert later.state == "SUCCESS"

        pending = app.AsyncResult("never")
        with pytest.raises(TimeoutError, match=r"task never did not finish within 0.2s"):
            pending.get(timeout=0.2)
        with pytest.raises(TimeoutError, match=r"within 0s"):
            pending.get(timeout=0)
        assert ready.get(timeout=0) == [1, "a"]
        # the previous channel is dropped with the next wait
        wait_until(lambda: not _subscribed(client, channel), 10, "the unsubscription")
    finally:
        app.close()
        client.close()


def test_get_with_a_worker_propagates_failures(prefix: str) -> None:
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def boom(text: str) -> None:
        raise KeyError(text)

    try:
        with TestWorker(app):
            assert [add.delay(i, i).get(timeout=10) for i in range(20)] == [
                2 * i for i in range(20)
            ]
            failing = boom.delay("nope")
            with pytest.raises(KeyError, match="nope"):
                failing.get(timeout=10)
            assert isinstance(boom.delay("x").get(timeout=10, propagate=False), KeyError)
            results = [add.delay(i, 1) for i in range(5)]
            assert [r.get(timeout=10) for r in reversed(results)] == [5, 4, 3, 2, 1]
    finally:
        app.close()


def test_get_survives_a_restart_and_reports_an_outage(private_redis: PrivateRedis) -> None:
    app = Celery("resp", broker=private_redis.url)
    client = redis.Redis(port=private_redis.port)
    try:
        first = app.AsyncResult("r1")
        _store(client, "", first.id, result_meta(first.id, "SUCCESS", 1))
        assert first.get(timeout=5) == 1
        client.close()
        private_redis.kill()
        with pytest.raises(BackendError, match=r"^Redis result backend redis://.*ConnectionError"):
            app.AsyncResult("r2").get(timeout=0.3)
        private_redis.start()
        client = redis.Redis(port=private_redis.port)
        second = app.AsyncResult("r2")
        _store(client, "", second.id, result_meta(second.id, "SUCCESS", 2))
        assert second.get(timeout=5) == 2  # the stale connection was replaced
    finally:
        client.close()
        app.close()


def test_get_survives_its_connection_being_killed(prefix: str) -> None:
    client = require_redis()
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")
    try:
        waiter = _redis_sync.waiter(app)
        assert waiter is not None
        conn_id = waiter._link.connection().execute("CLIENT", "ID")
        result = app.AsyncResult("killed")
        channel = f"{prefix}celery-task-meta-{result.id}"

        def kill_then_finish() -> None:
            wait_until(lambda: _subscribed(client, channel), 10, "the subscription")
            assert client.client_kill_filter(_id=conn_id) == 1
            wait_until(lambda: _subscribed(client, channel), 10, "the new subscription")
            _store(client, prefix, result.id, result_meta(result.id, "SUCCESS", "back"))

        thread = threading.Thread(target=kill_then_finish)
        thread.start()
        assert result.get(timeout=10) == "back"
        thread.join()
        assert str(conn_id) not in {c["id"] for c in client.client_list()}
    finally:
        app.close()
        client.close()


# --------------------------------------------------------------------------- processes


def test_forked_child_makes_its_own_connection(prefix: str) -> None:
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")
    client = require_redis()
    try:
        app.send_task("t.add", (0,))
        publisher = _redis_sync.publisher(app)
        assert publisher is not None
        conn = publisher._link.connection()
        parent_id = conn.execute("CLIENT", "ID")
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: publish, report its connection's id
            code = 1
            try:
                app.send_task("t.add", (1,))
                child_id = publisher._link.connection().execute("CLIENT", "ID")
                os.write(write_end, b"%d" % child_id)
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            child_id = int(pipe.read() or b"0")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert child_id not in (0, parent_id)
        assert conn.execute("CLIENT", "ID") == parent_id  # the parent's is unharmed
        app.send_task("t.add", (2,))
        assert client.llen(f"{prefix}celery") == 3
    finally:
        app.close()
        client.close()


def test_close_closes_this_threads_connections(prefix: str) -> None:
    app = Celery("resp", broker=f"{REDIS_URL}?global_keyprefix={prefix}")
    try:
        app.send_task("t.add", (0,))
        publisher = _redis_sync.publisher(app)
        waiter = _redis_sync.waiter(app)
        assert publisher is not None and waiter is not None
        with pytest.raises(TimeoutError):
            app.AsyncResult("x").get(timeout=0.01)
        conns = [publisher._link.connection(), waiter._link.connection()]
        assert all(c.connected for c in conns)
        app.close()
        assert not any(c.connected for c in conns)
        app.send_task("t.add", (1,))  # reopens
        assert publisher._link.connection().connected
    finally:
        app.close()


def test_publisher_reads_settings_as_the_broker_does() -> None:
    assert (_redis_sync._script("publish").sha.decode(), _redis_sync._script("publish").text) == (
        script("publish").sha,
        script("publish").text.encode(),
    )
    items = _messages()
    cases: list[tuple[str, dict[str, Any]]] = [
        (f"{REDIS_URL}?global_keyprefix=01", {}),
        (f"{REDIS_URL}?global_keyprefix=a.b&eta_in_queue=false&socket_timeout=3", {}),
        ("redis://:pw@127.0.0.1:1/2?polling_interval=0.5", {"global_keyprefix": "x:"}),
        ("unix:///tmp/x.sock?db=1&eta_in_queue=no", {"visibility_timeout": 10}),
    ]
    for url, options in cases:
        app = Celery("resp", broker=url, broker_transport_options=options)
        publisher = _redis_sync.publisher(app)
        assert publisher is not None, url
        broker = RedisBroker(url, options=options)
        assert publisher.url == broker.sync_target()[0]
        assert publisher.prefix == broker.prefix  # the binding's keys too
        for queue, message, priority, not_before in items:
            group = publish_group(
                queue, message, priority, not_before, eta_visible=broker._eta_in_queue
            )  # what the broker's publish_many sends
            assert publisher.arguments(queue, message, priority, not_before) == [
                broker.prefix,
                *group,
            ]
    for url in (f"{REDIS_URL}?priority_order=sideways", f"{REDIS_URL}?visibility_timeout=soon"):
        assert _redis_sync.publisher(Celery("resp", broker=url)) is None  # general path: error


def test_sync_path_needs_no_redis_py(prefix: str, tmp_path: Path) -> None:
    code = f"""
import sys
from celeriac import Celery
app = Celery("resp", broker="{REDIS_URL}?global_keyprefix={prefix}")
result = app.send_task("t.add", (1, 2))
print(type(result).__name__)
app.close()
print(sorted(name for name in sys.modules if name.split(".")[0] == "redis"))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["AsyncResult", "[]"], out.stderr
    with require_redis() as client:
        assert client.llen(f"{prefix}celery") == 1


class TLSRedis:
    """``redis-server`` serving TLS only, with a self-signed certificate for localhost."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.cert = directory / "cert.pem"
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                str(directory / "key.pem"),
                "-out",
                str(self.cert),
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> TLSRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--save",
                "",
                "--tls-cert-file",
                str(self.cert),
                "--tls-key-file",
                str(self.directory / "key.pem"),
                "--tls-auth-clients",
                "no",
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        conn = self.connection()
        wait_until(lambda: pings(conn), 10, "the TLS redis-server")
        conn.close()
        return self

    def connection(self, **kwargs: Any) -> Connection:
        endpoint = parse_endpoint(f"rediss://localhost:{self.port}/0", {"ssl_ca_certs": self.cert})
        assert endpoint is not None
        return Connection(endpoint, **kwargs)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def pings(conn: Connection) -> bool:
    try:
        return bool(conn.execute("PING") == b"PONG")
    except RespError:
        return False


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TLSRedis]:
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("needs redis-server and openssl on PATH")
        pytest.skip("needs redis-server and openssl on PATH")
    server = TLSRedis(tmp_path)
    try:
        yield server.start()
    finally:
        server.kill()


def test_tls_publish_get_and_restart(tls_server: TLSRedis) -> None:
    app = Celery(
        "resp",
        broker=f"rediss://localhost:{tls_server.port}/0",
        broker_transport_options={"ssl_ca_certs": str(tls_server.cert)},
        result_backend_transport_options={"ssl_ca_certs": str(tls_server.cert)},
    )
    check = tls_server.connection()
    try:
        assert _redis_sync.publisher(app) is not None and _redis_sync.waiter(app) is not None
        sent = app.send_task("t.add", (1, 2))
        assert check.execute("LLEN", "celery") == 1
        channel = f"celery-task-meta-{sent.id}"
        text = json_dumps(result_meta(sent.id, "SUCCESS", 3))

        def finish() -> None:
            conn = tls_server.connection()
            wait_until(lambda: conn.execute("PUBSUB", "NUMSUB", channel)[1] > 0, 10, "subscribe")
            conn.pipeline([("SET", channel, text), ("PUBLISH", channel, text)])
            conn.close()

        thread = threading.Thread(target=finish)
        thread.start()
        assert sent.get(timeout=10) == 3
        thread.join()
        with pytest.raises(TimeoutError):
            app.AsyncResult("never").get(timeout=0.05)
        tls_server.kill()
        tls_server.start()  # idle TLS connections to the old server are replaced
        app.send_task("t.add", (3, 4))
        with pytest.raises(TimeoutError):
            app.AsyncResult("never").get(timeout=0.05)
        fresh = tls_server.connection()
        assert fresh.execute("LLEN", "celery") == 1  # no persistence: only the new one
        fresh.close()
        bad = parse_endpoint(f"rediss://localhost:{tls_server.port}/0")  # system CAs only
        assert bad is not None
        with pytest.raises(RespConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            Connection(bad).execute("PING")
    finally:
        check.close()
        app.close()
