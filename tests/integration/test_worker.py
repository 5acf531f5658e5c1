"""The worker as a user runs it: real processes on the SQLite broker."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.exceptions import NotRegistered, TaskRevokedError, WorkerLostError
from celeriac.protocol import build_task_message
from celeriac.transports.capabilities import DeadLetterStore
from celeriac.worker.consumer import prefetch_limit
from support import WorkerProcess, wait_until, write_module

TASKS = """
import asyncio, os, pathlib, signal, time
from celeriac import Celery

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("wtasks", broker=f"sqlite:///{DIR / 'broker.db'}")

@app.task
def add(x, y):
    return x + y

@app.task
async def aadd(x, y):
    await asyncio.sleep(0)
    return x + y

@app.task
def pid():
    return os.getpid()

@app.task
def boom():
    raise ValueError("bad")

@app.task
def unserializable():
    return object()

@app.task
def suicide():
    os.kill(os.getpid(), signal.SIGKILL)

@app.task
def hold(name, block_again=False):
    attempts = DIR / f"{name}.attempts"
    first = not attempts.exists()
    with attempts.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    if first or block_again:
        release = DIR / f"{name}.release"
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "released"
    return "again"
"""


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    write_module(tmp_path, "wtasks", TASKS)
    return tmp_path


@pytest.fixture
def client(tasks_dir: Path) -> Celery:
    return Celery("wtasks", broker=f"sqlite:///{tasks_dir / 'broker.db'}", set_as_current=False)


def attempts(tasks_dir: Path, name: str) -> list[str]:
    path = tasks_dir / f"{name}.attempts"
    return path.read_text().split() if path.exists() else []


def queue_size(app: Celery, queue: str = "celery") -> int:
    async def size() -> int:
        return await (await app.get_broker()).size(queue)

    from celeriac._loop import run_sync

    return run_sync(size())


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio", "solo"])
def test_each_pool_runs_sync_and_async_tasks(tasks_dir: Path, client: Celery, pool: str) -> None:
    with WorkerProcess(tasks_dir, "wtasks", "-P", pool, "-c", "2", "-l", "info") as worker:
        assert client.send_task("wtasks.add", (2, 3)).get(timeout=10) == 5
        assert client.send_task("wtasks.aadd", (4, 4)).get(timeout=10) == 8
        line = worker.wait_for(r"Task wtasks\.add\[[0-9a-f-]+\] succeeded in [0-9.]+s: 5")
        assert line


def test_failure_is_reraised_with_type_message_and_traceback(
    tasks_dir: Path, client: Celery
) -> None:
    with WorkerProcess(tasks_dir, "wtasks", "-P", "threads", "-c", "1"):
        result = client.send_task("wtasks.boom")
        with pytest.raises(ValueError, match="bad") as info:
            result.get(timeout=10)
        assert result.state == states.FAILURE
        assert result.failed() and not result.successful()
        assert "raise ValueError" in (result.traceback or "")
        assert any("Remote traceback" in n for n in getattr(info.value, "__notes__", []))


def test_unserializable_result_is_stored_as_failure(tasks_dir: Path, client: Celery) -> None:
    with WorkerProcess(tasks_dir, "wtasks", "-P", "threads", "-c", "1") as worker:
        with pytest.raises(TypeError, match="cannot be stored with the json serializer"):
            client.send_task("wtasks.unserializable").get(timeout=10)
        assert client.send_task("wtasks.add", (1, 1)).get(timeout=10) == 2
        assert worker.proc is not None and worker.proc.poll() is None


def test_kill_9_of_a_prefork_child_mid_task_redelivers_it(tasks_dir: Path, client: Celery) -> None:
    with WorkerProcess(tasks_dir, "wtasks", "-P", "prefork", "-c", "2", "-l", "info") as worker:
        result = client.send_task("wtasks.hold", ("k9",))
        first = wait_until(lambda: attempts(tasks_dir, "k9"), what="the task to start")
        os.kill(int(first[0]), signal.SIGKILL)
        assert result.get(timeout=20) == "again"
        pids = attempts(tasks_dir, "k9")
        assert len(pids) == 2 and pids[0] != pids[1]
        worker.wait_for(r"exited with signal 9 \(SIGKILL\)")
        worker.wait_for(r"Returned 1 message\(s\) held by ForkPoolWorker")
        # the supervisor replaced the child: the worker still has two working children
        assert client.send_task("wtasks.add", (1, 2)).get(timeout=10) == 3


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal")
def test_prefork_children_do_not_outlive_a_killed_supervisor(
    tasks_dir: Path, client: Celery
) -> None:
    with WorkerProcess(tasks_dir, "wtasks", "-P", "prefork", "-c", "2") as worker:
        assert worker.proc is not None
        supervisor = worker.proc.pid
        with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
            children = [int(pid) for pid in f.read().split()]
        assert len(children) == 2 and all(_alive(pid) for pid in children)
        os.kill(supervisor, signal.SIGKILL)
        wait_until(lambda: not any(_alive(pid) for pid in children), 20, "the children to end")
        said = f"main process (pid {supervisor}) is gone"  # each child says why it ends
        wait_until(lambda: worker.log.count(said) == 2, 20, "both children to say why")


def test_poison_message_is_dead_lettered_after_the_redelivery_limit(
    tasks_dir: Path, client: Celery
) -> None:
    with WorkerProcess(tasks_dir, "wtasks", "-P", "prefork", "-c", "1") as worker:
        result = client.send_task("wtasks.suicide")
        with pytest.raises(WorkerLostError, match="delivered 5 times"):
            result.get(timeout=30)
        worker.wait_for(r"suicide\[.*dead-lettered")
        assert client.send_task("wtasks.add", (2, 2)).get(timeout=10) == 4

    async def dead() -> list[Any]:
        broker = await client.get_broker()
        assert isinstance(broker, DeadLetterStore)
        return list(await broker.dead_letters())

    from celeriac._loop import run_sync

    letters = run_sync(dead())
    assert len(letters) == 1 and "delivered 5 times" in letters[0].reason


def test_garbage_and_unknown_tasks_are_dead_lettered_and_the_worker_carries_on(
    tasks_dir: Path, client: Celery
) -> None:
    bad_body = build_task_message("wtasks.add", (1, 2))
    bad_body.body = b"[1, 2]"  # two elements: not a protocol v2 body
    pickled = build_task_message("wtasks.add", (1, 2))
    pickled.content_type = "application/x-python-serialize"
    numbered = build_task_message("wtasks.add", (1, 2))
    numbered.headers["id"] = 42
    not_base64: dict[str, Any] = {
        "body": "!!! not base64 !!!",
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "wtasks.add", "id": f"bad64-{uuid.uuid4().hex}", "lang": "py"},
        "properties": {"body_encoding": "base64", "delivery_tag": uuid.uuid4().hex},
    }

    async def publish() -> Any:
        broker = await client.get_broker()
        await broker.publish("celery", numbered)
        for raw in (b"\x00\xffnot json at all", b'{"body": 3}', json.dumps(not_base64).encode()):
            pending = broker.publish_raw("celery", raw)  # type: ignore[attr-defined]
            if inspect.isawaitable(pending):
                await pending
        await broker.publish("celery", bad_body)
        await broker.publish("celery", pickled)
        return broker

    from celeriac._loop import run_sync

    broker = run_sync(publish())
    unknown = client.send_task("wtasks.nope", (1,))
    with WorkerProcess(tasks_dir, "wtasks", "-P", "threads", "-c", "2", "-l", "info") as worker:
        with pytest.raises(NotRegistered):
            unknown.get(timeout=10)
        with pytest.raises(Exception, match="3-element array"):
            client.AsyncResult(bad_body.headers["id"]).get(timeout=10)
        # a body that is not base64 gets the FAILURE of any dead letter with a known id
        with pytest.raises(Exception, match="envelope body is not valid base64"):
            client.AsyncResult(not_base64["headers"]["id"]).get(timeout=10)
        assert client.send_task("wtasks.add", (5, 5)).get(timeout=10) == 10
        worker.wait_for(r"Received unregistered task of type 'wtasks.nope'")
        worker.wait_for(r"refusing to deserialize content of type pickle")
        worker.wait_for(r"Dead-lettering unreadable message")
    letters = run_sync(broker.dead_letters())
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 7, reasons
    assert any("unknown task 'wtasks.nope'" in r for r in reasons)
    assert "header 'id' must be a string, got 42 (int)" in reasons, reasons


def test_sigterm_finishes_running_task_and_returns_prefetched_messages(
    tasks_dir: Path, client: Celery
) -> None:
    # all four are queued before the worker starts, so its first fetch takes them all
    # (a later one would wait for the prefetch window to drain to its low-water mark)
    running = client.send_task("wtasks.hold", ("term",))
    queued = [client.send_task("wtasks.add", (i, i)) for i in range(3)]
    worker = WorkerProcess(tasks_dir, "wtasks", "-P", "solo", "-l", "info").start()
    try:
        wait_until(lambda: attempts(tasks_dir, "term"), what="the task to start")
        worker.wait_for(r"Task wtasks\.add\[.*\] received", count=3)
        worker.signal(signal.SIGTERM)
        worker.wait_for(r"Warm shutdown")
        (tasks_dir / "term.release").touch()
        assert worker.wait(30) == 0, worker.log
    finally:
        worker.stop()
    assert running.get(timeout=5) == "released"
    assert "Returned 3 unstarted message(s)" in worker.log, worker.log
    assert queue_size(client) == 3, worker.log
    assert all(r.state == states.PENDING for r in queued)
    with WorkerProcess(tasks_dir, "wtasks", "-P", "solo"):
        assert [r.get(timeout=10) for r in queued] == [0, 2, 4]


def test_second_signal_is_a_cold_shutdown_that_returns_the_running_task(
    tasks_dir: Path, client: Celery
) -> None:
    worker = WorkerProcess(tasks_dir, "wtasks", "-P", "prefork", "-c", "1").start()
    try:
        result = client.send_task("wtasks.hold", ("cold", True))
        wait_until(lambda: attempts(tasks_dir, "cold"), what="the task to start")
        worker.signal(signal.SIGTERM)
        worker.wait_for(r"Warm shutdown")
        worker.signal(signal.SIGTERM)
        worker.wait_for(r"Cold shutdown")
        assert worker.wait(20) == 0
    finally:
        worker.stop()
    assert result.state == states.PENDING
    assert queue_size(client) == 1
    (tasks_dir / "cold.release").touch()
    with WorkerProcess(tasks_dir, "wtasks", "-P", "solo"):
        assert result.get(timeout=10) == "released"


def test_max_tasks_per_child_recycles_the_child(tasks_dir: Path, client: Celery) -> None:
    with WorkerProcess(tasks_dir, "wtasks", "-c", "1", "--max-tasks-per-child", "2"):
        pids = [client.send_task("wtasks.pid").get(timeout=10) for _ in range(4)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]


def test_lease_is_extended_while_a_long_task_runs(tasks_dir: Path, client: Celery) -> None:
    env = {"CELERIAC_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": 0.6}'}
    with WorkerProcess(
        tasks_dir, "wtasks", "-P", "threads", "-c", "2", "-l", "debug", env=env
    ) as w:
        result = client.send_task("wtasks.hold", ("lease",))
        wait_until(lambda: attempts(tasks_dir, "lease"), what="the task to start")
        # several lease periods pass while the task runs; each one is extended in time
        w.wait_for(r"Extended the leases of 1 message", count=4)
        (tasks_dir / "lease.release").touch()
        assert result.get(timeout=10) == "released"
    assert len(attempts(tasks_dir, "lease")) == 1


def test_countdown_waits_in_the_broker_and_expired_tasks_are_revoked(
    tasks_dir: Path, client: Celery
) -> None:
    before = datetime.now(timezone.utc)
    delayed = client.send_task("wtasks.add", (1, 2), countdown=1.5)
    expired = client.send_task("wtasks.add", (1, 2), expires=-1)
    assert queue_size(client) == 2
    with WorkerProcess(tasks_dir, "wtasks", "-P", "threads", "-c", "2", "-l", "info") as worker:
        with pytest.raises(TaskRevokedError, match="expired"):
            expired.get(timeout=10)
        assert expired.state == states.REVOKED
        assert delayed.get(timeout=10) == 3
        worker.wait_for("Discarding expired task")
    done = delayed.date_done
    assert done is not None and done >= before + timedelta(seconds=1.5)


def test_await_result_from_asyncio(tasks_dir: Path, client: Celery) -> None:
    async def main() -> list[Any]:
        first = await client.asend_task("wtasks.add", (1, 1))
        second = await client.asend_task("wtasks.aadd", (2, 2))
        return [await first, await second.aget(timeout=10)]

    with WorkerProcess(tasks_dir, "wtasks", "-P", "asyncio", "-c", "4"):
        assert asyncio.run(main()) == [2, 4]


@pytest.mark.parametrize(
    ("runtime", "window", "expected"),
    [
        (None, 0.02, 4),  # nothing measured yet: Celery's limit
        (0.5, 0.02, 4),  # long tasks: Celery's limit exactly
        (0.005, 0.02, 4),  # 4 fit in the window: no more than the limit
        (0.002, 0.02, 10),  # 10 fit
        (0.0001, 0.02, 200),  # 200 fit
        (0.00001, 0.02, 256),  # very short: capped at PREFETCH_GROWTH times the limit
        (0.0001, 0.0, 4),  # worker_prefetch_window = 0: off
    ],
)
def test_prefetch_limit_grows_only_for_short_tasks(
    runtime: float | None, window: float, expected: int
) -> None:
    assert prefetch_limit(4, 1, window, runtime) == expected
    assert prefetch_limit(8, 2, window, runtime) == expected * 2  # per pool slot


def test_a_worker_fetches_short_tasks_in_larger_batches(tasks_dir: Path, client: Celery) -> None:
    results = [client.send_task("wtasks.add", (i, i)) for i in range(300)]
    with WorkerProcess(tasks_dir, "wtasks", "-P", "solo", "-l", "debug") as worker:
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(300)]
        limits = [
            int(line.split("Prefetch limit now ")[1].split()[0])
            for line in worker.wait_for(r"Prefetch limit now \d+")
        ]
    assert max(limits) > 4  # solo, multiplier 4: Celery's limit is 4


def test_the_worker_calls_only_the_hooks_a_middleware_overrides() -> None:
    from celeriac.middleware import Middleware, SignalsMiddleware, overriding

    class Gate(Middleware):
        def gate(self, job: Any) -> None:
            return None

    plain, gate, signals_mw = Middleware(), Gate(), SignalsMiddleware()
    hooks = overriding([plain, gate, signals_mw], "gate")
    assert [getattr(hook, "__self__", None) for hook in hooks] == [gate]
    after = overriding([plain, gate, signals_mw], "after_task")
    assert [getattr(hook, "__self__", None) for hook in after] == [signals_mw]
