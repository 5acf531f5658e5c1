"""Redis-specific behaviour: Celery's key layout, atomic leases, sweeping, delayed
messages, URL forms, and surviving a Redis restart (with a real worker process).

Tests on the shared server use their own key prefix and delete it afterwards; restart
tests run a private ``redis-server`` (append-only file, so data survives SIGKILL).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from celeriac.exceptions import BrokerError
from celeriac.protocol import (
    build_task_message,
    decode_envelope,
    encode_envelope,
    json_loads,
    result_meta,
)
from celeriac.testing.conformance import message, number, opened, run
from celeriac.transports.redis.backend import RedisBackend
from celeriac.transports.redis.broker import RedisBroker
from servers import REDIS_URL, PrivateRedis, free_port, pings, require_redis, scratch_prefix
from support import WorkerProcess, wait_until, write_module

SEP = b"\x06\x16"


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_prefix("test-redis") as value:
        yield value


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = require_redis()
    yield client
    client.close()


def broker(prefix: str, **options: Any) -> RedisBroker:
    return RedisBroker(REDIS_URL, options={"global_keyprefix": prefix, **options})


def test_key_layout_matches_celery(prefix: str, r: redis.Redis) -> None:
    sent = build_task_message("tasks.add", (2, 3), queue="celery")
    urgent = build_task_message("tasks.add", (4, 5), queue="celery", priority=7)

    async def main() -> None:
        async with opened(broker(prefix)) as b:
            b.consumer_id = "w1@host:1"
            await b.declare("celery")
            await b.publish("celery", sent)
            await b.publish("celery", urgent, priority=7)
            (raw,) = cast(list[bytes], r.lrange(f"{prefix}celery", 0, -1))
            (raw_urgent,) = r.lrange(f"{prefix}celery".encode() + SEP + b"6", 0, -1)
            envelope = json.loads(raw)
            assert set(envelope) == {
                "body",
                "content-encoding",
                "content-type",
                "headers",
                "properties",
            }
            assert envelope["headers"]["task"] == "tasks.add"
            assert envelope["properties"]["body_encoding"] == "base64"
            assert envelope["properties"]["delivery_info"] == {
                "exchange": "",
                "routing_key": "celery",
            }
            assert json.loads(raw_urgent)["properties"]["priority"] == 7
            member = b"celery" + SEP + SEP + b"celery"
            assert r.smembers(f"{prefix}_kombu.binding.celery") == {member}
            assert r.smembers(f"{prefix}_kombu.binding_permanent.celery") == {member}

            got = await b.fetch(["celery"], 10, 1.0)
            assert [number(d) for d in got] == [4, 2]  # bucket 6 before bucket 0
            tag = envelope["properties"]["delivery_tag"]
            entry = r.hget(f"{prefix}unacked", tag)
            assert entry is not None
            assert json.loads(entry) == [envelope, "", "celery"]
            assert entry == b"[" + raw + b', "", "celery"]'  # the envelope byte for byte
            assert abs(float(r.zscore(f"{prefix}unacked_index", tag) or 0) - time.time()) < 5
            assert r.hget(f"{prefix}celeriac.lease_owner", tag) == b"w1@host:1"
            assert r.hget(f"{prefix}celeriac.deliveries", tag) == b"1"
            await b.ack(got)
            assert r.exists(f"{prefix}unacked", f"{prefix}unacked_index") == 0
            assert r.zscore(f"{prefix}celeriac.leases", tag) is None
            for key in ("lease_owner", "lease_queue", "deliveries"):
                assert not r.hexists(f"{prefix}celeriac.{key}", tag), key

    run(main())


def test_fetch_pops_and_records_in_one_step(prefix: str, r: redis.Redis) -> None:
    """An observer never sees a message that is neither in its list nor in unacked."""
    total = 300
    sums: list[int] = []
    stop = threading.Event()

    def observe() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        while not stop.is_set():
            pipe = client.pipeline(transaction=True)
            pipe.llen(f"{prefix}q")
            pipe.hlen(f"{prefix}unacked")
            sums.append(sum(pipe.execute()))
        client.close()

    async def main() -> None:
        async with opened(broker(prefix)) as b:
            await b.publish_many([("q", message(n), 0, None) for n in range(total)])
            watcher = threading.Thread(target=observe)
            watcher.start()
            try:
                got = 0
                while got < total:
                    got += len(await b.fetch(["q"], 3, 1.0))
            finally:
                stop.set()
                watcher.join()

    run(main())
    assert len(sums) > 10 and set(sums) == {total}


def test_concurrent_sweepers_return_an_expired_message_once(prefix: str, r: redis.Redis) -> None:
    async def lease() -> None:
        async with opened(broker(prefix, visibility_timeout=0.05)) as b:
            await b.publish_many([("q", message(n), 0, None) for n in range(50)])
            assert len(await b.fetch(["q"], 50, 1.0)) == 50

    run(lease())
    time.sleep(0.1)  # the leases expire: time passing, not an event
    counts: list[int] = []

    async def sweep() -> None:
        async with opened(broker(prefix)) as b:
            counts.append(await b.sweep())

    threads = [threading.Thread(target=run, args=(sweep(),)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 50
    assert sorted(
        json_loads(decode_envelope(raw).body)[0][0] for raw in r.lrange(f"{prefix}q", 0, -1)
    ) == list(range(50))
    assert r.hlen(f"{prefix}unacked") == 0


def test_delayed_messages_wait_in_the_broker_and_any_worker_promotes(
    prefix: str, r: redis.Redis
) -> None:
    async def main() -> None:
        async with opened(broker(prefix)) as producer, opened(broker(prefix)) as worker:
            await producer.publish("q", message(1), not_before=time.time() + 0.3)
            await producer.publish("q", message(2), priority=9, not_before=time.time() + 3 * 86400)
            members = r.zrange(f"{prefix}celeriac.delayed.q", 0, -1, withscores=True)
            found = cast(list[tuple[bytes, float]], members)
            assert [m[0][:1] for m in found] == [b"0", b"9"]  # bucket digit + envelope
            assert found[1][1] > time.time() + 2 * 86400
            assert r.llen(f"{prefix}q") == 0 and await worker.size("q") == 2
            got = await worker.fetch(["q"], 5, 5.0)  # the worker that never published
            assert [number(d) for d in got] == [1]
            assert r.zcard(f"{prefix}celeriac.delayed.q") == 1  # days away: still waiting
            await worker.ack(got)

    run(main())


def test_task_with_eta_header_stays_visible_to_celery_workers(prefix: str, r: redis.Redis) -> None:
    due = datetime.now(timezone.utc) + timedelta(hours=1)
    msg = build_task_message("tasks.add", (1, 2), eta=due)

    async def main() -> None:
        async with opened(broker(prefix)) as b:
            await b.publish("q", msg, not_before=due.timestamp())
            assert r.llen(f"{prefix}q") == 1  # where a Celery worker looks
            (got,) = await b.fetch(["q"], 1, 1.0)
            await b.requeue([got], not_before=due.timestamp())  # what our worker does
            assert r.zcard(f"{prefix}celeriac.delayed.q") == 1
        async with opened(broker(prefix, eta_in_queue="false")) as b:
            await b.publish("q", msg, not_before=due.timestamp())
            assert r.zcard(f"{prefix}celeriac.delayed.q") == 2 and r.llen(f"{prefix}q") == 0

    run(main())


def test_scripts_are_loaded_again_after_script_flush(prefix: str, r: redis.Redis) -> None:
    async def main() -> None:
        async with opened(broker(prefix)) as b:
            await b.publish("q", message(1))
            r.script_flush()
            (got,) = await b.fetch(["q"], 1, 1.0)
            r.script_flush()
            assert await b.fetch(["q"], 1, 0.2) == []  # waited, then nothing left to lease
            r.script_flush()
            await b.ack([got])
            assert r.hlen(f"{prefix}unacked") == 0

    run(main())


def test_priority_order_lower_first_is_celerys_order(prefix: str) -> None:
    async def main() -> list[int]:
        async with opened(broker(prefix, priority_order="lower_first")) as b:
            for n, priority in [(1, 9), (2, 0), (3, 5)]:
                await b.publish("q", message(n), priority=priority)
            return [number(d) for d in await b.fetch(["q"], 3, 1.0)]

    assert run(main()) == [2, 3, 1]


def test_stale_lease_holder_cannot_ack_the_redelivery(prefix: str, r: redis.Redis) -> None:
    async def main() -> None:
        async with opened(broker(prefix, visibility_timeout=0.1)) as b:
            await b.publish("q", message(1))
            first = await b.fetch(["q"], 1, 1.0)
            second = await b.fetch(["q"], 1, 5.0)  # after the lease expired
            assert second[0].delivery_count == 2
            await b.ack(first)  # too late: the message belongs to the second lease
            await b.extend(second, 30)
            assert r.hlen(f"{prefix}unacked") == 1
            await b.ack(second)
            assert r.hlen(f"{prefix}unacked") == 0

    run(main())


def test_unacked_entry_left_by_a_celery_worker_is_restored(prefix: str, r: redis.Redis) -> None:
    """Celery records a delivery in unacked without a lease of ours; after the foreign
    visibility timeout any celeriac worker returns it, to its priority list."""
    envelope = json.loads(encode_envelope(build_task_message("tasks.add", (1, 2), priority=6)))
    envelope["properties"]["delivery_tag"] = "celery-tag"
    text = json.dumps(envelope)
    r.hset(f"{prefix}unacked", "celery-tag", f'[{text}, "", "q"]')
    r.zadd(f"{prefix}unacked_index", {"celery-tag": time.time() - 100})

    async def main() -> None:
        async with opened(broker(prefix, foreign_visibility_timeout=50)) as b:
            (got,) = await b.fetch(["q"], 5, 1.0)
            assert got.raw == text.encode() and got.tag == "celery-tag"
            await b.ack([got])

    run(main())
    assert r.hlen(f"{prefix}unacked") == 0


def test_result_backend_uses_celerys_keys_and_channel(prefix: str, r: redis.Redis) -> None:
    key = f"{prefix}celery-task-meta-t1"
    pubsub = r.pubsub()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
    pubsub.subscribe(key)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    meta = result_meta("t1", "SUCCESS", 5)

    async def main() -> None:
        async with opened(RedisBackend(REDIS_URL, options={"global_keyprefix": prefix})) as be:
            await be.store("t1", meta, 3600)
            assert await be.get_many(["t1", "t2"]) == {"t1": meta}

    run(main())
    assert json.loads(r.get(key) or b"") == meta
    assert 3500 < r.ttl(key) <= 3600
    published = pubsub.get_message(timeout=2)
    assert published is not None and json.loads(published["data"]) == meta
    pubsub.close()


def test_wait_resubscribes_when_its_pubsub_connection_drops(
    prefix: str, private_redis: PrivateRedis
) -> None:
    # a server of its own: the test kills every pub/sub connection on it
    url, r = private_redis.url, redis.Redis(port=private_redis.port)

    async def main() -> None:
        options = {"global_keyprefix": prefix}
        async with opened(RedisBackend(url, options=options)) as be:
            waiting = asyncio.create_task(be.wait(["a"], 10.0))
            channel = f"{prefix}celery-task-meta-a"
            await asyncio.to_thread(wait_until, lambda: r.pubsub_numsub(channel)[0][1] == 1, 5)
            r.client_kill_filter(_type="pubsub", skipme=True)
            await asyncio.to_thread(wait_until, lambda: r.pubsub_numsub(channel)[0][1] == 1, 5)
            async with opened(RedisBackend(url, options=options)) as other:
                await other.store("a", result_meta("a", "SUCCESS", 1), 60)
            assert (await asyncio.wait_for(waiting, 5))["a"]["result"] == 1

    try:
        run(main())
    finally:
        r.close()


# -- a private redis-server ----------------------------------------------------------


def test_unix_socket_and_sentinel_urls(private_redis: PrivateRedis, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nsentinel monitor mymaster 127.0.0.1 {private_redis.port} 1\n")
    sentinel = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL
    )
    try:
        with redis.Redis(port=port) as client:
            wait_until(lambda: pings(client), 10, "redis-sentinel")
        urls = [
            (f"unix://{private_redis.socket}?db=0", {}),
            (f"redis+socket://{private_redis.socket}", {}),
            (f"sentinel://127.0.0.1:{port}/0;sentinel://127.0.0.1:1", {"master_name": "mymaster"}),
        ]
        for n, (url, options) in enumerate(urls):

            async def main(url: str = url, options: dict[str, Any] = options, n: int = n) -> None:
                async with opened(RedisBroker(url, options=options)) as b:
                    await b.publish("q", message(n))
                    got = await b.fetch(["q"], 1, 2.0)
                    assert [number(d) for d in got] == [n]
                    await b.ack(got)
                async with opened(RedisBackend(url, options=options)) as be:
                    await be.store("t", result_meta("t", "SUCCESS", n), 60)
                    assert (await be.wait(["t"], 2.0))["t"]["result"] == n

            run(main())
    finally:
        sentinel.send_signal(signal.SIGKILL)
        sentinel.wait(10)


def test_worker_hot_path_authenticates_and_selects_the_database(
    private_redis: PrivateRedis,
) -> None:
    admin = redis.Redis(port=private_redis.port)
    admin.config_set("requirepass", "s3cret")
    admin.close()
    url = f"redis://:s3cret@127.0.0.1:{private_redis.port}/2"

    async def main() -> None:
        async with opened(RedisBroker(url)) as b:  # fetch, ack: celeriac's own connection
            await b.publish("q", message(7))
            got = await b.fetch(["q"], 1, 2.0)
            assert [number(d) for d in got] == [7]
            await b.ack(got)
        async with opened(RedisBackend(url)) as be:  # a batch of results: the same
            await be.store_many([("t1", result_meta("t1", "SUCCESS", 1), 60)])
            assert (await be.get("t1") or {}).get("result") == 1
        wrong = RedisBroker(f"redis://:nope@127.0.0.1:{private_redis.port}/2")
        with pytest.raises(BrokerError, match=r"WRONGPASS|invalid password"):
            await wrong.fetch(["q"], 1, 0.0)
        await wrong.close()

    run(main())
    with redis.Redis(port=private_redis.port, password="s3cret", db=2) as check:
        assert check.exists("celery-task-meta-t1")  # in database 2, where the URL says
        assert check.llen("q") == 0


def test_broker_error_while_down_then_reconnects(private_redis: PrivateRedis) -> None:
    async def main() -> None:
        async with opened(RedisBroker(private_redis.url)) as b:
            await b.publish("q", message(1))
            private_redis.kill()
            with pytest.raises(BrokerError):
                await b.fetch(["q"], 1, 0.5)
            private_redis.start()  # same port and files; its script cache is empty
            got = await b.fetch(["q"], 1, 2.0)
            assert [number(d) for d in got] == [1]
            await b.ack(got)

    run(main())


TASKS = """
import os, time, redis
from celeriac import Celery

