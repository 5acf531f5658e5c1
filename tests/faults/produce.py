"""The producer host of the several-hosts scenario: ``produce.py URL QUEUE COUNT
HISTORY_DIR`` publishes COUNT ``faulttasks.work`` tasks to QUEUE and appends each id, once
its publish has returned, to the history's ``enqueued.log``."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from celeriac import Celery
from faults.history import History


def main(url: str, queue: str, count: int, directory: Path) -> None:
    app = Celery("faults-producer", broker=url, set_as_current=False)
    history = History(directory)
    chance = random.Random(0)
    for _ in range(count):
        length = round(chance.uniform(0.0, 0.03), 4)
        history.enqueue([app.send_task("faulttasks.work", (length,), queue=queue).id])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
