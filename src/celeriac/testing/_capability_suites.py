"""Conformance mixins for the broker capabilities of
:mod:`celeriac.transports.capabilities`, one per Protocol; see
:mod:`celeriac.testing.conformance`.

Each mixin's first test asserts that the broker implements the Protocol, so a test class
that claims a capability its broker lacks fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from celeriac.protocol import Message, control_message, control_reply, json_loads, parse_control
from celeriac.protocol.stamps import revocation_keys
from celeriac.testing._broker_suite import publish_raw
from celeriac.testing._support import QUEUE, BrokerFactory, message, number, opened, run
from celeriac.transports.broker import Broker, Delivery, Revocation
from celeriac.transports.capabilities import (
    Broadcast,
    DeadLetterRemoval,
    DeadLetterStore,
    LeaseRecovery,
    QueueBindings,
    RateLimitStore,
    RemoteControl,
    RevocationListing,
    RevocationStore,
)

#: The longest a capability test waits for something that should take milliseconds.
BOUND = 10.0


class LeaseRecoveryConformance:
    """:class:`LeaseRecovery`: leases that expire and that a supervisor hands back."""

    def test_lease_recovery_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), LeaseRecovery)

    def test_expired_lease_redelivers_with_next_count(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory({"visibility_timeout": 0.2})) as broker:
                await broker.publish(QUEUE, message(1))
                first = await broker.fetch([QUEUE], 1, 5.0)
                leased_at = time.monotonic()
                again = await broker.fetch([QUEUE], 1, 5.0)
                assert time.monotonic() - leased_at >= 0.15
                assert [(number(d), d.delivery_count) for d in first] == [(1, 1)]
                assert [(number(d), d.delivery_count) for d in again] == [(1, 2)]
                await broker.ack(again)

        run(main())

    def test_recover_returns_only_that_consumers_messages(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as a, opened(broker_factory()) as b:
                assert isinstance(a, LeaseRecovery)
                a.consumer_id, b.consumer_id = "conformance-a", "conformance-b"
                await a.publish_many([(QUEUE, message(n), 0, None) for n in range(4)])
                mine = await a.fetch([QUEUE], 2, 5.0)
                theirs = await b.fetch([QUEUE], 2, 5.0)
                assert await a.recover("conformance-b") == 2
                back = await a.fetch([QUEUE], 4, 5.0)
                assert sorted(number(d) for d in back) == sorted(number(d) for d in theirs)
                assert {d.delivery_count for d in back} == {2}  # worker loss counts
                assert await a.fetch([QUEUE], 4, 0.0) == []
                await a.ack([*mine, *back])

        run(main())

    def test_recover_keeps_the_deliveries_a_live_consumer_names(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as a:
                assert isinstance(a, LeaseRecovery)
                a.consumer_id = "conformance-live"
                await a.publish_many([(QUEUE, message(n), 0, None) for n in range(3)])
                held = await a.fetch([QUEUE], 3, 5.0)
                assert len(held) == 3
                # the consumer knows of the first two; the third's fetch reply was "lost"
                assert await a.recover("conformance-live", held[:2]) == 1
                back = await a.fetch([QUEUE], 3, 5.0)
                assert [number(d) for d in back] == [number(held[2])]
                await a.ack(held[:2])  # the kept leases are still valid: the acks count
                await a.ack(back)
                assert await a.recover("conformance-live") == 0  # nothing left leased
                assert await a.fetch([QUEUE], 3, 0.0) == []

        run(main())

    def test_envelopes_sharing_a_delivery_tag_keep_their_own_leases(
        self, broker_factory: BrokerFactory
    ) -> None:
        """Two different envelopes with one ``delivery_tag`` (a non-kombu producer, a
        tool that re-sends envelopes): both are leased, both come back when their
        consumer dies, and acking one leaves the other leased."""

        async def main() -> None:
            async with opened(broker_factory()) as a:
                assert isinstance(a, LeaseRecovery)
                a.consumer_id = "conformance-shared"
                shared = [message(n) for n in range(2)]
                for m in shared:
                    m.properties["delivery_tag"] = "conformance-shared-tag"
                await a.publish_many([(QUEUE, m, 0, None) for m in shared])
                held = await _fetch_n(a, 2)
                assert sorted(number(d) for d in held) == [0, 1]
                assert len({d.tag for d in held}) == 2
                assert await a.recover("conformance-shared") == 2  # its process died
                back = await _fetch_n(a, 2)
                assert sorted(number(d) for d in back) == [0, 1]
                await a.ack(back[:1])
                assert await a.recover("conformance-shared", back[1:]) == 0
                assert await a.fetch([QUEUE], 2, 0.0) == []  # the other is still leased
                await a.ack(back[1:])
                assert await a.recover("conformance-shared") == 0

        run(main())


async def _fetch_n(broker: Broker, n: int) -> list[Delivery]:
    """Fetch until ``n`` deliveries came (a broker may hand them out one at a time)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + BOUND
    while len(got) < n and time.monotonic() < deadline:
        got += await broker.fetch([QUEUE], n - len(got), BOUND)
    return got


