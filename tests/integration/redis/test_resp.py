"""The sync Redis fast paths: the RESP codec and blocking connection (``transports.redis.resp``),
the sync publisher and result waiter (``transports.redis.sync``), against real Redis.

Tests on the shared server use their own key prefix; AUTH, NOSCRIPT and restart tests
run a private ``redis-server`` (see ``PrivateRedis`` in ``test_redis``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import hiredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac import Celery, Middleware, signals
from celeriac._loop import loop_thread
from celeriac.exceptions import BackendError, BrokerError, TimeoutError
from celeriac.protocol import Message, build_task_message, json_dumps, new_id, result_meta
from celeriac.testing import TestWorker
from celeriac.testing.conformance import opened, run
from celeriac.transports.redis import resp_blocking as _resp
from celeriac.transports.redis import sync as _redis_sync
from celeriac.transports.redis.broker import RedisBroker
from celeriac.transports.redis.layout import publish_group
from celeriac.transports.redis.resp import (
    NEED_DATA,
    Endpoint,
    ProtocolError,
    ReplyError,
    RespConnectionError,
    RespError,
    RespTimeoutError,
    encode_command,
    encode_commands,
    encode_reply,
    make_reader,
    parse_endpoint,
)
from celeriac.transports.redis.resp_blocking import Connection, Script
from celeriac.transports.redis.scripts import script
from servers import REDIS_URL, PrivateRedis, free_port, require_redis, scratch_prefix
from support import wait_until

#: Unicode surrogates cannot be encoded: keep them out of generated text
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)

# --------------------------------------------------------------------------- codec


def test_encode_command_bytes() -> None:
    assert encode_command("SET", "k\u00e9", b"\x00v", 5, 1.5) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n\x00v\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    )
    assert encode_commands([("PING",), ("GET", "a")]) == (
        b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
    )
    assert encode_command("X", bytearray(b"ab"), memoryview(b"c")) == (
        b"*3\r\n$1\r\nX\r\n$2\r\nab\r\n$1\r\nc\r\n"
    )
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)
    with pytest.raises(TypeError):
        encode_command("SET", "k", None)  # type: ignore[arg-type]


def _reply_values() -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.binary(max_size=40)
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.text(
            alphabet=st.characters(blacklist_categories=SURROGATES, blacklist_characters="\r\n"),
            max_size=20,
        ).map(ReplyError)
    )
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=5), max_leaves=25)


def _comparable(value: Any) -> Any:
    if isinstance(value, ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _parse_all(reader: Any, data: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``data`` in pieces (cut at ``cuts``) and collect every reply."""
    out: list[Any] = []
    last = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        reader.feed(data[last:cut])
        last = cut
        while (reply := reader.gets()) is not NEED_DATA:
            out.append(reply)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_reply_values(), min_size=1, max_size=4), st.lists(st.integers(0, 10**6)))
def test_the_reader_reads_what_the_encoder_wrote(values: list[Any], cuts: list[int]) -> None:
    data = b"".join(encode_reply(v) for v in values)
    expected = [_comparable(v) for v in values]
    assert [_comparable(v) for v in _parse_all(make_reader(), data, cuts)] == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=30) | st.text(max_size=10) | st.integers(-999, 999), min_size=1))
def test_commands_parse_as_arrays_of_bulk_strings(args: list[Any]) -> None:
    reader = make_reader()
    reader.feed(encode_command(*args))
    as_bytes = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    assert reader.gets() == as_bytes


def test_resp3_types_as_hiredis_reads_them() -> None:
    data = (
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n_\r\n%2\r\n+a\r\n:1\r\n$1\r\nb\r\n*2\r\n:1\r\n_\r\n"
        b"~2\r\n:1\r\n:2\r\n,1.5\r\n#t\r\n#f\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n"
        b"-WRONGTYPE Operation against a key\r\n*-1\r\n$-1\r\n*0\r\n$0\r\n\r\n"
    )
    ours = _parse_all(make_reader(), data, [1, 7, 30, 31, 80])
    theirs = _parse_all(hiredis.Reader(replyError=ReplyError, notEnoughData=NEED_DATA), data, [])
    assert [_comparable(v) for v in ours] == [_comparable(v) for v in theirs]
    assert ours[0] == [b"message", b"ch", b"x"]
    assert ours[2] == {b"a": 1, b"b": [1, None]}
    assert isinstance(ours[9], ReplyError) and ours[9].code == "WRONGTYPE"


def test_protocol_errors_and_partial_input() -> None:
    reader = make_reader()
    reader.feed(b"$5\r\nab")
    assert reader.gets() is NEED_DATA
    reader.feed(b"cde\r\n:7\r")
    assert reader.gets() == b"abcde"
    assert reader.gets() is NEED_DATA
    reader.feed(b"\n")
    assert reader.gets() == 7
    for bad in (b"?what\r\n", b"$x\r\n"):  # (hiredis does not check a bulk's CRLF)
        reader = make_reader()
        reader.feed(bad)
        with pytest.raises(ProtocolError):
            reader.gets()


