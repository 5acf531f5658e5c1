"""RabbitMQ broker and rpc:// backend: the wire, the delay cascade, counts, prefetch,
configuration errors, results, and a worker that survives ``rabbitmqctl stop_app``.

Every test uses queue names of its own in the per-process vhost and deletes them. Waits
are on events (results, log lines, message counts), never bare sleeps.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import aiormq
import pytest
import redis
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from celeriac import Celery
from celeriac._loop import run_sync
from celeriac.exceptions import ImproperlyConfigured, WorkerLostError
from celeriac.protocol import build_task_message, json_loads, result_meta
from celeriac.testing import TestWorker
from celeriac.testing.conformance import message, number, opened
from celeriac.transports.amqp.broker import AMQPBroker
from celeriac.transports.amqp.codec import Properties, decode_properties, encode_properties
from celeriac.transports.amqp.connection import connection_url
from celeriac.transports.amqp.delay import delay_queue
from celeriac.transports.amqp.rpc import RPCBackend
from servers import (
    REDIS_URL,
    aqueue_counts,
    delete_queues,
    queue_counts,
    rabbitmqctl,
    require_redis,
    unacked,
    vhost_of,
)
from support import WorkerProcess, closing, wait_until, write_module


@pytest.fixture
def queue(rabbit: str) -> Iterator[str]:
    """A queue name of the test's own, deleted (with its delay levels) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues(rabbit, [name])


async def raw_get(url: str, queue: str) -> aiormq.abc.DeliveredMessage:
    conn = aiormq.Connection(url)
    await conn.connect()
    try:
        ch = await conn.channel()
        got = await ch.basic_get(queue, no_ack=True)
        assert isinstance(got.delivery, Basic.GetOk), f"{queue} is empty"
        return got
    finally:
        await conn.close()


def test_url_forms() -> None:
    assert connection_url("amqp://") == "amqp://guest:guest@localhost/"
    assert connection_url("pyamqp://u:p@h:5673//") == "amqp://u:p@h:5673//"
    assert connection_url("amqps://h/v", heartbeat=10) == "amqps://guest:guest@h/v?heartbeat=10"
    app = Celery("t", broker="amqp://guest@localhost//", set_as_current=False)
    assert app.backend_url == "rpc://"


def test_wire_matches_celery(rabbit: str, queue: str) -> None:
    sent = build_task_message(
        "tasks.add",
        (4, 4),
        {"f": 1.25},
        reply_to="reply-q",
        queue=queue,
        extra_headers={"x-custom": {"n": [1, None, 2.5]}},
        expires=None,
    )
    expiring = build_task_message("tasks.add", (1, 2), queue=queue, expires=_in(60))

    async def main() -> tuple[Any, Any]:
        async with opened(AMQPBroker(rabbit)) as broker:
            await broker.publish(queue, sent, priority=3)
            await broker.publish(queue, expiring)
        return await raw_get(rabbit, queue), await raw_get(rabbit, queue)

    got, got_expiring = asyncio.run(main())
    props = got.header.properties
    assert (got.delivery.exchange, got.delivery.routing_key) == ("", queue)
    assert got.body == sent.body and json_loads(got.body)[0] == [4, 4]  # raw JSON, no envelope
    assert (props.content_type, props.content_encoding) == ("application/json", "utf-8")
    assert (props.delivery_mode, props.priority) == (2, 3)
    assert (props.correlation_id, props.reply_to) == (sent.task_id, "reply-q")
    assert props.expiration is None and props.headers == sent.headers
    assert got_expiring.header.properties.expiration in ("60000", "59999")
    # Celery's default topology: a durable direct exchange per queue, bound with its name
    out = rabbitmqctl("list_bindings", "-p", vhost_of(rabbit), "source_name", "routing_key", "-q")
    assert f"{queue}\t{queue}" in out.splitlines()


