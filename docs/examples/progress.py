import threading
import time

from celeriac import Celery
from celeriac.testing import TestWorker

app = Celery("progress", broker="memory://")
go_on = threading.Event()  # holds the task half-way, so that its progress can be seen


@app.task(bind=True)
def crunch(self, total: int) -> int:
    for done in range(total):
        self.update_state(state="PROGRESS", meta={"done": done, "total": total})
        if done == 1:
            go_on.wait(10)
    return total


with TestWorker(app) as worker:
    result = crunch.delay(3)
    deadline = time.monotonic() + 10
    while result.state != "PROGRESS" or result.info["done"] < 1:
        assert time.monotonic() < deadline, result.state
        time.sleep(0.01)
    print(result.state, result.info)  # PROGRESS {'done': 1, 'total': 3}
    go_on.set()
    assert result.get(timeout=10) == 3  # the final state replaces the progress
    assert result.state == "SUCCESS"
    worker.join()
