"""How an idle Redis consumer wakes (transports/redis/wakeup.py): a push by any client to
any priority list wakes a waiting fetch and the wait leaves the list as it was; a wait
on a silent connection (no reply, no FIN) gives up within its deadline and says so; a
key of the wrong type falls back to looking every ``polling_interval``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac.protocol import encode_envelope
from celeriac.testing.conformance import message, number, opened, run
from celeriac.transports.redis.broker import RedisBroker
from celeriac.transports.redis.resp import parse_target
from celeriac.transports.redis.wakeup import Wakeups
from servers import REDIS_URL, require_redis, scratch_prefix

SEP = "\x06\x16"


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_prefix("test-wakeup") as value:
        yield value


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = require_redis()
    yield client
    client.close()


def broker(prefix: str, **options: Any) -> RedisBroker:
    return RedisBroker(REDIS_URL, options={"global_keyprefix": prefix, **options})


@pytest.mark.parametrize("bucket", ["", f"{SEP}3", f"{SEP}9"])
def test_a_foreign_push_wakes_a_waiting_fetch(prefix: str, r: redis.Redis, bucket: str) -> None:
    """A plain LPUSH (what kombu, celery-node and celery-ts do) to the queue's list of
    that priority, with no wake-up token: the fetch returns it well before its timeout."""

    async def main() -> None:
        async with opened(broker(prefix, polling_interval=30)) as b:
            assert await b.fetch(["q"], 1, 0.0) == []
            fetching = asyncio.ensure_future(b.fetch(["q"], 1, 20.0))
            await _waiting(b, 5)  # its four priority lists and its notify list
            pushed = time.monotonic()
            await asyncio.to_thread(r.lpush, f"{prefix}q{bucket}", encode_envelope(message(7)))
            (got,) = await asyncio.wait_for(fetching, 10)
            assert number(got) == 7
            assert time.monotonic() - pushed < 5  # the bound only fails on polling
            await b.ack([got])

    run(main())


async def _waiting(b: RedisBroker, keys: int) -> None:
    """Until the broker's fetch waits on ``keys`` connected connections."""
    deadline = time.monotonic() + 10
    while True:
        watches = list(b._wakeups._watches.values())
        armed = [w for w in watches if w.task is not None and not w.task.done()]
        if len(armed) >= keys and all(w.conn.connected for w in armed):
            return
        assert time.monotonic() < deadline, "the fetch never waited"
        await asyncio.sleep(0.01)


def test_the_wait_leaves_the_list_as_it_was(prefix: str, r: redis.Redis) -> None:
    key = f"{prefix}q"
    r.lpush(key, b"c", b"b", b"a")

    async def main() -> None:
        wakeups = Wakeups(parse_target(REDIS_URL, {}), REDIS_URL, 1.0)
        try:
            for _ in range(3):
                assert await wakeups.wait([key], 5.0)
        finally:
            wakeups.close()

    run(main())
    assert r.lrange(key, 0, -1) == [b"a", b"b", b"c"]


def test_a_silent_connection_is_given_up_within_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that accepts and then never answers (a dead NAT entry, a frozen VM)."""

    async def main() -> None:
        writers: list[asyncio.StreamWriter] = []
        readers: list[asyncio.StreamReader] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            readers.append(reader)
            writers.append(writer)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0"
        wakeups = Wakeups(parse_target(url, {}), url, 1.0, block=0.2, slack=0.5)
        try:
            started = time.monotonic()
            assert await wakeups.wait(["q"], 30.0)  # woken: the caller's fetch looks
            assert 0.6 <= time.monotonic() - started < 5
            # the client closed the dead connection (EOF after its BLMOVE)
            assert b"BLMOVE" in await asyncio.wait_for(readers[0].read(), 5)
        finally:
            wakeups.close()
            for writer in writers:
                writer.close()
            server.close()
            await server.wait_closed()

    with caplog.at_level(logging.WARNING, "celeriac.transports.redis.broker"):
        run(main())
    assert "no reply within 0.7 s" in caplog.text


def test_a_key_of_another_type_falls_back_to_polling(
    prefix: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"{prefix}not-a-list"
    r.set(key, b"x")

    async def main() -> None:
        wakeups = Wakeups(parse_target(REDIS_URL, {}), REDIS_URL, 0.3)
        try:
            started = time.monotonic()
            for _ in range(4):  # each turn: one failed wait (retry backoff up to 0.3 s)
                assert await wakeups.wait([key], 10.0)
            assert time.monotonic() - started < 5
        finally:
            wakeups.close()

    with caplog.at_level(logging.WARNING, "celeriac.transports.redis.broker"):
        run(main())
    assert caplog.text.count("WRONGTYPE") == 1  # said once, not per retry