def test_parse_endpoint() -> None:
    ep = parse_endpoint("redis://alice:s%40cret@example.com:6380/4", {"socket_timeout": 2})
    assert ep == Endpoint(
        host="example.com", port=6380, username="alice", password="s@cret", db=4,
        socket_timeout=2.0,
    )  # fmt: skip
    ep = parse_endpoint("redis://:pw@h/0?db=2&socket_connect_timeout=0.5&socket_keepalive=off")
    assert ep is not None
    assert (ep.password, ep.username, ep.db, ep.connect_timeout, ep.keepalive) == (
        "pw", None, 2, 0.5, False,
    )  # fmt: skip
    ep = parse_endpoint("unix:///tmp/r.sock?db=3")
    assert ep is not None and (ep.path, ep.db) == ("/tmp/r.sock", 3)
    ep = parse_endpoint("redis+socket:///tmp/r.sock")
    assert ep is not None and ep.path == "/tmp/r.sock"
    ep = parse_endpoint("rediss://h:1/0?ssl_cert_reqs=none")
    assert ep is not None and ep.tls and ep.ssl_context().check_hostname is False
    assert parse_endpoint("sentinel://h:26379") is None
    assert parse_endpoint("redis://h/0?unheard_of=1") is None  # redis-py keeps it
    assert parse_endpoint("redis://h/0?protocol=3") is None


