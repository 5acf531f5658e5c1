"""Canvas across Celery and celeriac on one Redis server.

(a) A celeriac client sends chains, groups and chords to a real Celery worker and reads
    the results (the Celery worker joins the chord on keys the celeriac producer set up).
(b) A Celery client sends them to a celeriac worker (which joins Celery's chords with
    Celery's native-join keys), including map/starmap/chunks and saved groups.
Each direction has a Redis database of its own, flushed before and after. A 1,000-task
group and chord on a celeriac worker (under a key prefix of its own) close the module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import celery.exceptions
import celery.result
import pytest
import redis

import celeriac
import celeriac.exceptions
from celeriac.result import GroupResult
from servers import REDIS_URL, leased_database, require_redis
from support import WorkerProcess, celery_worker, close_celery_app, write_module

pytestmark = pytest.mark.slow


TASKS = """
import pathlib
from {package} import Celery

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("{name}", broker="{url}", backend="{url}")


def note(name, text):
    with (DIR / name).open("a") as f:
        f.write(f"{{text}}\\n")


@app.task(name="{name}.add")
def add(x, y=0):
    return x + y

@app.task(name="{name}.mul")
def mul(x, y):
    return x * y

@app.task(name="{name}.tsum")
def tsum(values):
    note("bodies", repr(values))
    return sum(values)

@app.task(name="{name}.fail")
def fail(*args):
    raise ValueError("bad")

@app.task(name="{name}.on_error")
def on_error(request, exc, traceback):
    note("errors", f"{{request.id}} {{type(exc).__name__}}")
"""


def _define(app: Any, name: str) -> dict[str, Any]:
    """Client-side stand-ins of the worker's tasks (same names; never run here)."""

    def add(x: int, y: int = 0) -> int:
        return x + y

    def mul(x: int, y: int) -> int:
        return x * y

    def tsum(values: list[int]) -> int:
        return sum(values)

    def fail(*args: Any) -> None:
        raise ValueError("bad")

    def on_error(request: Any, exc: Any, traceback: Any) -> None:
        pass

    return {
        fn.__name__: app.task(name=f"{name}.{fn.__name__}")(fn)
        for fn in (add, mul, tsum, fail, on_error)
    }


@pytest.fixture
def db_url() -> Iterator[str]:
    """A Redis database of the test's own (they may run in parallel), flushed around."""
    with leased_database() as url:
        yield url


def lines(directory: Path, name: str) -> list[str]:
    path = directory / name
    return path.read_text().splitlines() if path.exists() else []


def test_celery_worker(db_url: str, tmp_path: Path) -> None:
    """A celeriac client's workflows on a Celery worker."""
    write_module(tmp_path, "ctasks", TASKS.format(package="celery", name="ctasks", url=db_url))
    app = celeriac.Celery("client", broker=db_url, set_as_current=False)
    t = _define(app, "ctasks")
    r = redis.Redis.from_url(db_url)
    try:
        with celery_worker(tmp_path, "ctasks", "-P", "threads", "-c", "4"):
            result = celeriac.chain(t["add"].s(1, 2), t["mul"].s(3), t["mul"].s(4))()
            assert result.get(timeout=20) == 36
            assert result.parent.get(timeout=10) == 9
            assert [c.id for c in result.parent.children] == [result.id]

            group_result = celeriac.group(t["add"].s(i, i) for i in range(5))()
            assert group_result.get(timeout=10) == [0, 2, 4, 6, 8]
            group_result.save()  # a Celery client restores it by id
            capp = celery.Celery("reader", broker=db_url, backend=db_url)
            restored = celery.result.GroupResult.restore(group_result.id, app=capp)
            assert restored.get(timeout=10) == [0, 2, 4, 6, 8]
            close_celery_app(capp)

            body = t["tsum"].s()
            joined = celeriac.chord((t["add"].s(i, i) for i in range(5)), body)()
            assert joined.get(timeout=10) == 20
            assert lines(tmp_path, "bodies") == [repr([0, 2, 4, 6, 8])]
            gid = joined.parent.id
            assert r.get(f"celery-taskset-meta-{gid}.c") == b"done"  # Celery fired it

            # a group inside a chain: a chord step that Celery's worker applies
            nested = t["add"].s(1, 1) | celeriac.group(t["mul"].s(2), t["mul"].s(3))
            assert (nested | t["tsum"].s())().get(timeout=10) == 10

            failing = celeriac.chord([t["add"].s(1, 1), t["fail"].s()], t["tsum"].s())
            failing.body.link_error(t["on_error"].s())
            failed = failing()
            with pytest.raises(celeriac.exceptions.ChordError, match=r"Dependency .* raised"):
                failed.get(timeout=10)
    finally:
        r.close()
        app.close()


