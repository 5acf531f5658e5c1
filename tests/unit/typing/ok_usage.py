"""Public API usage that must type-check under mypy --strict."""

from __future__ import annotations

from typing import Any

from celeriac import Celery
from celeriac.result import AsyncResult

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
