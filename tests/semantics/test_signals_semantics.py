"""Every signal a worker sends, measured on a real Celery 5.7 prefork worker and compared
with a celeriac prefork worker running the same tasks module: which signals fire, with
which keyword arguments, which kind of sender, in which process (the main process or a
pool child), and the start-up order.

Each worker (``-P prefork -c 2``) runs one scenario -- a success, a failure, a retry, a
``Reject``, a task whose ``on_failure`` raises (Celery's ``task_internal_error``), an
unknown task, an expired task, a message that is not a task message, a running task
revoked with ``terminate=True``, then SIGTERM -- while a receiver connected to every
signal of ``<package>.signals`` appends what it got to a file. celeriac's prefork
children each consume (Celery's main process consumes and hands tasks to its children),
so the consumer-side signals fire in a child there: docs/coming-from-celery.md.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from servers import leased_database
from support import WorkerProcess, celery_worker, close_celery_app, wait_until, write_module

pytestmark = pytest.mark.timeout(180)

TASKS = """
import json, os, pathlib, time
import {package} as pkg
from {package} import Celery, signals
from {package}.exceptions import Reject

DIR = pathlib.Path({notes!r})
MAIN = os.getpid()
app = Celery("semsig", broker={url!r}, backend={url!r})


def kind(sender):
    if sender is None or isinstance(sender, str):
        return type(sender).__name__
    if sender is app:
        return "app"
    if getattr(sender, "name", None) in app.tasks:
        return "task"
    return "object" + "".join(f"+{{a}}" for a in ("hostname", "app") if hasattr(sender, a))


VALUES = ("sig", "how", "exitcode", "terminated", "expired", "signum", "loglevel", "state",
          "name", "logfile", "colorize")
KEEP = []


def recorder(name):
    def receiver(sender=None, **named):
        named.pop("signal", None)
        entry = {{
            "name": name,
            "main": os.getpid() == MAIN,
            "sender": kind(sender),
            "keys": sorted(named),
            "values": {{k: named[k] for k in VALUES if k in named
                       and isinstance(named[k], (int, str, bool, type(None)))}},
            "einfo": type(named.get("einfo")).__name__,
            "task": getattr(sender, "name", None) if kind(sender) == "task" else None,
        }}
        with (DIR / "signals.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\\n")

    KEEP.append(receiver)
    return receiver


for _name in sorted(vars(signals)):
    _signal = getattr(signals, _name)
    if type(_signal).__name__ == "Signal" and _name != "setup_logging":
        _signal.connect(recorder(_name), weak=False)


@app.task(name="sig.add")
def add(x, y):
    return x + y


@app.task(name="sig.boom")
def boom():
    raise KeyError("boom")


@app.task(name="sig.retry", bind=True)
def retry(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0, max_retries=1)
    return "retried"


@app.task(name="sig.reject", acks_late=True)
def reject():
    raise Reject("no", requeue=False)


