# tasks.py: the getting-started app, on the embedded SQLite broker (no server).
import asyncio

from celeriac import Celery

app = Celery("tasks")  # no broker given: the SQLite file ./celeriac.sqlite3


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
async def greet(self, name: str) -> str:  # async def tasks are first-class
    await asyncio.sleep(0.01)
    return f"hello {name}, from task {self.request.id[:8]}"
