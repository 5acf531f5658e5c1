"""Each marked line must be a mypy error."""

from __future__ import annotations

from celeriac import Celery

app = Celery("typed", broker="memory://typed")


@app.task
def add(x: int, y: int) -> int:
    return x + y


add.delay("a", 2)  # E: wrong argument type
add.delay(1)  # E: missing argument
name: str = add.delay(1, 2).get()  # E: get() returns int