def test_celeriac_worker(db_url: str, tmp_path: Path) -> None:
    """A Celery client's workflows on a celeriac worker."""
    write_module(tmp_path, "itasks", TASKS.format(package="celeriac", name="itasks", url=db_url))
    capp = celery.Celery("client", broker=db_url, backend=db_url)
    t = _define(capp, "itasks")
    r = redis.Redis.from_url(db_url)
    try:
        with WorkerProcess(tmp_path, "itasks", "-P", "threads", "-c", "4", "-l", "info"):
            # sent together: an idle worker may take up to a second to see a Celery
            # producer's first message (it does not leave celeriac's wake-up token)
            chained = celery.chain(t["add"].s(1, 2), t["mul"].s(3), t["mul"].s(4))()
            group_result = celery.group(t["add"].s(i, i) for i in range(5))()
            joined = celery.chord((t["add"].s(i, i) for i in range(5)), t["tsum"].s())()
            nested = (
                t["add"].s(1, 1) | celery.group(t["mul"].s(2), t["mul"].s(3)) | t["tsum"].s()
            )()
            tail = (
                celery.chord([t["add"].s(1, 1), t["add"].s(2, 2)], t["tsum"].s()) | t["mul"].s(2)
            )()
            mapped = t["add"].map([1, 2]).delay()
            starmapped = t["add"].starmap([(1, 2), (3, 4)]).delay()
            chunked = t["add"].chunks([(1, 1), (2, 2), (3, 3)], 2)()
            body = t["tsum"].s()
            body.link_error(t["on_error"].s())
            failed = celery.chord([t["add"].s(10, 10), t["fail"].s()], body)()

            assert chained.get(timeout=20) == 36
            assert chained.parent.get(timeout=10) == 9
            assert group_result.get(timeout=10) == [0, 2, 4, 6, 8]
            group_result.save()
            reader = celeriac.Celery("reader", broker=db_url, set_as_current=False)
            restored = GroupResult.restore(group_result.id, app=reader)
            assert restored is not None and restored.get(timeout=10) == [0, 2, 4, 6, 8]
            reader.close()

            assert joined.get(timeout=10) == 20
            assert repr([0, 2, 4, 6, 8]) in lines(tmp_path, "bodies")
            assert r.get(f"celery-taskset-meta-{joined.parent.id}.c") == b"done"
            assert nested.get(timeout=10) == 10
            assert tail.get(timeout=10) == 12
            assert mapped.get(timeout=10) == [1, 2]
            assert starmapped.get(timeout=10) == [3, 7]
            assert chunked.get(timeout=10) == [[2, 4], [6]]

            with pytest.raises(ValueError, match="bad"):  # Celery's client: parents first
                failed.get(timeout=10)
            with pytest.raises(celery.exceptions.ChordError, match=r"Dependency .* raised"):
                failed.get(timeout=10, follow_parents=False)
            assert lines(tmp_path, "errors") == [f"{failed.id} ChordError"]
            assert repr([20]) not in lines(tmp_path, "bodies")
    finally:
        r.close()
        close_celery_app(capp)


def test_a_thousand_task_group_and_chord(tmp_path: Path) -> None:
    require_redis().close()
    prefix = f"canvas-big-{uuid.uuid4().hex[:8]}:"
    url = f"{REDIS_URL}?global_keyprefix={prefix}"
    write_module(tmp_path, "btasks", TASKS.format(package="celeriac", name="btasks", url=url))
    app = celeriac.Celery("big", broker=url, set_as_current=False)
    t = _define(app, "btasks")
    try:
        with WorkerProcess(tmp_path, "btasks", "-P", "threads", "-c", "4"):
            group_result = celeriac.group(t["add"].s(i, 1) for i in range(1000))()
            assert group_result.get(timeout=60) == [i + 1 for i in range(1000)]
            joined = celeriac.chord((t["add"].s(i, 1) for i in range(1000)), t["tsum"].s())()
            assert joined.get(timeout=60) == sum(i + 1 for i in range(1000))
            assert lines(tmp_path, "bodies") == [repr([i + 1 for i in range(1000)])]
    finally:
        app.close()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