def test_fast_lane_reads_and_writes_properties_as_pamqp_does() -> None:
    """The fast lane's own property decoder and encoder agree with pamqp, for every
    property and every field type Celery's headers use."""
    headers = {
        "task": "tasks.add",
        "id": "é-1",
        "eta": None,
        "retries": 3,
        "neg": -5,
        "big": 2**40,
        "timelimit": [None, 1.5],
        "ok": True,
        "nested": {"a": [1, "x", {"q": None}]},
        "raw": b"\x00\xff",
    }
    fields: dict[str, Any] = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": headers,
        "delivery_mode": 2,
        "priority": 3,
        "correlation_id": "c",
        "reply_to": "r",
        "expiration": "100",
        "message_id": "m",
        "message_type": "t",
        "user_id": "guest",
        "app_id": "a",
    }
    stamp = datetime(2020, 1, 1, tzinfo=timezone.utc)
    raw = ContentHeader(0, 10, Properties(**fields, timestamp=stamp)).marshal()
    flags = int.from_bytes(raw[12:14], "big")
    theirs = Basic.Properties()
    theirs.unmarshal(flags, raw[14:])
    mine = decode_properties(raw, 14, flags)
    for name in [*fields, "timestamp"]:
        assert getattr(mine, name) == getattr(theirs, name), name
    assert encode_properties(**fields, timestamp=int(stamp.timestamp())) == (flags, raw[14:])
    assert decode_properties(b"\x00\x00", 2, 0).headers is None
    with pytest.raises(TypeError, match="unknown basic properties"):
        encode_properties(colour="red")


def test_fast_lane_carries_large_and_empty_bodies(rabbit: str, queue: str) -> None:
    """Bodies over RabbitMQ's frame size (several frames, split across socket reads) and
    empty ones, each way: deliveries to a consumer and rpc replies with confirms; a
    ``basic.get`` on the consumers' channel still goes through aiormq."""
    big = "x" * 400_000
    reply_to = f"reply-{uuid.uuid4().hex}"

    async def main() -> None:
        client = RPCBackend("rpc://", options={"broker_url": rabbit, "reply_to": reply_to})
        worker = RPCBackend("rpc://", options={"broker_url": rabbit})
        async with opened(AMQPBroker(rabbit)) as broker, opened(client), opened(worker):
            sent = [message(0, kwargs={"blob": big}), message(1), message(2)]
            await broker.publish_many([(queue, m, 0, None) for m in sent])
            await broker.publish_raw(queue, b"")
            got = await broker.fetch([queue], 1, 5.0)  # a consumer with a prefetch of 1
            assert [number(d) for d in got] == [0]
            assert json_loads(got[0].message.body)[1] == {"blob": big}  # type: ignore[union-attr]
            await broker.ack(got)
            got = await broker.fetch([queue], 10, 5.0)
            while len(got) < 3:
                got += await broker.fetch([queue], 10, 5.0)
            assert [number(d) for d in got[:2]] == [1, 2] and got[2].raw == b""
            assert got[0].message.headers == sent[1].headers  # type: ignore[union-attr]
            await broker.ack(got)
            await client.get("x")  # consuming
            await worker.store_replies(
                [
                    (reply_to, "big", result_meta("big", "SUCCESS", big)),
                    (reply_to, "small", result_meta("small", "SUCCESS", 1)),
                ]
            )
            done = await client.wait(["big", "small"], 5)
            if len(done) < 2:
                done.update(await client.wait([t for t in ("big", "small") if t not in done], 5))
            assert done["big"]["result"] == big and done["small"]["result"] == 1

    asyncio.run(main())


def test_reply_confirms_fail_when_the_channel_closes(rabbit: str) -> None:
    """A publish RabbitMQ refuses closes the reply channel: the confirms waited for fail
    (they do not hang), and the next reply goes out on a new connection."""
    reply_to = f"reply-{uuid.uuid4().hex}"

    async def main() -> None:
        client = RPCBackend("rpc://", options={"broker_url": rabbit, "reply_to": reply_to})
        worker = RPCBackend("rpc://", options={"broker_url": rabbit})
        async with opened(client), opened(worker):
            await client.get("x")  # consuming
            confirms = worker._confirms
            assert confirms is not None
            props = encode_properties(content_type="application/json")
            pending = confirms.publish("celeriac-no-such-exchange", "k", props, b"{}")
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await asyncio.wait_for(pending, 10)
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                confirms.publish("", reply_to, props, b"{}")  # the channel is gone
            await worker.store_replies([(reply_to, "a", result_meta("a", "SUCCESS", 1))])
            assert (await client.wait(["a"], 5))["a"]["result"] == 1

    asyncio.run(main())


def test_countdown_arrives_on_time_without_being_held(rabbit: str, queue: str) -> None:
    app = Celery("t", broker=rabbit, task_default_queue=queue, set_as_current=False)

    @app.task
    def stamp() -> float:
        return time.time()

    with closing(app), TestWorker(app, queues=[queue]):
        assert stamp.delay().get(timeout=10) > 0  # the worker is consuming
        due = time.time() + 1.5
        result = stamp.apply_async(countdown=1.5)
        # it waits in the cascade (levels of 1500 ms = 1024 + 256 + 128 + 64 + 16 + 8 + 4)
        levels = [k for k in range(32) if 1500 >> k & 1]
        wait_until(lambda: any(_ready(rabbit, delay_queue(queue, k)) for k in levels), 2)
        assert queue_counts(rabbit, queue)[0] == 0 and unacked(rabbit, queue) == 0
        ran_at = result.get(timeout=10)
        assert due - 0.01 <= ran_at < due + 0.5


