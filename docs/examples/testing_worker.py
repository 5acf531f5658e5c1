from celeriac import Celery
from celeriac.testing import TestWorker

app = Celery("tests", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


def test_add() -> None:
    with TestWorker(app) as worker:  # the real worker code, in this process
        result = add.delay(2, 2)
        worker.join()  # returns when the queues are drained
        assert result.get(timeout=5) == 4


if __name__ == "__main__":
    test_add()
