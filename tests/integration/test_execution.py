"""Task execution semantics with real worker processes, on every broker that can cross
processes: retries, time limits, rate limits, expiry, revoke, request context, STARTED,
signals, task base-class hooks, acks."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.exceptions import (
    MaxRetriesExceededError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from celeriac.transports.capabilities import DeadLetterStore
from servers import REDIS_URL, delete_queues, postgres_schema
from support import WorkerProcess, wait_until, write_module

TASKS = """
import asyncio, os, pathlib, time
from celeriac import Celery, Task
from celeriac import signals
from celeriac.exceptions import Ignore, Reject, SoftTimeLimitExceeded

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("xtasks")

def note(name, text):
    with (DIR / name).open("a") as f:
        f.write(f"{text}\\n")

@signals.task_prerun.connect
def on_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **kw):
    note("signals", f"prerun {task.name}")

@signals.task_postrun.connect
def on_postrun(sender=None, task_id=None, retval=None, state=None, **kw):
    note("signals", f"postrun {sender.name} {state}")

@signals.task_success.connect
def on_success(sender=None, result=None, **kw):
    note("signals", f"success {sender.name} {result!r}")

@signals.task_failure.connect
def on_failure(sender=None, task_id=None, exception=None, **kw):
    note("signals", f"failure {sender.name} {exception!r}")

@signals.task_retry.connect
def on_retry(sender=None, request=None, reason=None, **kw):
    note("signals", f"retry {sender.name} {reason!r}")

class Hooks(Task):
    def before_start(self, task_id, args, kwargs):
        note("hooks", "before_start")
    def on_success(self, retval, task_id, args, kwargs):
        note("hooks", f"on_success {retval}")
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        note("hooks", f"on_failure {exc!r}")
    def on_retry(self, exc, task_id, args, kwargs, einfo):
        note("hooks", f"on_retry {exc!r}")
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        note("hooks", f"after_return {status}")

@app.task(bind=True, base=Hooks, max_retries=5)
def flaky(self, until):
    note("flaky", str(self.request.retries))
    if self.request.retries < until:
        raise self.retry(exc=ValueError(f"try {self.request.retries}"), countdown=0.1)
    return f"ok after {self.request.retries}"

@app.task(bind=True, max_retries=2)
def always_retry(self):
    raise self.retry(countdown=0.05)

@app.task(autoretry_for=(KeyError,), retry_backoff=0.05, retry_jitter=False, max_retries=3)
def auto():
    note("auto", "run")
    raise KeyError("missing")

@app.task(bind=True)
def context(self, x, y=0):
    r = self.request
    return {"id": r.id, "args": list(r.args), "kwargs": r.kwargs, "retries": r.retries,
            "hostname": r.hostname, "root_id": r.root_id, "parent_id": r.parent_id,
            "routing_key": r.delivery_info.get("routing_key"), "is_eager": r.is_eager,
            "called_directly": r.called_directly}

@app.task(soft_time_limit=0.3)
def soft():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "soft limit caught"

@app.task(soft_time_limit=0.3)
def soft_steps():
    # on the threads pool the limit arrives between Python bytecodes, not inside a C call
    try:
        while True:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "soft limit caught"

@app.task(soft_time_limit=0.3)
async def asoft():
    await asyncio.sleep(30)

@app.task(time_limit=0.5)
def hard():
    note("hard", str(os.getpid()))
    time.sleep(60)

@app.task(time_limit=0.5)
async def ahard():
    await asyncio.sleep(60)

@app.task
def add(x, y):
    return x + y

@app.task
def stamp(name):
    note(name, repr(time.time()))

@app.task(rate_limit="5/s")
def limited():
    note("limited", repr(time.time()))

@app.task(track_started=True)
def started(name):
    note(name, "running")
    while not (DIR / f"{name}.release").exists():
        time.sleep(0.01)
    return "done"

