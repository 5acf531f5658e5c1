"""What the dashboard needs of the stores, on the memory, SQLite and Redis transports:
a result backend lists its newest results (``ResultHistory``), and a broker takes one
dead letter out (``DeadLetterRemoval``), once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.protocol import build_task_message
from celeriac.transports import create_backend, create_broker
from celeriac.transports.capabilities import DeadLetterRemoval, DeadLetterStore, ResultHistory
from celeriac.transports.memory import backend as memory_backend
from celeriac.transports.memory import broker as memory_broker
from servers import leased_database


@pytest.fixture(params=["memory", "sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://dashboard-stores"
        memory_backend.clear_stores()
        memory_broker.clear_stores()
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stores.db'}"
    else:
        with leased_database() as redis_url:
            yield redis_url


def test_a_backend_lists_its_newest_results(url: str) -> None:
    async def run() -> list[str]:
        backend = create_backend(url)
        await backend.connect()
        try:
            assert isinstance(backend, ResultHistory)
            for n, day in enumerate(["2026-12-01", "2026-12-03", "2026-12-02"]):
                meta = {"status": "SUCCESS", "result": n, "date_done": f"{day}T00:00:00+00:00"}
                await backend.store(f"task-{n}", meta, None)
            return [task_id for task_id, _ in await backend.recent_results(2)]
        finally:
            await backend.close()

    assert asyncio.run(run()) == ["task-1", "task-2"]


def test_a_dead_letter_is_removed_once(url: str) -> None:
    async def run() -> None:
        broker = create_broker(url)
        await broker.connect()
        try:
            assert isinstance(broker, DeadLetterRemoval) and isinstance(broker, DeadLetterStore)
            await broker.declare("dlq")
            await broker.publish("dlq", build_task_message("t.x", (1,), {}, task_id="dl-1"))
            (delivery,) = await broker.fetch(["dlq"], 1, 5.0)
            await broker.dead_letter(delivery, "set aside by the test")
            (letter,) = await broker.dead_letters()
            assert letter.reason == "set aside by the test" and letter.queue == "dlq"
            assert await broker.remove_dead_letter(letter) is True
            assert await broker.remove_dead_letter(letter) is False
            assert await broker.dead_letters() == []
        finally:
            await broker.close()

    asyncio.run(run())