app = Celery("rtasks", broker=os.environ["RT_BROKER"])
counters = redis.Redis.from_url(os.environ["RT_COUNTERS"])
PFX = os.environ["RT_PREFIX"]

@app.task
def record(i):
    time.sleep(0.01)
    counters.hincrby(PFX + "runs", str(i), 1)
    counters.sadd(PFX + "done", i)
"""


def test_worker_survives_a_redis_restart(
    private_redis: PrivateRedis, prefix: str, r: redis.Redis, tmp_path: Path
) -> None:
    total = 300
    write_module(tmp_path, "rtasks", TASKS)
    env = {"RT_BROKER": private_redis.url, "RT_COUNTERS": REDIS_URL, "RT_PREFIX": prefix}
    worker = WorkerProcess(tmp_path, "rtasks", "-P", "threads", "-c", "4", "-l", "info", env=env)
    with worker:
        run(_publish_records(private_redis.url, total))
        wait_until(lambda: r.scard(f"{prefix}done") >= total // 5, 20, "the first tasks")
        private_redis.kill()
        worker.wait_for(OUTAGE, 10)
        private_redis.start()
        try:
            wait_until(lambda: r.scard(f"{prefix}done") == total, 30, "every task")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {r.scard(f'{prefix}done')} done:\n{worker.log}") from None
    runs = {int(k): int(v) for k, v in r.hgetall(f"{prefix}runs").items()}
    assert sorted(runs) == list(range(total))
    assert set(runs.values()) == {1}  # leases outlived the outage: nothing ran twice
    # One line per state change, not one per retry: the broker's outage is said once
    # (whichever of fetching, settling or extending met it first) and its end once; the
    # result backend's (the same server here) once too.
    said = Counter(m.group(0) for m in map(re.compile(OUTAGE).search, worker.lines) if m)
    assert said and set(said.values()) == {1}, worker.log
    lost, restored = "Broker connection lost", "Broker connection restored"
    assert said[lost] == len([x for x in worker.lines if restored in x]), worker.log


OUTAGE = r"Broker connection lost|Cannot settle tasks: Redis result backend"


async def _publish_records(url: str, total: int) -> None:
    async with opened(RedisBroker(url)) as b:
        items = [
            ("celery", build_task_message("rtasks.record", (n,)), 0, None) for n in range(total)
        ]
        await b.publish_many(items)
