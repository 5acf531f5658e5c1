from celeriac import Celery, chain, chord, group
from celeriac.testing import TestWorker

app = Celery("canvas", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def total(numbers: list[int]) -> int:
    return sum(numbers)


with TestWorker(app, concurrency=4) as worker:
    # a chain passes each result on as the first argument of the next step: (1 + 2) * 10
    assert chain(add.s(1, 2), mul.s(10)).delay().get(timeout=10) == 30
    assert (add.s(1, 2) | mul.s(10)).delay().get(timeout=10) == 30  # the same chain

    # a group runs its tasks in parallel; the results come back in order
    assert group(add.s(i, i) for i in range(5)).delay().get(timeout=10) == [0, 2, 4, 6, 8]

    # a chord runs its body once, with the results of the whole header
    assert chord(add.s(i, i) for i in range(5))(total.s()).get(timeout=10) == 20

    # map and chunks: one task over many arguments
    assert add.chunks([(i, i) for i in range(6)], 3).delay().get(timeout=10) == [
        [0, 2, 4],
        [6, 8, 10],
    ]
    # an immutable signature (.si) ignores the previous step's result
    assert chain(add.s(1, 1), add.si(5, 5)).delay().get(timeout=10) == 10
    worker.join()
