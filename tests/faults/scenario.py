"""The harness of the fault scenarios: a producer in the test process, real worker
processes (``celeriac -A faulttasks worker``) on one broker, faults, and the history's
verdict at the end. Used by the tests beside it and by ``soak/run.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celeriac import Celery
from celeriac._loop import run_sync
from faults.history import History, Report, Run
from faults.proxy import FaultProxy
from support import ROOT, WorkerProcess, wait_until

FAULTS_DIR = Path(__file__).resolve().parent


#: seconds before its receipt that a RabbitMQ delivery may have left the broker (in
#: the socket buffers, the proxy, the consumer's prefetch hand-off)
AMQP_IN_FLIGHT = 1.0


@dataclass
class Broker:
    """Where the scenario's messages live: ``url`` is the direct address (the producer
    and the final probe use it); workers go through ``proxy`` when there is one."""

    kind: str  # "sqlite", "redis" or "amqp"
    url: str
    proxy: FaultProxy | None = None
    restart: Callable[[], object] | None = None  # a broker that can be killed: start it again
    kill: Callable[[], None] | None = None

    def worker_url(self) -> str:
        if self.proxy is None:
            return self.url
        scheme, _, rest = self.url.partition("://")
        auth, _, hostpath = rest.rpartition("@")
        _, _, path = hostpath.partition("/")
        return f"{scheme}://{auth + '@' if auth else ''}{self.proxy.url_host}/{path}"


class Scenario:
    """One run: ``publish``, start ``worker``s, inject faults, then ``verdict``."""

    def __init__(self, directory: Path, broker: Broker, lease: float = 2.0, seed: int = 0) -> None:
        self.directory = directory
        self.broker = broker
        self.lease = lease
        self.history = History(directory / "history")
        self.queue = f"faults-{uuid.uuid4().hex[:12]}"
        self.random = random.Random(seed)
        self.client = Celery("faults-producer", broker=broker.url, set_as_current=False)
        self.client.conf.task_ignore_result = True
        self.workers: dict[str, WorkerProcess] = {}
        self.stopped: list[tuple[str, WorkerProcess]] = []  # for the logs of a failure
        self.left = 0
        self.probe = True  # the verdict counts what is left in the queue
        self.report: Report | None = None

    # -- processes ----------------------------------------------------------------------
    def worker(
        self,
        label: str,
        pool: str = "prefork",
        concurrency: int = 2,
        url: str | None = None,
        wrap: list[str] | None = None,
        wait_ready: bool = True,
    ) -> WorkerProcess:
        """Start a worker labelled ``label`` (``url``: the broker as it sees it)."""
        env = {
            "FAULTS_BROKER": url or self.broker.worker_url(),
            "FAULTS_RUNS": str(self.history.runs_dir),
            "FAULTS_WORKER": label,
            "FAULTS_LEASE": str(self.lease),
            "PYTHONPATH": os.pathsep.join([str(FAULTS_DIR), str(ROOT / "tests")]),
        }
        args = ["-P", pool, "-c", str(concurrency), "-Q", self.queue, "-n", f"{label}@faults"]
        proc = WorkerProcess(FAULTS_DIR, "faulttasks", *args, "-l", "info", env=env)
        if wrap:
            proc.argv = [*wrap, *proc.argv]
        self.workers[label] = proc
        return proc.start(wait_ready=wait_ready, timeout=60)

    def start_workers(self, *labels: str, **options: Any) -> None:
        """Start several workers at once (each ``worker(label, **options)``), then wait
        until each is ready."""
        for label in labels:
            self.worker(label, wait_ready=False, **options)
        for label in labels:
            self.workers[label].wait_for(r"ready\.", 60)

    def children(self, label: str) -> list[int]:
        proc = self.workers[label].proc
        assert proc is not None
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            return [int(pid) for pid in f.read().split()]

    def running(self, label: str | None = None, fresh: float | None = None) -> list[Run]:
        """Runs started and not finished (on ``label``'s worker; started less than
        ``fresh`` seconds ago: with tasks of 20 ms or more, still running a moment
        later, when the fault comes)."""
        since = 0.0 if fresh is None else time.time() - fresh
        return [
            run
            for runs in self.history.runs().values()
            for run in runs
            if run.end is None and (label is None or run.worker == label) and run.start > since
        ]

    # -- load ---------------------------------------------------------------------------
    def publish(self, count: int, seconds: tuple[float, float] = (0.0, 0.03)) -> list[str]:
        """Publish ``count`` tasks of random length; each id is recorded once its publish
        has returned."""
        ids: list[str] = []
        for _ in range(count):
            length = round(self.random.uniform(*seconds), 4)
            began = time.time()
            result = self.client.send_task("faulttasks.work", (length,), queue=self.queue)
            self.history.enqueue([result.id], began)
            ids.append(result.id)
        return ids

    def wait_finished(self, count: int, timeout: float) -> None:
        wait_until(
            lambda: self.history.finished() >= count,
            timeout,
            f"{count} of {len(self.history.enqueued)} tasks to finish"
            f" ({self.history.finished()} had)",
        )

    # -- faults -------------------------------------------------------------------------
    def kill_child(self, label: str) -> int:
        """kill -9 a prefork child of ``label`` that is running a task."""

        def busy_child() -> int | None:
            children = set(self.children(label))
            busy = [r.pid for r in self.running(label, fresh=0.01) if r.pid in children]
            return busy[0] if busy else None

        pid = wait_until(busy_child, 20, f"a child of {label} running a task")
        self.history.fault_at("kill -9 child", label)
        os.kill(pid, signal.SIGKILL)
        return int(pid)

    def kill_worker(self, label: str) -> None:
        """kill -9 the whole worker (supervisor and children)."""
        proc = self.workers[label].proc
        assert proc is not None
        self.history.fault_at("kill -9 worker", label)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._stop(label)

    def sigterm(self, label: str, timeout: float = 30) -> int:
        """SIGTERM ``label`` (a warm shutdown: it must finish and ack what runs and
        return the rest, so this fault explains no duplicate); wait for its exit."""
        fault = self.history.fault_at("SIGTERM", label, explains_duplicates=False)
        worker = self.workers[label]
        worker.signal(signal.SIGTERM)
        code = worker.wait(timeout)
        fault.end = time.time()
        self._stop(label)
        return code

    def stop_all(self) -> None:
        """Warm-stop every worker at once."""
        for worker in self.workers.values():
            if worker.proc is not None and worker.proc.poll() is None:
                worker.signal(signal.SIGTERM)
        for label in list(self.workers):
            self._stop(label)

    def _stop(self, label: str) -> None:
        worker = self.workers.pop(label)
        worker.stop()
        self.stopped.append((label, worker))

    # -- the end ------------------------------------------------------------------------
    def verdict(self, timeout: float = 30) -> Report:
        """Wait until every enqueued task has finished (or ``timeout``), then one lease
        and a little more (an unacked message would come back and run again; RabbitMQ,
        which has no lease, returns unacked messages when their connection closes), stop
        the workers warm, run whatever came back (see ``_run_leftovers``) and read the
        history."""
        total = len(self.history.enqueued)
        began = time.monotonic()
        with contextlib.suppress(AssertionError):
            self.wait_finished(total, timeout)
        print(f"drained in {time.monotonic() - began:.1f} s")
        if self.broker.kind != "amqp":
            time.sleep(self.lease + 0.5)  # a quiet period: nothing to await, by definition
        self.stop_all()
        if self.probe:
            self._run_leftovers()
        # RabbitMQ has no lease; a delivery it sent just before a fault (read by the
        # worker after the link went silent) is still owed an ack on the old channel,
        # which can never reach it: AMQP_IN_FLIGHT covers a delivery on its way
        exposure = AMQP_IN_FLIGHT if self.broker.kind == "amqp" else self.lease
        report = self.history.check(lease=exposure)
        self.left = self.size() if self.probe else 0
        print(f"{self.broker.kind}: {report.summary()}; {self.left} left")
        self.report = report
        return report

    def _run_leftovers(self) -> None:
        """Messages back in the queue after the stop (redeliveries after a fault that a
        worker had prefetched and returned; on RabbitMQ, messages whose ack was lost) are
        run by one more worker, so that the history judges them as runs: a redelivery a
        fault explains passes, one no fault explains is an unexplained duplicate, and a
        message that stays is ``left``."""
        count = self.size()
        if count == 0:
            return

        def ran() -> int:
            runs = self.history.runs().values()
            return sum(1 for rs in runs for r in rs if r.worker == "leftovers" and r.end)

        self.worker("leftovers")
        with contextlib.suppress(AssertionError):
            wait_until(lambda: ran() >= count, 30, f"the {count} leftovers to run")
        self.stop_all()

    def size(self) -> int:
        async def size() -> int:
            return await (await self.client.get_broker()).size(self.queue)

        return run_sync(size())

    def assert_ok(self, report: Report) -> None:
        assert report.ok, report.details() + "\n" + self.logs()
        assert self.left == 0, f"{self.left} message(s) left in the queue: {report.summary()}"

    def logs(self, lines: int = 40) -> str:
        out = []
        for label, worker in [*self.stopped, *self.workers.items()]:
            out.append(f"--- {label}\n" + "\n".join(worker.lines[-lines:]))
        return "\n".join(out)

    def close(self) -> None:
        """Teardown: workers still running after a failed scenario are killed, not
        stopped (a warm stop may wait for a connection that is gone)."""
        for worker in self.workers.values():
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
        for label in list(self.workers):
            self._stop(label)
        with contextlib.suppress(Exception):
            run_sync(self.client.close_clients())
