"""celeriac's own Redis client (``celeriac.transports.redis.resp_async``): pipelining,
pub/sub pushes and their reconnection, and Sentinel (master resolution, a failover, the
sentinels' password), against private ``redis-server`` processes started here (and
stopped by their PIDs). redis-py serves only as the test's independent client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from celeriac import Celery
from celeriac.exceptions import BrokerError, ImproperlyConfigured
from celeriac.protocol import build_task_message, result_meta
from celeriac.testing.conformance import message, number, opened, run
from celeriac.transports import close_sync, sync_publisher, sync_waiter
from celeriac.transports.redis import sync as _redis_sync
from celeriac.transports.redis.backend import RedisBackend
from celeriac.transports.redis.broker import RedisBroker
from celeriac.transports.redis.resp import (
    PUSH,
    ReplyError,
    RespConnectionError,
    Sentinels,
    parse_endpoint,
    parse_target,
)
from celeriac.transports.redis.resp_async import AsyncConnection, resolve_master
from servers import (
    REDIS_URL,
    PrivateRedis,
    PrivateSentinel,
    free_port,
    need_redis_server,
    require_redis,
)
from support import TLSProxy, wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    need_redis_server()
    started = PrivateRedis(tmp_path).start()
    try:
        yield started
    finally:
        started.kill()


def _endpoint(url: str) -> Any:
    endpoint = parse_endpoint(url)
    assert endpoint is not None
    return endpoint


# --------------------------------------------------------------------------- async driver


def test_async_pipelining_errors_and_reconnect(server: PrivateRedis) -> None:
    async def main() -> None:
        conn = AsyncConnection(_endpoint(server.url))
        try:
            replies = await conn.pipeline(
                [("SET", "k", "1"), ("INCR", "k"), ("LPUSH", "k", "x"), ("GET", "k")]
            )
            assert replies[:2] == [b"OK", 2] and replies[3] == b"2"
            assert isinstance(replies[2], ReplyError) and replies[2].code == "WRONGTYPE"
            with pytest.raises(ReplyError, match="unknown command"):
                await conn.execute("NO-SUCH-COMMAND")
            # concurrent callers share the connection, each gets its own replies
            got = await asyncio.gather(*(conn.execute("ECHO", str(i)) for i in range(50)))
            assert got == [str(i).encode() for i in range(50)]
            first = await conn.execute("CLIENT", "ID")
            server.kill()
            with pytest.raises(RespConnectionError):
                await conn.execute("GET", "k")
            server.start()  # append-only: the key survived
            assert await conn.execute("GET", "k") == b"2"  # the next call reconnects
            assert await conn.execute("CLIENT", "ID") != first
        finally:
            conn.close()

    run(main())


def test_async_pubsub_pushes_and_reconnect(server: PrivateRedis) -> None:
    admin = redis.Redis(port=server.port)

    async def main() -> None:
        pushes: asyncio.Queue[list[Any]] = asyncio.Queue()
        losses: list[BaseException] = []
        conn = AsyncConnection(_endpoint(server.url), push=pushes.put_nowait, on_lost=losses.append)
        try:
            for attempt in range(2):
                # SUBSCRIBE answers with a push only; GET on the subscribed connection (RESP3)
                # runs after the subscription is active
                assert await conn.pipeline([("SUBSCRIBE", "ch")], replies=0) == []
                assert await conn.execute("GET", "missing") is None
                if PUSH is not list:  # hiredis >= 3.2 tells pushes from array replies
                    assert await conn.execute("LRANGE", "missing", 0, -1) == []
                assert await asyncio.wait_for(pushes.get(), 5) == [b"subscribe", b"ch", 1]
                assert admin.publish("ch", f"hello {attempt}") == 1
                assert await asyncio.wait_for(pushes.get(), 5) == [
                    b"message",
                    b"ch",
                    f"hello {attempt}".encode(),
                ]
                if attempt == 0:
                    assert admin.client_kill_filter(_type="pubsub") == 1
                    await asyncio.to_thread(wait_until, lambda: losses, 5, "the loss noticed")
                    assert isinstance(losses[0], RespConnectionError)
                    assert not conn.connected  # the next call connects (and subscribes) anew
            assert len(losses) == 1
        finally:
            conn.close()

    try:
        run(main())
    finally:
        admin.close()


def test_wrong_password_is_a_clear_error(server: PrivateRedis) -> None:
    admin = redis.Redis(port=server.port)
    admin.config_set("requirepass", "s3cret")
    admin.close()

    async def main() -> None:
        url = f"redis://:nope@127.0.0.1:{server.port}/0"
        conn = AsyncConnection(_endpoint(url))
        with pytest.raises(RespConnectionError, match="refused the connection: WRONGPASS"):
            await conn.execute("PING")
        broker = RedisBroker(url)
        with pytest.raises(
            BrokerError, match=r"Redis broker .*AuthenticationError.*WRONGPASS"
        ) as info:
            await broker.connect()
        assert info.value.refused  # not retried at start-up
        await broker.close()

    run(main())


def test_urls_the_client_cannot_use_are_refused_clearly() -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown option"):
        parse_target("redis://h/0?unheard_of=1", {})
    with pytest.raises(ImproperlyConfigured, match="master's name"):
        parse_target("sentinel://h:26379", {})
    with pytest.raises(ImproperlyConfigured, match="sentinel_kwargs"):
        parse_target("sentinel://h:1", {"master_name": "m", "sentinel_kwargs": {"x": 1}})
    with pytest.raises(ImproperlyConfigured):
        RedisBroker("sentinel://h:26379")
    spec = parse_target(
        "sentinel://:pw@h1:1/2;sentinel://h2",
        {"master_name": "m", "socket_timeout": 3, "sentinel_kwargs": {"password": "sp"}},
    )
    assert isinstance(spec, Sentinels)
    assert spec.addresses == (("h1", 1), ("h2", 26379))
    assert (spec.master.password, spec.master.db, spec.master.socket_timeout) == ("pw", 2, 3.0)
    assert (spec.sentinel.password, spec.sentinel.db, spec.sentinel.socket_timeout) == (
        "sp",
        0,
        3.0,
    )


# --------------------------------------------------------------------------- sentinel


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    """A master and its replica."""
    need_redis_server()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    master = PrivateRedis(tmp_path / "a").start()
    replica = PrivateRedis(tmp_path / "b")
    try:
        replica.start()
        with redis.Redis(port=replica.port) as r:
            r.replicaof("127.0.0.1", master.port)
            wait_until(
                lambda: r.info("replication").get("master_link_status") == "up", 10, "the replica"
            )
        yield master, replica
    finally:
        replica.kill()
        master.kill()


def test_sentinel_resolution_and_its_password(
    pair: tuple[PrivateRedis, PrivateRedis], tmp_path: Path
) -> None:
    master, _ = pair
    sentinel = PrivateSentinel(tmp_path / "s", master.port, password="sentinel-pw")
    try:
        dead = free_port()  # a sentinel that is down is skipped
        url = f"sentinel://127.0.0.1:{dead}/1;sentinel://127.0.0.1:{sentinel.port}"
        options = {"master_name": "mymaster", "sentinel_kwargs": {"password": "sentinel-pw"}}

        async def main() -> None:
            spec = parse_target(url, options)
            assert isinstance(spec, Sentinels)
            found = await resolve_master(spec)
            assert (found.host, found.port, found.db) == ("127.0.0.1", master.port, 1)
            async with opened(RedisBroker(url, options=options)) as b:
                await b.publish("q", message(5))
                got = await b.fetch(["q"], 1, 2.0)
                assert [number(d) for d in got] == [5]
                await b.ack(got)
            async with opened(RedisBackend(url, options=options)) as be:
                await be.store("t", result_meta("t", "SUCCESS", 5), 60)
                assert (await be.wait(["t"], 2.0))["t"]["result"] == 5
            without = RedisBroker(url, options={"master_name": "mymaster"})
            with pytest.raises(BrokerError, match="No master found"):
                await without.connect()  # the sentinel wants its password
            await without.close()
            unknown = RedisBroker(url, options={**options, "master_name": "nobody"})
            with pytest.raises(BrokerError, match="no master named 'nobody'"):
                await unknown.connect()
            await unknown.close()

        run(main())
        with redis.Redis(port=master.port, db=1) as check:
            assert check.exists("celery-task-meta-t")  # database 1, where the URL says
    finally:
        sentinel.stop()


def _failed_over(sentinel: PrivateSentinel, pair: tuple[PrivateRedis, PrivateRedis]) -> bool:
    """The sentinel names the replica as master, and the old master follows it."""
    if sentinel.master() != ("127.0.0.1", pair[1].port):
        return False
    with redis.Redis(port=pair[0].port) as old:
        return bool(old.info("replication")["role"] == "slave")


def test_sentinel_failover_is_followed(
    pair: tuple[PrivateRedis, PrivateRedis], tmp_path: Path
) -> None:
    master, replica = pair
    sentinel = PrivateSentinel(tmp_path / "s", master.port)
    try:
        wait_until(sentinel.replica_ready, 20, "the sentinel to see the replica ready")
        url = f"sentinel://127.0.0.1:{sentinel.port}/0"
        options = {"master_name": "mymaster", "global_keyprefix": "fo:"}

        async def main() -> None:
            async with opened(RedisBroker(url, options=options)) as b:
                await b.publish("q", message(1))
                sentinel.client.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "failover", "mymaster"
                )
                await asyncio.to_thread(wait_until, lambda: _failed_over(sentinel, pair), 20)
                # the old master is a replica now: the connection to it is dropped (on
                # the role change, or on its READONLY answer) and the next call asks the
                # sentinel again
                failures = 0
                for _ in range(3):
                    try:
                        await b.publish("q", message(2))
                        break
                    except BrokerError:
                        failures += 1
                assert failures <= 1
                with redis.Redis(port=replica.port) as new_master:  # both are on the new one
                    assert new_master.info("replication")["role"] == "master"
                    assert new_master.llen("fo:q") == 2
                got = await b.fetch(["q"], 2, 2.0)
                assert sorted(number(d) for d in got) == [1, 2]
                await b.ack(got)

        run(main())
    finally:
        sentinel.stop()


# --------------------------------------------------------------------------- sync path


def test_sync_fast_path_is_found_through_the_scheme_tables(tmp_path: Path) -> None:
    r = require_redis()
    queue = f"sync-path-{uuid.uuid4().hex}"
    app = Celery("s", broker=REDIS_URL)
    try:
        publisher = sync_publisher(app)
        assert isinstance(publisher, _redis_sync.Publisher)
        assert sync_publisher(app) is publisher  # cached per app
        assert isinstance(sync_waiter(app), _redis_sync.Waiter)
        for url in ("memory://", f"sqlite:///{tmp_path / 'b.db'}"):  # no sync module there
            other = Celery("o", broker=url)
            assert sync_publisher(other) is None and sync_waiter(other) is None
        publisher.publish(queue, build_task_message("t.x", ()), 0, None)
        assert r.llen(queue) == 1
        conn = publisher._link.connection()
        assert conn.connected
        close_sync(app)  # as app.close() does: this thread's connections
        assert not conn.connected
        app.conf.broker_url = "memory://"  # assigned: looked up again
        assert sync_publisher(app) is None
    finally:
        r.delete(
            queue,
            f"celeriac.notify.{queue}",
            f"_kombu.binding.{queue}",
            f"_kombu.binding_permanent.{queue}",
        )
        r.close()


# --------------------------------------------------------------------------- TLS


def _subscribers(server: PrivateRedis, channel: str) -> int:
    with redis.Redis(port=server.port) as r:
        return int(r.pubsub_numsub(channel)[0][1])


def test_async_client_over_tls(server: PrivateRedis, tmp_path: Path) -> None:
    with TLSProxy(tmp_path, server.port) as proxy:
        url = f"rediss://localhost:{proxy.port}/2"
        trusted = {"ssl_ca_certs": proxy.ca_file}

        async def main() -> None:
            async with opened(RedisBroker(url, options=trusted)) as b:  # the async driver
                await b.publish("q", message(3))
                got = await b.fetch(["q"], 1, 2.0)
                assert [number(d) for d in got] == [3]
                await b.ack(got)
            async with opened(RedisBackend(url, options=trusted)) as be:  # pub/sub too
                waiting = asyncio.create_task(be.wait(["t"], 5.0))
                channel = "celery-task-meta-t"
                await asyncio.to_thread(wait_until, lambda: _subscribers(server, channel), 5)
                await be.store("t", result_meta("t", "SUCCESS", 3), 60)
                assert (await waiting)["t"]["result"] == 3
            untrusted = RedisBroker(url)  # the system CAs only
            with pytest.raises(BrokerError, match="certificate verify failed"):
                await untrusted.connect()
            await untrusted.close()
            lax = RedisBroker(url, options={"ssl_cert_reqs": "none"})
            await lax.connect()
            await lax.close()

        run(main())
        assert proxy.connections >= 4  # each of the four clients, through TLS
    with redis.Redis(port=server.port, db=2) as check:
        assert check.exists("celery-task-meta-t")


def test_pool_options_that_do_nothing_say_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from celeriac.transports.redis import scripts

    monkeypatch.setattr(scripts, "_warned", set())
    with caplog.at_level("WARNING", logger="celeriac.transports.redis"):
        RedisBroker("redis://127.0.0.1:6379/0?max_connections=10")
        RedisBackend("redis://127.0.0.1:6379/0", options={"max_connections": 10})
        RedisBroker("redis://127.0.0.1:6379/0")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "max_connections=" in lines[0] and "does nothing here" in lines[0]
