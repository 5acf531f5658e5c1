"""Signals of celeriac's own paths (the ones compared with Celery are in
``tests/semantics/test_signals_semantics.py``): ``task_internal_error`` when a middleware
or the result store fails around a task, the single-process pools' life-cycle signals,
a ``celeryd_init`` receiver configuring its node, and the logging signals with
``--logfile``."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, Middleware, signals
from celeriac.testing import TestWorker
from servers import leased_database
from support import WorkerProcess, wait_until, write_module


def test_every_signal_celery_exports_is_exported() -> None:
    import celery.signals

    assert set(celery.signals.__all__) <= set(signals.__all__)
    for name in celery.signals.__all__:
        assert isinstance(getattr(signals, name), signals.Signal), name


class Recorder:
    def __init__(self, signal: signals.Signal) -> None:
        self.signal = signal
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any = None, **named: Any) -> None:
        self.calls.append({"sender": sender, **named})


@pytest.fixture
def internal_errors() -> Iterator[Recorder]:
    recorder = Recorder(signals.task_internal_error)
    signals.task_internal_error.connect(recorder)
    try:
        yield recorder
    finally:
        signals.task_internal_error.disconnect(recorder)


def _app() -> Celery:
    app = Celery("sigs", broker=f"memory://sigs-{uuid.uuid4().hex[:8]}", set_as_current=False)

    @app.task(name="sigs.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


class BrokenBeforeTask(Middleware):
    def before_task(self, task: Any, request: Any) -> None:
        if request.args == [0, 0]:
            raise RuntimeError("middleware broke")


def test_a_middleware_that_raises_around_a_task_is_an_internal_error(
    internal_errors: Recorder,
) -> None:
    app = _app()
    app.add_middleware(BrokenBeforeTask())
    with TestWorker(app) as worker:
        broken = app.send_task("sigs.add", (0, 0))
        with pytest.raises(RuntimeError, match="middleware broke"):
            broken.get(timeout=10)
        assert app.send_task("sigs.add", (1, 2)).get(timeout=10) == 3  # the worker goes on
        worker.join()
    app.close()
    (call,) = internal_errors.calls
    assert call["sender"].name == "sigs.add" and call["task_id"] == broken.id
    assert call["args"] == [0, 0] and call["kwargs"] == {}
    assert call["request"].id == broken.id
    assert isinstance(call["exception"], RuntimeError)
    assert call["traceback"] is call["exception"].__traceback__
    einfo = call["einfo"]
    assert einfo.exception is call["exception"] and "middleware broke" in str(einfo)


class BrokenStore(Middleware):
    """A settle hook (after the result store) that fails once."""

    def __init__(self) -> None:
        self.failed = False

    async def settle(self, app: Any, outcomes: list[Any], broker: Any, backend: Any) -> None:
        if not self.failed and any(o.job is not None for o in outcomes):
            self.failed = True
            raise ValueError("store broke")


def test_a_settle_hook_that_raises_is_an_internal_error_and_the_worker_goes_on(
    internal_errors: Recorder,
) -> None:
    app = _app()
    app.add_middleware(BrokenStore())
    with TestWorker(app) as worker:
        first = app.send_task("sigs.add", (2, 2))
        worker.join()  # settled (acked) despite the failure: nothing left held
        assert app.send_task("sigs.add", (1, 2)).get(timeout=10) == 3
    app.close()
    (call,) = internal_errors.calls
    assert call["task_id"] == first.id and isinstance(call["exception"], ValueError)


def test_a_task_that_fails_is_no_internal_error(internal_errors: Recorder) -> None:
    app = _app()
    with TestWorker(app) as worker:
        with pytest.raises(TypeError):
            app.send_task("sigs.add", (1, "a")).get(timeout=10)
        worker.join()
    app.close()
    assert internal_errors.calls == []


TASKS = """
import json, logging, os, pathlib
from celeriac import Celery, signals

DIR = pathlib.Path({notes!r})
MAIN = os.getpid()
app = Celery("lifecycle", broker={url!r}, backend={url!r})


def note(name, **values):
    with (DIR / "signals.jsonl").open("a") as f:
        f.write(json.dumps({{"name": name, "main": os.getpid() == MAIN, **values}}) + "\\n")


@signals.celeryd_init.connect
def configure_node(sender=None, conf=None, **named):
    note("celeryd_init", sender=sender, options=sorted(named["options"]))
    if sender.startswith("lifecycle@"):
        conf.worker_concurrency = 3


@signals.after_setup_logger.connect
def add_handler(sender=None, logger=None, logfile=None, **named):
    note("after_setup_logger", logfile=logfile)
    handler = logging.FileHandler(DIR / "extra.log")
    handler.setFormatter(logging.Formatter("extra: %(message)s"))
    logger.addHandler(handler)


@signals.worker_process_init.connect
def process_init(sender=None, **named):
    note("worker_process_init", sender=sender)


@signals.worker_shutting_down.connect
def shutting_down(sender=None, sig=None, how=None, exitcode=None, **named):
    note("worker_shutting_down", sig=sig, how=how, exitcode=exitcode)


@signals.worker_shutdown.connect
def shutdown(sender=None, **named):
    note("worker_shutdown", hostname=sender.hostname)
"""


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_the_life_cycle_signals_of_a_single_process_worker(pool: str, tmp_path: Path) -> None:
    with leased_database() as url:
        write_module(tmp_path, "lifecycle", TASKS.format(notes=str(tmp_path), url=url))
        logfile = tmp_path / "worker.log"
        worker = WorkerProcess(
            tmp_path, "lifecycle", "-l", "info", "-P", pool, "-n", "lifecycle@%h",
            "--logfile", str(logfile),
        )  # fmt: skip
        try:
            worker.start(wait_ready=False)
            extra = tmp_path / "extra.log"
            # the receiver's handler is kept when the worker moves its log to --logfile
            wait_until(lambda: extra.exists() and "ready." in extra.read_text(), 60, "ready")
            assert "ready." in logfile.read_text()
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0
        finally:
            worker.stop()
    records = [json.loads(line) for line in (tmp_path / "signals.jsonl").read_text().splitlines()]
    names = [r["name"] for r in records]
    init = ["worker_process_init"] if pool == "solo" else []  # as Celery: not for threads
    assert names == [
        "celeryd_init",
        "after_setup_logger",
        *init,
        "worker_shutting_down",
        "worker_shutdown",
    ]
    assert all(r["main"] for r in records)
    assert records[0]["sender"].startswith("lifecycle@") and "loglevel" in records[0]["options"]
    assert records[1]["logfile"] == str(logfile)
    assert {"sig": "SIGTERM", "how": "Warm", "exitcode": 0}.items() <= records[-2].items()
    # the celeryd_init receiver set this node's concurrency (solo runs one at a time)
    expected = "1 (solo)" if pool == "solo" else "3 (threads)"
    assert f"concurrency: {expected}" in worker.log
