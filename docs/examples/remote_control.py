# remote_control.py: a worker's tasks and a custom command, and a client asking workers.
#   celeriac -A remote_control worker     (on Redis or RabbitMQ: CELERY_BROKER_URL=...)
#   python remote_control.py              (asks the running workers)
import time

from celeriac import Celery
from celeriac.worker.control import inspect_command

app = Celery("remote_control", broker="redis://localhost:6379/0")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@inspect_command()
def current_hostname(state):  # registered in every worker that imports this module
    return {"hostname": state.hostname}


if __name__ == "__main__":
    deadline = time.monotonic() + 30
    while not (pongs := app.control.ping(timeout=1.0)):  # [{"celeriac@host": {"ok": "pong"}}]
        assert time.monotonic() < deadline, "no worker answered"
    worker = next(iter(pongs[0]))
    print(pongs)

    registered = app.control.inspect().registered()  # {"celeriac@host": ["remote_control.add"]}
    assert "remote_control.add" in registered[worker], registered

    answers = app.control.inspect()._request("current_hostname")  # a custom command
    assert answers[worker] == {"hostname": worker}, answers

    app.control.broadcast("shutdown")  # a warm shutdown of every worker
