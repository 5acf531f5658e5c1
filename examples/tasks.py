"""The quick-start tasks: the same code as Celery's, with the import line changed."""

import asyncio

from celeriac import Celery

app = Celery("tasks")  # no broker given: the embedded SQLite file ./celeriac.sqlite3


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(bind=True)
async def slow_echo(self, text: str) -> str:  # async def tasks are first-class
    await asyncio.sleep(0.1)
    return f"{text} (task {self.request.id[:8]})"