class RevocationListingConformance:
    """:class:`RevocationListing`: the live revocations by id (``inspect revoked``)."""

    def test_revoked_ids_lists_the_live_revocations_newest_first(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as b:
                assert isinstance(b, RevocationListing) and isinstance(b, RevocationStore)
                old, new, short = (uuid.uuid4().hex for _ in range(3))
                await b.revoke([old], 60.0)
                await b.revoke([new], 120.0)
                await b.revoke([short], 0.3)
                live = await b.revoked_ids(50_000)
                assert live.index(new) < live.index(old)
                assert await b.revoked_ids(1) == [new]
                # the short one expires (time passing is the event here: poll, bounded)
                deadline = time.monotonic() + BOUND
                while short in await b.revoked_ids(50_000) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                live = await b.revoked_ids(50_000)
                assert short not in live and {old, new} <= set(live)

        run(main())


class RevocationConformance:
    """:class:`RevocationStore`: durable revocations every instance sees."""

    def test_revocation_store_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), RevocationStore)

    def test_revocations_reach_fetched_batches_until_they_expire(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as b:
                assert isinstance(b, RevocationStore)
                first, second = message(1), message(2)
                ids = [first.task_id or "", second.task_id or ""]
                await b.publish_many([(QUEUE, first, 0, None), (QUEUE, second, 0, None)])
                batch = await b.fetch([QUEUE], 2, 5.0)
                assert len(batch) == 2
                assert await b.revoked_among(batch) == {}
                await b.requeue(batch)
                await b.revoke(ids[:1], 60.0, terminate=True, signal="SIGKILL")
                await b.revoke(ids[1:], 0.5)
                batch = await b.fetch([QUEUE], 2, 5.0)
                found = await b.revoked_among(batch)
                assert found.get(ids[0]) == Revocation(True, "SIGKILL")
                assert await b.revoked(ids[:1]) == {ids[0]: Revocation(True, "SIGKILL")}
                # the short one expires (time passing is the event here: poll, bounded)
                deadline = time.monotonic() + 10
                while ids[1] in await b.revoked(ids) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                assert await b.revoked(ids) == {ids[0]: Revocation(True, "SIGKILL")}
                await b.ack(batch)

        run(main())

    def test_a_stamp_revocation_reaches_stamped_messages(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as b:
                assert isinstance(b, RevocationStore)
                wave = uuid.uuid4().hex
                messages = [
                    message(n, extra_headers={"stamped_headers": ["wave"], "stamps": stamps})
                    for n, stamps in enumerate(
                        [{"wave": wave}, {"wave": ["other", wave]}, {"wave": "other"}]
                    )
                ]
                await b.publish_many([(QUEUE, m, 0, None) for m in messages])
                await b.revoke(revocation_keys({"wave": wave}), 60.0, terminate=True)
                batch = await b.fetch([QUEUE], 3, 5.0)
                assert len(batch) == 3
                found = await b.revoked_among(batch)
                assert found == {m.task_id: Revocation(True, None) for m in messages[:2]}
                await b.ack(batch)

        run(main())

    def test_a_revocation_reaches_another_instance(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as a, opened(broker_factory()) as b:
                assert isinstance(a, RevocationStore) and isinstance(b, RevocationStore)
                task_id = str(uuid.uuid4())
                assert await b.revoked([task_id]) == {}
                await a.revoke([task_id], 60.0)
                deadline = time.monotonic() + BOUND  # a stream may take a moment to arrive
                while task_id not in await b.revoked([task_id]):
                    assert time.monotonic() < deadline, "the revocation never reached b"
                    await asyncio.sleep(0.01)
                assert await b.revoked([task_id]) == {task_id: Revocation(False, None)}

        run(main())


async def _take_one(broker: RateLimitStore, key: str, rate: float, capacity: float) -> float:
    """Take a token, waiting as the bucket says (bounded); the seconds it took."""
    start = time.monotonic()
    while (wait := await broker.take_token(key, rate, capacity)) > 0:
        assert wait <= 1.0 / rate + 0.5, f"a wait of {wait}s at {rate} tokens/s"
        assert time.monotonic() - start < BOUND, "no token came"
        await asyncio.sleep(wait)  # the wait the bucket asked for is the event here
    return time.monotonic() - start


class RateLimitConformance:
    """:class:`RateLimitStore`: global token buckets shared by every instance."""

    def test_rate_limit_store_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), RateLimitStore)

    def test_first_take_from_a_new_bucket(self, broker_factory: BrokerFactory) -> None:
        """A new bucket gives its first token at once or within one refill period
        (a bucket may start full or empty), and a taker told to wait gets it then."""
        rate, key = 20.0, f"conformance.rate.{uuid.uuid4().hex}"

        async def main() -> None:
            async with opened(broker_factory()) as broker:
                assert isinstance(broker, RateLimitStore)
                first = await broker.take_token(key, rate, 1.0)
                assert 0.0 <= first <= 1.0 / rate + 0.5
                if first > 0:
                    await asyncio.sleep(first)
                    await _take_one(broker, key, rate, 1.0)

        run(main())

    def test_one_bucket_is_shared_by_two_instances(self, broker_factory: BrokerFactory) -> None:
        rate, key = 2.0, f"conformance.rate.{uuid.uuid4().hex}"  # a token every 0.5 s

        async def main() -> None:
            async with opened(broker_factory()) as a, opened(broker_factory()) as b:
                assert isinstance(a, RateLimitStore) and isinstance(b, RateLimitStore)
                await _take_one(a, key, rate, 1.0)
                # the only token is a's: b, another instance, waits for the next refill
                wait = await b.take_token(key, rate, 1.0)
                assert 0.0 < wait <= 1.0 / rate + 0.5
                await _take_one(b, key, rate, 1.0)
                assert await a.take_token(key, rate, 1.0) > 0.0

        run(main())

    def test_refill_rate_holds_across_instances(self, broker_factory: BrokerFactory) -> None:
        """Two instances taking as fast as the bucket lets them get ``total`` tokens no
        faster than the rate allows (and in bounded time)."""
        rate, capacity, total = 20.0, 1.0, 8
        key = f"conformance.rate.{uuid.uuid4().hex}"
        taken: list[float] = []

        async def taker(broker: RateLimitStore) -> None:
            while len(taken) < total:
                await _take_one(broker, key, rate, capacity)
                taken.append(time.monotonic())

        async def main() -> float:
            async with opened(broker_factory()) as a, opened(broker_factory()) as b:
                assert isinstance(a, RateLimitStore) and isinstance(b, RateLimitStore)
                start = time.monotonic()
                await asyncio.wait_for(asyncio.gather(taker(a), taker(b)), 2 * BOUND)
                return taken[total - 1] - start

        elapsed = run(main())
        # a full bucket gives `capacity` at once, then one per 1/rate s (a grid clock may
        # put its first refill right away): one bucket for both, not one per instance
        assert elapsed >= (total - capacity - 1) / rate - 0.02, elapsed


class BroadcastConformance:
    """:class:`Broadcast`: fire-and-forget remote-control requests."""

    def test_broadcast_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), Broadcast)

    def test_broadcast_with_nobody_listening_is_fine(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                assert isinstance(broker, Broadcast)
                await broker.broadcast_control(control_message("conformance_noop", {}))

        run(main())


async def _listening(
    broker: RemoteControl, hostname: str, got: asyncio.Queue[Message]
) -> asyncio.Task[None]:
    """Start ``broker.listen_control`` putting each request in ``got``; return once
    requests can arrive."""
    ready = asyncio.Event()

    async def handler(request: Message) -> None:
        await got.put(request)

    task = asyncio.create_task(broker.listen_control(hostname, handler, ready.set))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, timeout=BOUND, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()  # raises what stopped it
    assert ready.is_set(), "listen_control never said it listens"
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _request_with(got: asyncio.Queue[Message], marker: str) -> Message:
    """The next request in ``got`` whose arguments carry ``marker`` (others are from
    elsewhere on a shared server)."""
    while True:
        request = await asyncio.wait_for(got.get(), BOUND)
        body = json_loads(request.body)
        arguments = body.get("arguments") if isinstance(body, dict) else None
        if isinstance(arguments, dict) and arguments.get("marker") == marker:
            return request


class RemoteControlConformance(BroadcastConformance):
    """:class:`RemoteControl`: workers listen and reply, clients ask and collect."""

    def test_remote_control_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), RemoteControl)

    def test_broadcast_reaches_a_listener(self, broker_factory: BrokerFactory) -> None:
        marker = uuid.uuid4().hex

        async def main() -> None:
            async with opened(broker_factory()) as worker, opened(broker_factory()) as client:
                assert isinstance(worker, RemoteControl) and isinstance(client, Broadcast)
                got: asyncio.Queue[Message] = asyncio.Queue()
                listener = await _listening(worker, "conformance@a", got)
                try:
                    sent = control_message("conformance_ping", {"marker": marker})
                    await client.broadcast_control(sent)
                    request = parse_control(await _request_with(got, marker))
                    assert (request.method, request.reply_key) == ("conformance_ping", None)
                    assert request.arguments == {"marker": marker}
                finally:
                    await _stop(listener)

        run(main())

    def test_request_and_reply_round_trip(self, broker_factory: BrokerFactory) -> None:
        marker = uuid.uuid4().hex
        hostnames = ["conformance@a", "conformance@b"]

        async def serve(worker: Broker, got: asyncio.Queue[Message], hostname: str) -> None:
            assert isinstance(worker, RemoteControl)
            request = parse_control(await _request_with(got, marker))
            assert request.reply_key is not None and request.ticket is not None
            reply = control_reply(hostname, request, {"ok": request.arguments["marker"]})
            await worker.reply_control(request.reply_key, reply)

        async def main() -> None:
            async with (
                opened(broker_factory()) as a,
                opened(broker_factory()) as b,
                opened(broker_factory()) as client,
            ):
                assert isinstance(a, RemoteControl) and isinstance(b, RemoteControl)
                assert isinstance(client, RemoteControl)
                queues: list[asyncio.Queue[Message]] = [asyncio.Queue(), asyncio.Queue()]
                listeners = [
                    await _listening(w, h, q)
                    for w, h, q in zip((a, b), hostnames, queues, strict=True)
                ]
                servers = [
                    asyncio.create_task(serve(w, q, h))
                    for w, q, h in zip((a, b), queues, hostnames, strict=True)
                ]
                try:
                    key, ticket = uuid.uuid4().hex, uuid.uuid4().hex
                    request = control_message(
                        "conformance_ping", {"marker": marker}, reply=(key, ticket), timeout=BOUND
                    )
                    start = time.monotonic()
                    replies = await client.request_control(request, key, BOUND, 2)
                    assert time.monotonic() - start < BOUND - 1  # the limit ended it
                    await asyncio.wait_for(asyncio.gather(*servers), BOUND)
                finally:
                    for task in [*servers, *listeners]:
                        await _stop(task)
                assert {r.headers.get("ticket") for r in replies} == {ticket}
                bodies = [json_loads(r.body) for r in replies]
                assert sorted(bodies, key=str) == sorted(
                    ({h: {"ok": marker}} for h in hostnames), key=str
                )

        run(main())

    def test_request_without_replies_ends_at_its_timeout(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as client:
                assert isinstance(client, RemoteControl)
                key = uuid.uuid4().hex
                request = control_message(
                    "conformance_void", {}, reply=(key, uuid.uuid4().hex), timeout=0.3
                )
                start = time.monotonic()
                assert await client.request_control(request, key, 0.3, None) == []
                assert 0.25 <= time.monotonic() - start < BOUND

        run(main())


class DeadLetterRemovalConformance:
    """:class:`DeadLetterRemoval`: one dead letter taken out, once (requeue, delete)."""

    def test_dead_letter_removal_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), DeadLetterRemoval)

    def test_a_dead_letter_is_removed_once(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker, opened(broker_factory()) as other:
                for n in (1, 2):
                    await broker.publish(QUEUE, message(n))
                    (got,) = await broker.fetch([QUEUE], 1, 5.0)
                    await broker.dead_letter(got, f"conformance: poison {n}")
                assert isinstance(broker, DeadLetterStore)
                assert isinstance(other, DeadLetterRemoval)
                second, first = await broker.dead_letters()
                assert await other.remove_dead_letter(first) is True
                assert await other.remove_dead_letter(first) is False
                assert await broker.dead_letters() == [second]

        run(main())


class DeadLetterConformance:
    """:class:`DeadLetterStore`: what the broker set aside can be read back."""

    def test_dead_letter_store_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), DeadLetterStore)

    def test_dead_letter_keeps_bytes_and_reason(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish(QUEUE, message(1))
                (got,) = await broker.fetch([QUEUE], 1, 5.0)
                await broker.dead_letter(got, "conformance: poison")
                assert await broker.fetch([QUEUE], 1, 0.0) == []
                assert await broker.size(QUEUE) == 0
                assert isinstance(broker, DeadLetterStore)
                letters = await broker.dead_letters()
                assert [(x.queue, x.raw, x.reason) for x in letters] == [
                    (QUEUE, got.raw, "conformance: poison")
                ]
                assert abs(letters[0].failed_at - time.time()) < 60

        run(main())

    def test_garbage_bytes_are_dead_lettered_as_they_came(
        self, broker_factory: BrokerFactory
    ) -> None:
        garbage = b"\xff\x00 this is not an envelope"

        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await publish_raw(broker, QUEUE, garbage)
                (got,) = await broker.fetch([QUEUE], 1, 5.0)
                assert got.message is None and got.error
                await broker.dead_letter(got, got.error)
                assert isinstance(broker, DeadLetterStore)
                assert (await broker.dead_letters())[0].raw == garbage

        run(main())

    def test_identical_garbage_messages_are_two_dead_letters(
        self, broker_factory: BrokerFactory
    ) -> None:
        garbage = b"\xfe the same bytes twice, not an envelope"

        async def main() -> None:
            async with opened(broker_factory()) as broker:
                assert isinstance(broker, DeadLetterStore)
                await publish_raw(broker, QUEUE, garbage)
                await publish_raw(broker, QUEUE, garbage)
                got = await _fetch_n(broker, 2)
                assert len(got) == 2 and all(d.message is None for d in got)
                for delivery in got:
                    await broker.dead_letter(delivery, delivery.error or "garbage")
                assert [x.raw for x in await broker.dead_letters()] == [garbage, garbage]
                assert await broker.size(QUEUE) == 0

        run(main())

    def test_dead_letters_newest_first_and_limited(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                assert isinstance(broker, DeadLetterStore)
                await broker.publish_many([(QUEUE, message(n), 0, None) for n in range(3)])
                for n in range(3):
                    (got,) = await broker.fetch([QUEUE], 1, 5.0)
                    await broker.dead_letter(got, f"conformance: {n}")
                letters = await broker.dead_letters(2)
                assert [x.reason for x in letters] == ["conformance: 2", "conformance: 1"]

        run(main())


__all__ = [
    "BroadcastConformance",
    "DeadLetterConformance",
    "DeadLetterRemovalConformance",
    "LeaseRecoveryConformance",
    "RateLimitConformance",
    "RemoteControlConformance",
    "RevocationConformance",
    "RevocationListingConformance",
]


class QueueBindingsConformance:
    """:class:`QueueBindings`: binding a declared queue to another exchange and routing
    key (again, or on another instance) is harmless, and the queue still delivers."""

    def test_queue_bindings_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), QueueBindings)

    def test_a_bound_queue_still_delivers(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker, opened(broker_factory()) as other:
                assert isinstance(broker, QueueBindings) and isinstance(other, QueueBindings)
                await broker.declare(QUEUE)
                await broker.bind(QUEUE, f"{QUEUE}.exchange", "conformance.key")
                await broker.bind(QUEUE, f"{QUEUE}.exchange", "conformance.key")
                await other.declare(QUEUE)
                await other.bind(QUEUE, f"{QUEUE}.exchange", "conformance.key")
                await broker.publish(QUEUE, message(1))
                (got,) = await other.fetch([QUEUE], 1, 5.0)
                assert number(got) == 1
                await other.ack([got])

        run(main())
