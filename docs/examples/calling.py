from datetime import datetime, timedelta, timezone

from celeriac import Celery, states
from celeriac.exceptions import TaskRevokedError
from celeriac.testing import TestWorker

app = Celery("calling", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


with TestWorker(app) as worker:
    # delay(*args, **kwargs) is apply_async(args, kwargs) without options
    assert add.delay(1, 2).get(timeout=5) == 3
    assert add.apply_async((1, 2)).get(timeout=5) == 3

    # wait in the broker (not in a worker) for half a second, or until a moment
    later = add.apply_async((2, 3), countdown=0.5)
    at = add.apply_async((3, 4), eta=datetime.now(timezone.utc) + timedelta(seconds=0.5))
    assert later.get(timeout=10) == 5 and at.get(timeout=10) == 7

    # a task that is still waiting when it expires is not run: it is stored as REVOKED
    stale = add.apply_async((1, 1), countdown=1, expires=0.1)
    try:
        stale.get(timeout=10)
    except TaskRevokedError as exc:
        print(exc)  # task 5d94cd97-... expired
    assert stale.state == states.REVOKED

    # the result: state, value, and the id to find it again from any process
    result = add.delay(20, 22)
    assert result.get(timeout=5) == 42
    assert result.state == states.SUCCESS and result.successful()
    assert app.AsyncResult(result.id).get(timeout=5) == 42

    # send by name, as from a process that does not import the task's module
    assert app.send_task("calling.add", args=(5, 5)).get(timeout=5) == 10

    # apply() runs the task here and now, without a broker or worker
    assert add.apply((1, 1)).get() == 2
    worker.join()