def test_day_long_countdown_sits_in_the_delay_levels(rabbit: str, queue: str) -> None:
    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as broker:
            due = time.time() + 86400
            await broker.publish(queue, message(1), not_before=due)
            assert await broker.size(queue) == 1
            assert await broker.fetch([queue], 1, 0.2) == []
            top = max(k for k in range(32) if 86_400_000 >> k & 1)  # 2**26 ms, ~18.6 h
            assert await aqueue_counts(rabbit, delay_queue(queue, top)) == (1, 0)
            assert await aqueue_counts(rabbit, queue) == (0, 1)
            assert await broker.purge(queue) == 1
            assert await broker.size(queue) == 0

    asyncio.run(main())


def test_delivery_counts_on_a_classic_queue(rabbit: str, queue: str) -> None:
    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as broker:
            await broker.publish(queue, message(1))
            for expected in (1, 2, 3):  # each consumer dies holding it (no ack, closed)
                async with opened(AMQPBroker(rabbit)) as dying:
                    (got,) = await dying.fetch([queue], 1, 5.0)
                    assert (number(got), got.delivery_count) == (1, expected)
                    assert got.message is not None
                    info = got.message.properties["delivery_info"]
                    assert info.get("redelivered", False) is (expected > 1)
            (again,) = await broker.fetch([queue], 1, 5.0)
            assert again.delivery_count == 4
            await broker.requeue([again], count_delivery=True)
            (fifth,) = await broker.fetch([queue], 1, 5.0)
            assert fifth.delivery_count == 5 and number(fifth) == 1
            assert fifth.message is not None
            assert not any(h.startswith("x-") for h in fifth.message.headers)
            await broker.ack([fifth])
            await broker.ack([fifth])  # twice is harmless (a double ack would close the channel)
            await broker.publish(queue, message(2))
            assert [number(d) for d in await broker.fetch([queue], 1, 5.0)] == [2]

    asyncio.run(main())


def test_quorum_queue_counts_deliveries(rabbit: str, queue: str) -> None:
    async def main() -> None:
        options = {"queue_type": "quorum"}
        async with opened(AMQPBroker(rabbit, options=options)) as broker:
            await broker.publish(queue, message(1))
            for expected in (1, 2, 3):
                async with opened(AMQPBroker(rabbit, options=options)) as dying:
                    (got,) = await dying.fetch([queue], 1, 5.0)
                    assert got.delivery_count == expected
            (got,) = await broker.fetch([queue], 1, 5.0)
            assert got.delivery_count == 4
            await broker.ack([got])

    asyncio.run(main())
    with pytest.raises(ImproperlyConfigured, match="quorum"):
        AMQPBroker(rabbit, options={"queue_type": "quorum", "queue_max_priority": 9})


def test_existing_queue_with_other_arguments_names_the_setting(rabbit: str, queue: str) -> None:
    async def main() -> None:
        async with opened(AMQPBroker(rabbit, options={"queue_max_priority": 10})) as broker:
            await broker.declare(queue)
        async with opened(AMQPBroker(rabbit)) as broker:
            with pytest.raises(ImproperlyConfigured, match="queue_max_priority"):
                await broker.publish(queue, message(1))
            await broker.publish(f"{queue}-ok", message(1))  # the broker still works
            assert await broker.size(f"{queue}-ok") == 1

    try:
        asyncio.run(main())
    finally:
        delete_queues(rabbit, [f"{queue}-ok"])


def test_prefetch_follows_the_window(rabbit: str, queue: str) -> None:
    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as broker:
            await broker.publish_many([(queue, message(n), 0, None) for n in range(10)])
            first = await broker.fetch([queue], 3, 5.0)
            assert [number(d) for d in first] == [0, 1, 2]
            consumers = rabbitmqctl(
                "list_consumers", "-p", vhost_of(rabbit), "queue_name", "prefetch_count", "-q"
            )
            assert f"{queue}\t3" in consumers.splitlines()
            assert (await aqueue_counts(rabbit, queue))[0] == 7  # nothing hoarded beyond the window
            await broker.ack(first)
            rest = await broker.fetch([queue], 7, 5.0)
            assert [number(d) for d in rest] == list(range(3, 10))
            await broker.ack(rest)

    asyncio.run(main())