class BadFailureHandler(pkg.Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        raise RuntimeError("on_failure broke")


@app.task(name="sig.internal", base=BadFailureHandler)
def internal():
    raise ValueError("task failed")


@app.task(name="sig.hold")
def hold(key):
    (DIR / key).write_text("started")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "held"
"""

#: keyword arguments celeriac passes beyond Celery's (docs/coming-from-celery.md)
EXTRA = {"after_task_publish": ("properties",)}
#: signals that fire in a pool child in both (the task runs there)
IN_CHILD = {"worker_process_init", "worker_process_shutdown", "task_prerun", "task_postrun"}
#: signals of the worker's main process in both
IN_MAIN = {
    "import_modules",
    "celeryd_init",
    "worker_init",
    "after_setup_logger",
    "after_setup_task_logger",
    "celeryd_after_setup",
    "worker_before_create_process",
    "worker_ready",
    "worker_shutting_down",
    "worker_shutdown",
}


def _scenario(package: str, root: Path) -> list[dict[str, Any]]:
    """Run the scenario on a ``package`` worker; the signal records, in order."""
    import celery
    from kombu.connection import Connection

    with leased_database() as url:
        write_module(root, "semsig", TASKS.format(package=package, notes=str(root), url=url))
        if package == "celery":
            worker = celery_worker(root, "semsig", "-P", "prefork", "-c", "2")
        else:
            worker = WorkerProcess(  # quiet as the Celery one: no heartbeats
                root, "semsig", "-l", "info", "-P", "prefork", "-c", "2", "--without-heartbeat"
            )
        client = celery.Celery("sigclient", broker=url, backend=url)
        try:
            worker.start(timeout=60)
            sent = [
                client.send_task(name)
                for name in ("sig.boom", "sig.retry", "sig.reject", "sig.internal")
            ]
            sent.append(client.send_task("sig.add", (1, 2)))
            for result in sent:
                result.get(timeout=30, propagate=False)
            unknown = client.send_task("sig.nosuch")
            past = datetime.now(timezone.utc) - timedelta(seconds=30)
            expired = client.send_task("sig.add", (1, 1), expires=past)
            with Connection(url) as conn:  # type: ignore[no-untyped-call]  # no "task" header
                conn.Producer().publish({"hello": 1}, routing_key="celery", serializer="json")
            wait_until(lambda: unknown.state == "FAILURE", 30, "the unknown task's failure")
            wait_until(lambda: expired.state == "REVOKED", 30, "the expired task revoked")
            held = client.send_task("sig.hold", ("held",))
            wait_until((root / "held").exists, 30, "the held task to start")
            client.control.revoke(held.id, terminate=True)
            wait_until(lambda: held.state == "REVOKED", 30, "the held task terminated")
            records = root / "signals.jsonl"
            wait_until(lambda: "task_rejected" in records.read_text(), 30, "task_rejected")
            worker.signal(signal.SIGTERM)
            assert worker.wait(60) == 0, worker.log
        finally:
            worker.stop()
            close_celery_app(client)
    return [json.loads(line) for line in (root / "signals.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {
        package: _scenario(package, tmp_path_factory.mktemp(f"signals-{package}"))
        for package in ("celery", "celeriac")
    }


def _by_name(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        found.setdefault(record["name"], []).append(record)
    return found


def test_every_signal_celery_sends_fires_with_celerys_keyword_arguments(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    reference, ours = _by_name(runs["celery"]), _by_name(runs["celeriac"])
    # task_sent is Celery's deprecated alias of after_task_publish (not exported here);
    # heartbeat_sent comes with event heartbeats (none from these quiet workers)
    expected = set(reference) - {"task_sent"}
    assert expected <= set(ours), sorted(expected - set(ours))
    for name in sorted(expected):
        keys = {tuple(sorted({*r["keys"], *EXTRA.get(name, ())})) for r in reference[name]}
        assert {tuple(r["keys"]) for r in ours[name]} == keys, name
        assert {r["sender"] for r in ours[name]} >= {
            r["sender"] for r in reference[name] if not r["sender"].startswith("object")
        }, name
        if any(r["sender"] == "object+hostname+app" for r in reference[name]):
            assert all(r["sender"] == "object+hostname+app" for r in ours[name]), name


def test_a_worker_sends_no_signal_celery_does_not(runs: dict[str, list[dict[str, Any]]]) -> None:
    assert set(_by_name(runs["celeriac"])) <= set(_by_name(runs["celery"]))


def test_signals_fire_in_the_process_celery_sends_them_from(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    for package, records in runs.items():
        for record in records:
            if record["name"] in IN_CHILD:
                assert not record["main"], (package, record)
            if record["name"] in IN_MAIN:
                assert record["main"], (package, record)
        children = [r for r in records if r["name"] == "worker_process_init"]
        assert len(children) >= 2, package  # once in each of the two children


def test_the_worker_starts_with_celerys_signals_in_celerys_order(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    def start(records: list[dict[str, Any]]) -> list[str]:
        names = [r["name"] for r in records if r["main"]]
        return names[: names.index("worker_ready") + 1]

    assert (
        start(runs["celeriac"])
        == start(runs["celery"])
        == [
            "import_modules",
            "celeryd_init",
            "worker_init",
            "after_setup_logger",
            "after_setup_task_logger",
            "celeryd_after_setup",
            "worker_before_create_process",
            "worker_before_create_process",
            "worker_ready",
        ]
    )


def test_argument_values_match(runs: dict[str, list[dict[str, Any]]]) -> None:
    def values(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return sorted((r["values"] for r in records if r["name"] == name), key=json.dumps)

    for name in ("worker_shutting_down", "task_revoked", "after_setup_logger", "task_unknown"):
        assert values(runs["celeriac"], name) == values(runs["celery"], name), name
    for name in ("task_failure", "task_retry", "task_internal_error"):
        assert {r["einfo"] for r in runs["celeriac"] if r["name"] == name} == {"ExceptionInfo"}


def test_task_signals_name_the_task(runs: dict[str, list[dict[str, Any]]]) -> None:
    def tasks(records: list[dict[str, Any]], name: str) -> set[str]:
        return {r["task"] for r in records if r["name"] == name}

    for name in ("task_prerun", "task_postrun", "task_success", "task_retry", "task_revoked"):
        assert tasks(runs["celeriac"], name) == tasks(runs["celery"], name), name
    assert tasks(runs["celeriac"], "task_internal_error") == {"sig.internal"}


SETUP_LOGGING = """
import json, logging, os, pathlib
from {package} import Celery, signals

DIR = pathlib.Path({notes!r})
app = Celery("semlog", broker={url!r}, backend={url!r})


@signals.setup_logging.connect(weak=False)
def own_logging(sender=None, **named):
    named.pop("signal", None)
    with (DIR / "setup_logging").open("a") as f:
        f.write(json.dumps(sorted(named)) + "\\n")


@signals.after_setup_logger.connect(weak=False)
def after(sender=None, **named):
    (DIR / "after_setup_logger").write_text("sent")


@signals.worker_ready.connect(weak=False)
def ready(sender=None, **named):
    (DIR / "ready").write_text("ready")


@app.task(name="semlog.handlers")
def handlers():
    return [type(h).__name__ for h in logging.getLogger().handlers]
"""


@pytest.mark.parametrize("package", ["celery", "celeriac"])
def test_a_setup_logging_receiver_replaces_the_workers_logging(
    package: str, tmp_path: Path
) -> None:
    import celery

    with leased_database() as url:
        source = SETUP_LOGGING.format(package=package, notes=str(tmp_path), url=url)
        write_module(tmp_path, "semlog", source)
        if package == "celery":
            worker = celery_worker(tmp_path, "semlog")
        else:
            worker = WorkerProcess(tmp_path, "semlog", "-l", "info", "-P", "solo")
        client = celery.Celery("logclient", broker=url, backend=url)
        try:
            worker.start(wait_ready=False)  # no "ready." line: nothing configures logging
            wait_until((tmp_path / "ready").exists, 60, "worker_ready")
            handlers = client.send_task("semlog.handlers").get(timeout=30)
        finally:
            worker.stop()
            close_celery_app(client)
    lines = (tmp_path / "setup_logging").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [["colorize", "format", "logfile", "loglevel"]]
    assert not (tmp_path / "after_setup_logger").exists()
    assert handlers == []  # the worker added no handler of its own


@pytest.mark.parametrize("package", ["celery", "celeriac"])
def test_the_publish_signals_of_a_client(package: str) -> None:
    """Measured on Celery: before_task_publish and after_task_publish, in the client,
    with the task name as sender and these keyword arguments."""
    import importlib

    pkg = importlib.import_module(package)
    signals = importlib.import_module(f"{package}.signals")
    seen: list[tuple[str, Any, list[str]]] = []

    def before(sender: Any = None, **named: Any) -> None:
        seen.append(("before", sender, sorted(set(named) - {"signal"})))

    def after(sender: Any = None, **named: Any) -> None:
        seen.append(("after", sender, sorted(set(named) - {"signal"})))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    try:
        with leased_database() as url:
            app = pkg.Celery("pubclient", broker=url, backend=url)
            try:
                app.send_task("sig.add", (1, 2))
            finally:
                close_celery_app(app) if package == "celery" else app.close()
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    extra = EXTRA["after_task_publish"] if package == "celeriac" else ()
    assert seen == [
        (
            "before",
            "sig.add",
            ["body", "declare", "exchange", "headers", "properties", "retry_policy", "routing_key"],
        ),
        ("after", "sig.add", sorted(["body", "exchange", "headers", "routing_key", *extra])),
    ]
