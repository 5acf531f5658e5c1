from typing import Any

from celeriac import Celery, Middleware
from celeriac.signals import task_success
from celeriac.testing import TestWorker

app = Celery("hooks", broker="memory://")
seen: list[str] = []


@task_success.connect
def on_success(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
    seen.append(f"success {sender.name} -> {result}")  # sender is the task


class Timing(Middleware):
    """Counts the tasks each worker process runs (a hook left alone costs nothing)."""

    def __init__(self) -> None:
        self.started = 0

    def before_task(self, task: Any, request: Any) -> None:
        self.started += 1


timing = Timing()
app.add_middleware(timing)


@app.task
def add(x: int, y: int) -> int:
    return x + y


with TestWorker(app) as worker:
    add.delay(1, 2).get(timeout=5)
    worker.join()

assert seen == ["success hooks.add -> 3"], seen
assert timing.started == 1