def test_dead_letters_and_unreadable_messages(rabbit: str, queue: str) -> None:
    dlq = f"{queue}-dead"
    options = {"dead_letter_queue": dlq}

    async def main() -> None:
        async with opened(AMQPBroker(rabbit, options=options)) as broker:
            await broker.publish_raw(queue, b"\x00garbage")
            (bad,) = await broker.fetch([queue], 1, 5.0)
            assert bad.message is None and bad.error and bad.raw == b"\x00garbage"
            await broker.dead_letter(bad, "unreadable")
            await broker.publish(queue, message(5))
            (good,) = await broker.fetch([queue], 1, 5.0)
            await broker.dead_letter(good, "poison")
            letters = await broker.dead_letters()
            assert [(x.queue, x.reason) for x in letters] == [
                (queue, "poison"),
                (queue, "unreadable"),
            ]
            assert letters[1].raw == b"\x00garbage"
            assert len(await broker.dead_letters()) == 2  # reading puts them back

    try:
        asyncio.run(main())
    finally:
        delete_queues(rabbit, [dlq])


def test_rpc_results_out_of_order_and_progress(rabbit: str) -> None:
    reply_to = f"reply-{uuid.uuid4().hex}"

    async def main() -> None:
        client = RPCBackend("rpc://", options={"broker_url": rabbit, "reply_to": reply_to})
        worker = RPCBackend("rpc://", options={"broker_url": rabbit})
        async with opened(client), opened(worker):
            assert await client.get("a") is None
            await worker.store_replies(
                [
                    (reply_to, "b", result_meta("b", "SUCCESS", 2)),
                    (reply_to, "a", result_meta("a", "PROGRESS", {"done": 1})),
                    (None, "lost", result_meta("lost", "SUCCESS", 0)),
                ]
            )
            assert await client.wait(["a", "b"], 5) == {"b": result_meta("b", "SUCCESS", 2)}
            assert (await client.get("a") or {})["status"] == "PROGRESS"
            assert await client.wait(["a"], 0.05) == {}
            await worker.store_replies([(reply_to, "a", result_meta("a", "FAILURE", None))])
            assert (await client.wait(["a"], 5))["a"]["status"] == "FAILURE"
            await client.forget("a")
            assert await client.get("a") is None
            out = rabbitmqctl(
                "list_queues",
                "-p",
                vhost_of(rabbit),
                "name",
                "durable",
                "auto_delete",
                "arguments",
                "-q",
            )
            line = next(x for x in out.splitlines() if x.startswith(reply_to))
            assert line.split("\t")[1:3] == ["true", "true"] and "x-expires" in line

    asyncio.run(main())


def test_rpc_replies_without_confirms(rabbit: str) -> None:
    reply_to = f"reply-{uuid.uuid4().hex}"

    async def main() -> None:
        client = RPCBackend("rpc://", options={"broker_url": rabbit, "reply_to": reply_to})
        options = {"broker_url": rabbit, "confirm_publish": False}
        worker = RPCBackend("rpc://", options=options)
        async with opened(client), opened(worker):
            await client.get("x")  # consuming
            metas = [(reply_to, f"t{n}", result_meta(f"t{n}", "SUCCESS", n)) for n in range(50)]
            await worker.store_replies(metas)
            got = await client.wait([f"t{n}" for n in range(50)], 5)
            while len(got) < 50:
                more = await client.wait([f"t{n}" for n in range(50) if f"t{n}" not in got], 5)
                assert more, "replies missing"
                got.update(more)
            assert {t: m["result"] for t, m in got.items()} == {f"t{n}": n for n in range(50)}

    asyncio.run(main())


def test_rpc_is_the_default_backend_and_amqp_works_with_redis(rabbit: str, queue: str) -> None:
    require_redis()
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/11"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        for backend in (None, redis_url):
            app = Celery(
                "t", broker=rabbit, backend=backend, set_as_current=False, task_default_queue=queue
            )

            @app.task
            def add(x: int, y: int) -> int:
                return x + y

            with closing(app), TestWorker(app, queues=[queue]):
                results = [add.delay(i, 1) for i in range(20)]
                assert [r.get(timeout=10) for r in results] == list(range(1, 21))
        assert client.exists(f"celery-task-meta-{results[0].id}")
    finally:
        client.flushdb()
        client.close()


