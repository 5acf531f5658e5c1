import os
import shutil
import tempfile

from celeriac import Celery
from celeriac.testing import TestWorker

here, folder = os.getcwd(), tempfile.mkdtemp()
os.chdir(folder)

default = Celery("proj")  # no broker: ./celeriac.sqlite3, in the current folder
relative = Celery("proj", broker="sqlite:///queue.db")  # ./queue.db: three slashes
absolute = Celery("proj", broker=f"sqlite:///{folder}/q.db")  # /tmp/.../q.db: four slashes

for app in (default, relative, absolute):

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with TestWorker(app) as worker:
        assert add.delay(1, 2).get(timeout=10) == 3  # results in the same file
        worker.join()

assert sorted(n for n in os.listdir(folder) if n.endswith((".db", ".sqlite3"))) == [
    "celeriac.sqlite3",
    "q.db",
    "queue.db",
]
os.chdir(here)
shutil.rmtree(folder)