@app.task
def blocker(name):
    note(name, str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "not terminated"

@app.task(bind=True, track_started=True)
def progress(self, name):
    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    note(name, "reported")
    while not (DIR / f"{name}.release").exists():
        time.sleep(0.01)
    return "finished"

@app.task(bind=True)
async def aprogress(self, name):
    await self.aupdate_state(state="PROGRESS", meta={"step": "async"})
    note(name, "reported")
    while not (DIR / f"{name}.release").exists():
        await asyncio.sleep(0.01)
    return "finished"

@app.task
def ignored():
    raise Ignore()

@app.task
def rejected():
    raise Reject("no thanks", requeue=False)

@app.task(bind=True)
def requeued(self, mark):
    note(mark, repr(self.request.delivery_info.get("redelivered")))
    if len((DIR / mark).read_text().splitlines()) < 3:
        raise Reject("later", requeue=True)
    return "ran"

@app.task(acks_on_failure_or_timeout=False)
def failing_kept():
    raise RuntimeError("keep my message")
"""


GLOBAL_TASKS = """
import pathlib, time
from celeriac import Celery

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("xtasks")

@app.task(name="xtasks.glimited", rate_limit="10/s", rate_limit_scope="global")
def glimited():
    with (DIR / "glimited").open("a") as f:
        f.write(repr(time.time()) + "\\n")
"""


def _redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"needs a Redis server at {REDIS_URL} ({exc})")
        pytest.skip(f"needs a Redis server at {REDIS_URL} ({exc})")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(params=["sqlite", "redis", "amqp", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The broker URL for the worker (environment) and a client app (``env['url']``),
    and a queue of the test's own."""
    write_module(tmp_path, "xtasks", TASKS)
    prefix = ""
    queue = f"x-{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'broker.db'}"
    elif request.param == "redis":
        prefix = f"xtest-{uuid.uuid4().hex}:"
        url = f"{_redis_url()}?global_keyprefix={prefix}"
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = request.getfixturevalue("rabbit")
    yield {"url": url, "dir": str(tmp_path), "queue": queue, "kind": request.param}
    for app in _clients.pop(url, []):
        app.close()
    if request.param == "amqp":
        delete_queues(url, [queue])
    if prefix:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema("xtest") as url:
        yield url


_clients: dict[str, list[Celery]] = {}


def client(env: dict[str, str]) -> Celery:
    app = Celery("xtasks", broker=env["url"], task_default_queue=env["queue"], set_as_current=False)
    _clients.setdefault(env["url"], []).append(app)
    return app


def worker(env: dict[str, str], *args: str, module: str = "xtasks") -> WorkerProcess:
    wenv = {"CELERIAC_BROKER_URL": env["url"], "CELERIAC_TASK_DEFAULT_QUEUE": env["queue"]}
    return WorkerProcess(Path(env["dir"]), module, "-l", "info", *args, env=wenv)


def lines(env: dict[str, str], name: str) -> list[str]:
    path = Path(env["dir"]) / name
    return path.read_text().splitlines() if path.exists() else []


def test_retry_republishes_with_the_same_id_and_counts_retries(env: dict[str, str]) -> None:
    app = client(env)
    with worker(env, "-P", "threads", "-c", "2") as w:
        result = app.send_task("xtasks.flaky", (2,))
        assert result.get(timeout=20) == "ok after 2"
        assert lines(env, "flaky") == ["0", "1", "2"]
        w.wait_for(r"Task xtasks\.flaky\[.*\] retry: Retry in 0\.1s: ValueError\('try 0'\)")
        with pytest.raises(MaxRetriesExceededError, match=r"Can't retry xtasks\.always_retry"):
            app.send_task("xtasks.always_retry").get(timeout=20)
    hooks = lines(env, "hooks")
    assert hooks.count("on_retry ValueError('try 0')") == 1 and "on_success ok after 2" in hooks
    assert "after_return SUCCESS" in hooks and hooks[0] == "before_start"
    sig = lines(env, "signals")
    assert "retry xtasks.flaky ValueError('try 1')" in sig
    assert "postrun xtasks.flaky RETRY" in sig and "postrun xtasks.flaky SUCCESS" in sig


def test_autoretry_for_with_backoff_then_the_original_error(env: dict[str, str]) -> None:
    app = client(env)
    with worker(env, "-P", "threads", "-c", "2"), pytest.raises(KeyError, match="missing"):
        app.send_task("xtasks.auto").get(timeout=20)
    assert len(lines(env, "auto")) == 4  # the first run and max_retries=3 retries
    assert "failure xtasks.auto KeyError('missing')" in lines(env, "signals")


def test_request_context_has_celerys_fields(env: dict[str, str]) -> None:
    app = client(env)
    with worker(env, "-P", "prefork", "-c", "1", "-n", "ctx@%h"):
        task_id = f"ctx-{uuid.uuid4()}"
        ctx = app.send_task("xtasks.context", (1,), {"y": 2}, task_id=task_id).get(timeout=20)
    assert ctx["id"] == task_id and ctx["args"] == [1] and ctx["kwargs"] == {"y": 2}
    assert ctx["retries"] == 0 and ctx["hostname"].startswith("ctx@") and ctx["root_id"] == task_id
    assert ctx["routing_key"] == env["queue"] and ctx["parent_id"] is None
    assert ctx["is_eager"] is False and ctx["called_directly"] is False


@pytest.mark.parametrize(
    ("pool", "task"),
    [("prefork", "soft"), ("threads", "soft_steps"), ("asyncio", "asoft"), ("gevent", "soft")],
)
def test_soft_time_limit_is_raised_inside_the_task(
    env: dict[str, str], pool: str, task: str
) -> None:
    app = client(env)
    with worker(env, "-P", pool, "-c", "2") as w:
        result = app.send_task(f"xtasks.{task}")
        if task != "asoft":
            assert result.get(timeout=20) == "soft limit caught"
        else:
            with pytest.raises(SoftTimeLimitExceeded):
                result.get(timeout=20)
        w.wait_for(r"Soft time limit \(0\.3s\) exceeded")


@pytest.mark.parametrize(
    ("pool", "task"), [("prefork", "hard"), ("asyncio", "ahard"), ("gevent", "hard")]
)
def test_hard_time_limit_stops_the_task_and_records_failure(
    env: dict[str, str], pool: str, task: str
) -> None:
    app = client(env)
    with worker(env, "-P", pool, "-c", "1") as w:
        result = app.send_task(f"xtasks.{task}")
        with pytest.raises(TimeLimitExceeded, match=r"Time limit \(0\.5s\) exceeded"):
            result.get(timeout=20)
        w.wait_for(r"Hard time limit \(0\.5s\) exceeded")
        # the worker goes on (a prefork child is replaced) and the message is not redelivered
        assert app.send_task("xtasks.add", (1, 2)).get(timeout=20) == 3
        if pool == "prefork":
            w.wait_for(r"restarted after stopping a task")
    assert len(lines(env, "hard")) <= 1


def test_time_limit_from_the_message_header(env: dict[str, str]) -> None:
    app = client(env)
    with worker(env, "-P", "prefork", "-c", "1"):
        result = app.send_task("xtasks.blocker", ("hdr",), time_limit=0.5)
        with pytest.raises(TimeLimitExceeded):
            result.get(timeout=20)


def test_rate_limit_per_worker_spaces_the_starts(env: dict[str, str]) -> None:
    app = client(env)
    with worker(env, "-P", "threads", "-c", "4"):
        results = [app.send_task("xtasks.limited") for _ in range(6)]
        for r in results:
            r.get(timeout=20)
    starts = sorted(float(x) for x in lines(env, "limited"))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # tokens come every 0.2 s; a start can lag its token by a thread switch, so the gaps
    # are checked with room for that, and the whole run against the rate
    assert len(starts) == 6 and min(gaps) >= 0.1, gaps
    assert starts[-1] - starts[0] >= 0.9, gaps


def test_global_rate_limit_holds_across_three_workers(env: dict[str, str]) -> None:
    write_module(Path(env["dir"]), "xglobal", GLOBAL_TASKS)
    app = client(env)
    workers = [
        worker(env, "-P", "threads", "-c", "2", "-n", f"g{i}@%h", module="xglobal").start()
        for i in range(3)
    ]
    try:
        results = [app.send_task("xtasks.glimited") for _ in range(15)]
        for r in results:
            r.get(timeout=30)
    finally:
        for w in workers:
            w.stop()
    starts = sorted(float(x) for x in lines(env, "glimited"))
    assert len(starts) == 15
    # 10/s with a bucket of one token: any window of one second holds at most 11 starts
    for i, first in enumerate(starts):
        in_window = [s for s in starts[i:] if s < first + 1.0]
        assert len(in_window) <= 11, starts
    assert starts[-1] - starts[0] >= 1.3  # 15 starts at 10/s need at least 1.4 s


def test_revoke_reaches_queued_delayed_and_future_messages(env: dict[str, str]) -> None:
    app = client(env)
    queued = app.send_task("xtasks.stamp", ("revoked-queued",))
    delayed = app.send_task("xtasks.stamp", ("revoked-delayed",), countdown=0.5)
    queued.revoke()
    app.control.revoke(delayed.id)
    future_id = str(uuid.uuid4())
    app.control.revoke(future_id)
    if env["kind"] != "amqp":  # rpc:// learns states from the worker's replies only
        assert queued.state == states.REVOKED
    with worker(env, "-P", "threads", "-c", "2") as w:  # started after the revokes
        future = app.send_task("xtasks.stamp", ("revoked-future",), task_id=future_id)
        marker = app.send_task("xtasks.add", (1, 1))
        assert marker.get(timeout=20) == 2
        w.wait_for(rf"Discarding revoked task xtasks\.stamp\[{delayed.id}\]", timeout=20)
        w.wait_for(rf"Discarding revoked task xtasks\.stamp\[{future.id}\]", timeout=20)
        with pytest.raises(TaskRevokedError):
            delayed.get(timeout=5)
        if env["kind"] == "amqp":
            with pytest.raises(TaskRevokedError):
                queued.get(timeout=5)
    for name in ("revoked-queued", "revoked-delayed", "revoked-future"):
        assert lines(env, name) == []


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent"])
def test_revoke_terminate_stops_a_running_task(env: dict[str, str], pool: str) -> None:
    app = client(env)
    with worker(env, "-P", pool, "-c", "1") as w:
        result = app.send_task("xtasks.blocker", ("term",))
        wait_until(lambda: lines(env, "term"), timeout=20, what="the task to start")
        result.revoke(terminate=True)
        w.wait_for(r"Terminating revoked task xtasks\.blocker", timeout=20)
        with pytest.raises(TaskRevokedError):
            result.get(timeout=10)
        if pool == "prefork":
            assert app.send_task("xtasks.add", (2, 2)).get(timeout=20) == 4
    assert len(lines(env, "term")) == 1


def test_track_started_records_started_while_running(env: dict[str, str]) -> None:
    app = client(env)
    with worker(env, "-P", "prefork", "-c", "1"):
        result = app.send_task("xtasks.started", ("st",))
        wait_until(lambda: lines(env, "st"), timeout=20, what="the task to start")
        wait_until(lambda: result.state == states.STARTED, timeout=10, what="STARTED")
        (Path(env["dir"]) / "st.release").touch()
        assert result.get(timeout=10) == "done"


def test_update_state_reports_progress_while_running(env: dict[str, str]) -> None:
    app = client(env)
    # one at a time: a child that prefetched both would hold the second behind the first
    cases = [
        ("xtasks.progress", "p1", {"done": 1, "total": 2}),
        ("xtasks.aprogress", "p2", {"step": "async"}),
    ]
    with worker(env, "-P", "prefork", "-c", "1"):
        for name, mark, meta in cases:
            result = app.send_task(name, (mark,))
            wait_until(lambda mark=mark: lines(env, mark), 20, f"{name} to report")
            # the sync task also tracks STARTED: the worker's STARTED must not replace it
            assert (result.state, result.info) == ("PROGRESS", meta)
            (Path(env["dir"]) / f"{mark}.release").touch()
            assert result.get(timeout=10) == "finished"
            assert result.state == states.SUCCESS


def test_ignore_reject_and_acks_on_failure_policy(env: dict[str, str]) -> None:
    app = client(env)
    with worker(env, "-P", "threads", "-c", "2") as w:
        ignored = app.send_task("xtasks.ignored")
        rejected = app.send_task("xtasks.rejected")
        kept = app.send_task("xtasks.failing_kept")
        with pytest.raises(RuntimeError, match="keep my message"):
            kept.get(timeout=20)
        assert app.send_task("xtasks.add", (3, 3)).get(timeout=20) == 6
        w.wait_for(r"rejected: 'no thanks'")
        w.wait_for(r"ignored")
    # as Celery: a task that rejects its message without requeue will not run again, so
    # it is a FAILURE (with the Reject), not left PENDING (tests/semantics)
    assert ignored.state == states.PENDING and rejected.state == states.FAILURE

    async def dead() -> list[Any]:
        broker = await app.get_broker()
        assert isinstance(broker, DeadLetterStore)
        return list(await broker.dead_letters())

    from celeriac._loop import run_sync

    # this test's own letters: on RabbitMQ the dead-letter queue is shared by the vhost
    reasons = sorted(d.reason for d in run_sync(dead()) if d.queue == env["queue"])
    assert len(reasons) == 2
    assert "rejected by the task: 'no thanks'" in reasons[0] + reasons[1]
    assert any("keep my message" in r for r in reasons)


def test_reject_with_requeue_runs_again_flagged_redelivered(env: dict[str, str]) -> None:
    """On every broker: the message comes back (a copy, put back at once, then after
    0.1 s), flagged redelivered, and nothing is stored for the rejected runs."""
    app = client(env)
    with worker(env, "-P", "threads", "-c", "2"):
        result = app.send_task("xtasks.requeued", ("rq",))
        assert result.get(timeout=20) == "ran"
    assert lines(env, "rq") == ["False", "True", "True"]
