import time

from celeriac import Celery
from celeriac.exceptions import SoftTimeLimitExceeded
from celeriac.testing import TestWorker

app = Celery("retries", broker="memory://")
attempts: dict[str, int] = {}


@app.task(bind=True, max_retries=5)
def flaky(self, key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 3:
        # a retry is a new message with the same id, waiting in the broker
        raise self.retry(countdown=0.05)
    return f"done after {attempts[key]} attempts"


@app.task(autoretry_for=(ConnectionError,), retry_backoff=0.05, retry_jitter=False)
def fetch(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 2:
        raise ConnectionError("try again")  # retried by autoretry_for
    return "fetched"


@app.task(soft_time_limit=0.2)
def slow() -> str:
    try:
        while True:  # the soft limit raises inside the task
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "stopped in time"


@app.task(rate_limit="20/s")  # at most 20 a second per worker process
def polite(i: int) -> int:
    return i


with TestWorker(app) as worker:
    assert flaky.delay("a").get(timeout=10) == "done after 3 attempts"
    assert fetch.delay("b").get(timeout=10) == "fetched"
    assert slow.delay().get(timeout=10) == "stopped in time"
    assert [r.get(timeout=10) for r in [polite.delay(i) for i in range(5)]] == [0, 1, 2, 3, 4]
    worker.join()