POISON_TASKS = """
import os, signal
from celeriac import Celery

app = Celery("poison", broker="{url}", task_default_queue="{queue}", task_max_redeliveries=1)

@app.task
def suicide():
    os.kill(os.getpid(), signal.SIGKILL)

@app.task
def add(x, y):
    return x + y
"""


def test_poison_message_ends_on_a_classic_queue(rabbit: str, queue: str, tmp_path: Path) -> None:
    write_module(tmp_path, "poison", POISON_TASKS.format(url=rabbit, queue=queue))
    app = Celery("poison", broker=rabbit, task_default_queue=queue, set_as_current=False)
    with closing(app), WorkerProcess(tmp_path, "poison", "-P", "prefork", "-c", "1") as worker:
        result = app.send_task("poison.suicide")
        with pytest.raises(WorkerLostError, match="delivered 3 times"):
            result.get(timeout=30)  # the rpc reply of the dead-lettering worker
        worker.wait_for(r"suicide\[.*dead-lettered")
        assert app.send_task("poison.add", (2, 2)).get(timeout=10) == 4


RECORDING_TASKS = """
import time
import redis
from celeriac import Celery

app = Celery("outage", broker="{url}", task_default_queue="{queue}", task_ignore_result=True)
app.conf.worker_prefetch_multiplier = 2
store = redis.Redis.from_url("{redis}")

@app.task
def record(i):
    time.sleep(0.02)
    store.rpush("{key}", "%d %f" % (i, time.time()))
"""


def test_worker_survives_rabbitmq_restart(
    rabbit_exclusive: str,
    tmp_path: Path,
) -> None:
    require_redis()
    url, q, key = rabbit_exclusive, f"outage-{uuid.uuid4().hex[:8]}", f"outage:{uuid.uuid4()}"
    redis_url = REDIS_URL
    store = redis.Redis.from_url(redis_url)
    write_module(
        tmp_path, "outage", RECORDING_TASKS.format(url=url, queue=q, redis=redis_url, key=key)
    )
    app = Celery("outage", broker=url, task_default_queue=q, set_as_current=False)
    total = 150
    try:
        # Celery's prefetch limit exactly (no window for short tasks): the bound on what
        # may run twice below is the number of messages held unacked at the outage
        env = {"CELERIAC_WORKER_PREFETCH_WINDOW": "0"}
        with WorkerProcess(tmp_path, "outage", "-c", "2", "-l", "info", env=env) as worker:
            for i in range(total):
                app.send_task("outage.record", (i,))
            wait_until(lambda: store.llen(key) >= 20, 15, "tasks to run")
            stopped_at = time.time()
            try:
                rabbitmqctl("stop_app")
                worker.wait_for("Broker connection lost", 15)
            finally:
                rabbitmqctl("start_app")
                subprocess.run(
                    ["rabbitmqctl", "await_startup"], check=False, timeout=60, capture_output=True
                )
            worker.wait_for("Broker connection restored", 20)
            wait_until(lambda: _ran(store, key).keys() >= set(range(total)), 20, "every task")
        runs = _ran(store, key)
        assert set(runs) == set(range(total))  # nothing lost
        again = {i for i, times in runs.items() if len(times) > 1}
        # only what was in flight at the outage may run twice (at-least-once); anything
        # that finished a second before it had been acked and never ran again
        assert len(again) <= 2 * 2 * 2, again
        assert all(min(runs[i]) > stopped_at - 1 for i in again), again
        # one line per change of state, in each child: lost, restored (RabbitMQ may
        # drop a connection once more while it starts, which is a change too)
        changes: dict[str, list[str]] = {}
        for line in worker.log.splitlines():
            found = re.search(r"/(ForkPoolWorker-\d+)\] Broker connection (lost|restored)", line)
            if found:
                changes.setdefault(found[1], []).append(found[2])
        assert len(changes) <= 2 and changes, worker.log
        for states in changes.values():
            assert states == ["lost", "restored"] * (len(states) // 2), states
    finally:
        store.delete(key)
        store.close()
        run_sync(app.close_clients())
        delete_queues(url, [q])


def _ran(store: redis.Redis, key: str) -> dict[int, list[float]]:
    runs: dict[int, list[float]] = {}
    for item in store.lrange(key, 0, -1):
        i, at = cast(bytes, item).decode().split()
        runs.setdefault(int(i), []).append(float(at))
    return runs


def _ready(url: str, queue: str) -> int:
    try:
        return queue_counts(url, queue)[0]
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0


def _in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)