# --------------------------------------------------------------------------- servers


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("needs the redis-server binary on PATH")
        pytest.skip("needs the redis-server binary on PATH")
    server = PrivateRedis(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_prefix("test-resp") as value:
        yield value


def _conn(url: str, **options: Any) -> Connection:
    endpoint = parse_endpoint(url, options)
    assert endpoint is not None
    return Connection(endpoint)


def test_connection_commands_and_pipelining(prefix: str) -> None:
    conn = _conn(REDIS_URL)
    try:
        assert conn.execute("PING") == b"PONG"
        replies = conn.pipeline(
            [("SET", prefix + "a", "1"), ("INCR", prefix + "a"), ("LPUSH", prefix + "a", "x"),
             ("GET", prefix + "a"), ("GET", prefix + "missing"), ("LRANGE", prefix + "none", 0, -1)]
        )  # fmt: skip
        assert replies[:2] == [b"OK", 2]
        assert isinstance(replies[2], ReplyError) and replies[2].code == "WRONGTYPE"
        assert replies[3:] == [b"2", None, []]
        with pytest.raises(ReplyError, match="unknown command"):
            conn.execute("NO-SUCH-COMMAND")
        assert conn.execute("GET", prefix + "a") == b"2"  # still in step after the error
        big = os.urandom(300_000)
        assert conn.execute("SET", prefix + "big", big) == b"OK"
        assert conn.execute("GET", prefix + "big") == big
    finally:
        conn.close()


def test_replies_are_polled_for_only_while_polling_pays(prefix: str) -> None:
    conn = _conn(REDIS_URL)
    try:
        for _ in range(10):  # a near server: every reply is caught polling
            assert conn.execute("PING") == b"PONG"
        assert conn._misses == 0 and conn._rest == 0
        for _ in range(_resp._SPIN_MISSES):  # replies later than the polling lasts
            assert conn.execute("BLPOP", prefix + "empty", 0.01) is None
        assert conn._rest == _resp._SPIN_REST  # so the next reads sleep at once
        assert conn.execute("PING") == b"PONG"
        assert conn._rest == _resp._SPIN_REST - 1
    finally:
        conn.close()


def test_auth_and_select(private_server: PrivateRedis) -> None:
    admin = redis.Redis(port=private_server.port)
    try:
        admin.acl_setuser("alice", enabled=True, passwords=["+s3cret"], keys=["*"],
                          channels=["*"], commands=["+@all"])  # fmt: skip
        base = f"127.0.0.1:{private_server.port}"
        for resp3 in (False, True):
            endpoint = parse_endpoint(f"redis://alice:s3cret@{base}/3")
            assert endpoint is not None
            conn = Connection(endpoint, resp3=resp3)
            assert conn.execute("SET", "who", f"alice-{resp3}") == b"OK"
            assert conn.execute("ACL", "WHOAMI") == b"alice"
            conn.close()
            assert (
                redis.Redis(port=private_server.port, db=3).get("who") == f"alice-{resp3}".encode()
            )
        admin.config_set("requirepass", "topsecret")
        conn = _conn(f"redis://:topsecret@{base}/2")
        assert conn.execute("CLIENT", "INFO").split(b" db=")[1].startswith(b"2 ")
        conn.close()
        wrong = _conn(f"redis://alice:nope@{base}/0")
        with pytest.raises(RespConnectionError, match="refused the connection: WRONGPASS") as info:
            wrong.execute("PING")
        assert info.value.kind == "ConnectionError" and not wrong.connected
    finally:
        admin.close()


def test_noscript_falls_back_to_eval(private_server: PrivateRedis) -> None:
    conn = _conn(private_server.url)
    lua = Script("return ARGV[1] .. '!'", "")
    lua = Script("return ARGV[1] .. '!'", conn.execute("SCRIPT", "LOAD", lua.text).decode())
    assert lua.run(conn, ["a"]) == b"a!"
    conn.execute("SCRIPT", "FLUSH")
    assert lua.run(conn, ["b"], before=[("SET", "k", "v")]) == b"b!"  # NOSCRIPT -> EVAL
    assert conn.execute("SCRIPT", "EXISTS", lua.sha) == [1]  # EVAL cached it again
    assert lua.run(conn, ["c"]) == b"c!"
    with pytest.raises(ReplyError):
        Script("return redis.call('NOPE')", "0" * 40).run(conn, [])
    conn.close()


def test_reconnects_after_a_server_restart(private_server: PrivateRedis) -> None:
    conn = _conn(private_server.url, socket_connect_timeout=2)
    resp3 = Connection(conn.endpoint, resp3=True)
    assert conn.execute("SET", "k", "1") == b"OK"
    assert resp3.execute("GET", "k") == b"1"
    first = conn.execute("CLIENT", "ID")
    private_server.kill()
    with pytest.raises(RespConnectionError) as info:
        conn.execute("GET", "k")  # the poll sees EOF, reconnecting finds no server
    assert info.value.kind == "ConnectionError" and "connecting to" in str(info.value)
    private_server.start()
    # idle connections to the old server must not fail a call: checked before reuse
    assert conn.execute("GET", "k") == b"1"
    assert resp3.execute("GET", "k") == b"1"
    assert conn.execute("CLIENT", "ID") != first
    private_server.kill()
    private_server.start()
    assert conn.execute("GET", "k") == b"1"
    conn.close()
    resp3.close()


def test_socket_timeout(prefix: str) -> None:
    conn = _conn(REDIS_URL, socket_timeout=0.2)
    try:
        with pytest.raises(RespTimeoutError, match="Timeout reading"):
            conn.execute("BLPOP", prefix + "nothing", 5)  # the server answers in 5 s
        assert not conn.connected  # its reply would come later: out of step, dropped
        assert conn.execute("PING") == b"PONG"
        assert conn.execute("BLPOP", prefix + "nothing", 0.05) is None  # within the timeout
    finally:
        conn.close()


def test_unix_socket(private_server: PrivateRedis) -> None:
    for url in (f"unix://{private_server.socket}?db=1", f"redis+socket://{private_server.socket}"):
        conn = _conn(url)
        assert conn.execute("SET", "u", url) == b"OK"
        assert conn.execute("GET", "u") == url.encode()
        conn.close()


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


def test_publish_errors_are_broker_errors(private_server: PrivateRedis) -> None:
    app = Celery("resp", broker=private_server.url, broker_transport_options={
        "socket_connect_timeout": 2})  # fmt: skip
    try:
        app.send_task("t.add", (1,))
        private_server.kill()
        with pytest.raises(BrokerError) as info:
            app.send_task("t.add", (2,))
        text = str(info.value)
        assert text.startswith(f"Redis broker {private_server.url}: ConnectionError: ")
        private_server.start()
        app.send_task("t.add", (3,))
        with redis.Redis(port=private_server.port) as check:
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


def test_get_survives_a_restart_and_reports_an_outage(private_server: PrivateRedis) -> None:
    app = Celery("resp", broker=private_server.url)
    client = redis.Redis(port=private_server.port)
    try:
        first = app.AsyncResult("r1")
        _store(client, "", first.id, result_meta(first.id, "SUCCESS", 1))
        assert first.get(timeout=5) == 1
        client.close()
        private_server.kill()
        with pytest.raises(BackendError, match=r"^Redis result backend redis://.*ConnectionError"):
            app.AsyncResult("r2").get(timeout=0.3)
        private_server.start()
        client = redis.Redis(port=private_server.port)
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


def test_errors_carry_redis_py_type_names() -> None:
    assert RespConnectionError("x").kind == "ConnectionError"
    assert ReplyError("ERR x").kind == "ResponseError"
    assert issubclass(ReplyError, RespError)
    assert script("publish").sha  # the sync publisher runs the same script


def test_script_pack_and_ids() -> None:
    lua = Script("return 1", "a" * 40)
    args: list[Any] = ["p", "q\u00e9", 3, 1.5, b"\x00raw"]
    assert lua.pack(*args) == encode_command(*lua.command(*args))
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in list(ids)[:50]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


class TLSRedis:
    """``redis-server`` serving TLS only, with a self-signed certificate for localhost."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.cert = directory / "cert.pem"
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(directory / "key.pem"), "-out", str(self.cert),
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self) -> TLSRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--save", "",
             "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.directory / "key.pem"),
             "--tls-auth-clients", "no", "--bind", "127.0.0.1", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
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
