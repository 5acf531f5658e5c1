"""RabbitMQ's control state: the revocation stream (``celeriac.revoked``) read by every
worker, and the global rate limit's token bucket with its elected refiller.

Queue names and the vhost are the test's own (see ``conftest.py``); waits are on events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

from celeriac import Celery
from celeriac.exceptions import BrokerError, TaskRevokedError
from celeriac.testing import TestWorker
from celeriac.testing.conformance import message, opened
from celeriac.transports.amqp import control as _ctl
from celeriac.transports.amqp.broker import AMQPBroker
from celeriac.transports.broker import Revocation
from servers import (
    delete_queues,
    rabbitmqctl,
    vhost_of,
)
from support import closing


@pytest.fixture
def queue(rabbit: str) -> Iterator[str]:
    """A queue name of the test's own, deleted (with its delay levels) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues(rabbit, [name])


def test_a_reader_started_after_a_revoke_sees_it_at_once(rabbit: str) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]

    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as revoker:
            await revoker.revoke(ids[:2], 60.0, terminate=True, signal="SIGTERM")
            await revoker.revoke(ids[1:2], 60.0)  # the newest record of an id wins
            # a reader that did not exist then: its first answer already has them
            async with opened(AMQPBroker(rabbit)) as reader:
                assert await reader.revoked(ids) == {
                    ids[0]: Revocation(True, "SIGTERM"),
                    ids[1]: Revocation(False, None),
                }
            # the stream keeps them for the next one too, and nothing else
            async with opened(AMQPBroker(rabbit)) as later:
                assert set(await later.revoked(ids)) == set(ids[:2])

    asyncio.run(main())
    out = rabbitmqctl("list_queues", "-p", vhost_of(rabbit), "name", "type", "arguments", "-q")
    line = next(x for x in out.splitlines() if x.startswith("celeriac.revoked\t"))
    assert "stream" in line and "x-max-age" in line


def test_a_following_reader_sees_a_revoke_before_the_task_sent_after_it(
    rabbit: str,
    queue: str,
) -> None:
    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as client, opened(AMQPBroker(rabbit)) as worker:
            await worker.revoked(["warm-up"])  # now following the stream
            await worker.fetch([queue], 1, 0.0)  # and consuming the queue
            for n in range(20):
                sent = message(n)
                assert sent.task_id
                await client.revoke([sent.task_id], 60.0)
                await client.publish(queue, sent)
                (got,) = await worker.fetch([queue], 1, 5.0)
                assert await worker.revoked([sent.task_id]), n  # no wait in between
                await worker.ack([got])

    asyncio.run(main())


def test_revocations_expire_and_a_reconnect_reads_on(rabbit: str) -> None:
    short, long, later = (str(uuid.uuid4()) for _ in range(3))

    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as revoker, opened(AMQPBroker(rabbit)) as reader:
            await revoker.revoke([short], 0.3)
            await revoker.revoke([long], 60.0)
            assert set(await reader.revoked([short, long])) == {short, long}
            # expiry is time passing: poll, bounded
            for _ in range(200):
                if short not in await reader.revoked([short]):
                    break
                await asyncio.sleep(0.05)
            assert await reader.revoked([short, long]) == {long: Revocation()}
            # a lost connection: the next call reconnects, reads on from where it was
            # and waits for what was appended meanwhile
            assert reader._s is not None
            await reader._s.conn.close()
            await revoker.revoke([later], 60.0)
            with contextlib.suppress(BrokerError):
                await reader.revoked([later])  # may report the loss once
            assert set(await reader.revoked([short, long, later])) == {long, later}
        async with opened(AMQPBroker(rabbit)) as fresh:  # a new reader skips expired ones
            assert set(await fresh.revoked([short, long, later])) == {long, later}

    asyncio.run(main())


def test_another_retention_uses_the_existing_stream(rabbit: str) -> None:
    task_id = str(uuid.uuid4())

    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as first:
            await first.revoke([task_id], 60.0)
        options = {"revoke_retention": 3600}
        async with opened(AMQPBroker(rabbit, options=options)) as other:
            await other.revoke([str(uuid.uuid4())], 60.0)
            assert task_id in await other.revoked([task_id])

    asyncio.run(main())


def test_a_worker_started_after_the_revoke_discards_the_task(rabbit: str, queue: str) -> None:
    app = Celery("t", broker=rabbit, task_default_queue=queue, set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with closing(app):
        doomed = add.delay(1, 1)
        doomed.revoke()
        with TestWorker(app, queues=[queue]):
            with pytest.raises(TaskRevokedError):
                doomed.get(timeout=10)
            assert add.delay(2, 2).get(timeout=10) == 4


def test_token_bucket_leadership_moves_when_the_leader_goes(
    rabbit: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = f"celeriac.rate.t-{uuid.uuid4().hex[:8]}"

    async def take(broker: AMQPBroker, count: int) -> None:
        taken = 0
        while taken < count:
            wait = await broker.take_token(key, 50.0, 1.0)
            if wait <= 0:
                taken += 1
            else:
                await asyncio.sleep(wait)

    def leads(broker: AMQPBroker) -> bool:
        bucket = broker._s.buckets.get(key) if broker._s else None
        return bucket is not None and bucket.baton is not None

    async def main() -> None:
        async with opened(AMQPBroker(rabbit)) as a, opened(AMQPBroker(rabbit)) as b:
            await take(a, 3)  # a joined first: it refills
            await take(b, 3)
            assert leads(a) and not leads(b)
            await a.close()  # its connection goes: RabbitMQ hands the baton to b
            await take(b, 3)
            assert leads(b)
            # an idle leader hands on leadership to a worker still taking
            monkeypatch.setattr(_ctl, "RESIGN_AFTER", 0.2)
            async with opened(AMQPBroker(rabbit)) as c:
                await take(c, 3)
                deadline = time.monotonic() + 10
                while not leads(c) and time.monotonic() < deadline:
                    await take(c, 1)
                assert leads(c) and not leads(b)
        async with opened(AMQPBroker(rabbit)) as d:  # nobody led meanwhile: d takes over
            await take(d, 3)
            assert leads(d)

    try:
        asyncio.run(main())
    finally:
        delete_queues(rabbit, [_ctl.tokens_queue(key), _ctl.leader_queue(key)])
