"""Public API usage that must type-check under mypy --strict."""

from __future__ import annotations

from typing import Any

from celeriac import Celery
from celeriac.result import AsyncResult
from celeriac.schedules import crontab, schedstate, schedule, solar

app = Celery("typed", broker="memory://typed")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, name="typed.bound")
def bound(self: Any, text: str) -> str:
    return text


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


def use() -> None:
    result: AsyncResult[int] = add.delay(1, 2)
    total: int = result.get(timeout=1)
    label: str = bound.delay("a").get()
    body: bytes = fetch.delay("u").get()
    direct: int = add(1, 2)
    print(total, label, body, direct)


@app.on_after_configure.connect
def setup_periodic(sender: Celery, **kwargs: Any) -> None:
    name: str = sender.add_periodic_task(10.0, add.s(1, 2), name="every 10")
    sender.add_periodic_task(crontab(minute="*/15", day_of_week="mon-fri"), add.s(3, 4))
    print(name)


def periodic() -> None:
    state: schedstate = schedule(30).is_due(app.now())
    due: bool = state.is_due
    seconds: float = state.next
    every = crontab.from_string("0 9 * * mon")
    print(due, seconds, every.remaining_estimate(app.now()), solar("sunrise", 48.8, 2.3))
    app.beat.add("stored", add, every, args=(1, 2))
    app.beat.remove("stored")
