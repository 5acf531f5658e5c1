from celeriac import Celery
from celeriac.testing import TestWorker

app = Celery("routing", broker="memory://")
app.conf.task_routes = {"routing.resize": {"queue": "images"}, "routing.report*": "slow"}


@app.task
def resize(name: str) -> str:
    return f"resized {name}"


@app.task
def report_daily() -> str:
    return "report"


@app.task
def add(x: int, y: int) -> int:
    return x + y


# a worker consumes the queues it is given (`celeriac worker -Q images,slow,celery`)
with TestWorker(app, queues=["images", "slow", "celery"]) as worker:
    assert resize.delay("cat.png").get(timeout=5) == "resized cat.png"
    assert report_daily.delay().get(timeout=5) == "report"
    # per call: another queue, and a priority (a higher number runs first)
    assert add.apply_async((1, 2), queue="slow", priority=9).get(timeout=5) == 3
    worker.join()
