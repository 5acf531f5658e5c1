"""Conformance mixin for :class:`~celeriac.transports.capabilities.EventChannel`
(Celery's events); see :mod:`celeriac.testing.conformance`."""

from __future__ import annotations

import asyncio
import uuid

from celeriac.protocol import Message
from celeriac.protocol.events import event_message, read_events
from celeriac.testing._support import BrokerFactory, opened, run
from celeriac.transports.capabilities import EventChannel

BOUND = 10.0


async def _listen(
    broker: EventChannel, patterns: list[str], got: asyncio.Queue[Message]
) -> asyncio.Task[None]:
    ready = asyncio.Event()

    async def handler(message: Message) -> None:
        got.put_nowait(message)

    task = asyncio.get_running_loop().create_task(
        broker.listen_events(patterns, handler, ready.set)
    )
    await asyncio.wait_for(ready.wait(), BOUND)
    return task


class EventChannelConformance:
    """:class:`EventChannel`: every listener sees each event published after it listens,
    filtered by its routing-key patterns."""

    def test_event_channel_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), EventChannel)

    def test_every_listener_gets_the_events_its_patterns_match(
        self, broker_factory: BrokerFactory
    ) -> None:
        marker = str(uuid.uuid4())

        async def main() -> None:
            async with (
                opened(broker_factory()) as a,
                opened(broker_factory()) as b,
                opened(broker_factory()) as sender,
            ):
                assert isinstance(a, EventChannel) and isinstance(b, EventChannel)
                assert isinstance(sender, EventChannel)
                everything: asyncio.Queue[Message] = asyncio.Queue()
                workers: asyncio.Queue[Message] = asyncio.Queue()
                tasks = [
                    await _listen(a, ["#"], everything),
                    await _listen(b, ["worker.#"], workers),
                ]
                try:
                    batch = [{"type": "task-succeeded", "uuid": marker, "result": "4"}]
                    beat = {"type": "worker-heartbeat", "hostname": marker, "freq": 2.0}
                    await sender.publish_events(
                        [
                            ("task.multi", event_message(marker, "task.multi", batch)),
                            ("worker.heartbeat", event_message(marker, "worker.heartbeat", beat)),
                        ]
                    )
                    first = await asyncio.wait_for(everything.get(), BOUND)
                    second = await asyncio.wait_for(everything.get(), BOUND)
                    assert read_events(first) == batch
                    assert read_events(second) == [beat]
                    assert first.headers.get("hostname") == marker
                    only = await asyncio.wait_for(workers.get(), BOUND)
                    assert read_events(only) == [beat]
                    assert workers.empty()
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)

        run(main())


__all__ = ["EventChannelConformance"]
