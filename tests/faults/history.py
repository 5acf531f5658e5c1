"""The history checker of the fault-injection suite.

Two records, neither of which any fault touches:

- **what was enqueued**: the ids the test published, kept in the test process's memory
  (and appended to ``enqueued.log`` in the history directory, for a post-mortem);
- **what ran**: each execution of a task appends one ``S <id> <t>`` line when it starts
  and one ``E <id> <t>`` line when its body has finished to a file of its own process
  (``runs/<worker>-<pid>.log``, opened ``O_APPEND``, one ``write`` per line) on the local
  disk; the worker process that receives the message (its ``task_received`` signal, just
  after the fetch that leased it) writes ``R <id> <t>`` first. No broker, connection or
  result backend is involved, so a broker kill, a proxy fault or a killed worker cannot
  falsify it; a run killed mid-task leaves its ``S`` line without an ``E``.

Faults are recorded by the test as intervals ``[start, end]`` (wall clock, the same clock
the tasks write) with the worker they hit (``None``: every worker, e.g. the broker or
the network). The verdict, once the drain is over:

- **completed**: at least one run of the task finished;
- **lost**: enqueued and never started;
- **stuck**: started, and no run of it ever finished;
- **duplicated**: started more than once. A repeat run is **explained** when an earlier
  run of the same task was *exposed* to a fault that may cause a redelivery: the fault
  hit that run's worker (or every worker) while its message was leased and
  unacknowledged, i.e. the fault's interval meets ``[received - lease, run end +
  ack_grace]``. ``received`` is the ``R`` line before the run (else its start); the lease
  began at the fetch, before that, by as long as the fetch's reply took: a fault that
  delays the reply past the lease makes the lease run out before the message arrives,
  and then lasts until at least ``received - lease``, so that window is where a lease
  can have been lost. A run that never finished is exposed to the end. ``ack_grace``
  covers the time between a task's end and its ack reaching the broker (acks are
  batched). Faults that must not repeat
  work (a SIGTERM: a warm shutdown finishes and acks what runs) explain nothing. A
  broker or network fault during the task's *publish* explains repeats too: a publish
  whose reply was lost is sent again by the producer's retry, and the queue then holds
  two copies (at-least-once on the producer's side).

:meth:`History.check` fails on any lost or stuck task and on any unexplained duplicate.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds between a task's end and its ack reaching the broker, at most (batched acks).
ACK_GRACE = 2.0


@dataclass
class Run:
    task_id: str
    worker: str
    pid: int
    start: float
    end: float | None = None
    received: float | None = None  # when this process received the message


@dataclass
class Fault:
    kind: str
    start: float
    end: float
    worker: str | None = None  # None: every worker (broker, network)
    explains_duplicates: bool = True

    def exposes(self, run: Run, grace: float, lease: float) -> bool:
        if not self.explains_duplicates:
            return False
        if self.worker is not None and self.worker != run.worker:
            return False
        until = float("inf") if run.end is None else run.end + grace
        since = (run.start if run.received is None else run.received) - lease
        return self.start <= until and since <= self.end


@dataclass
class Report:
    enqueued: int
    completed: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    stuck: set[str] = field(default_factory=set)
    duplicated: dict[str, list[Run]] = field(default_factory=dict)
    unexplained: dict[str, list[Run]] = field(default_factory=dict)
    unexpected: set[str] = field(default_factory=set)  # ran, never enqueued
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stuck or self.unexplained)

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for fault in self.faults:
            kinds[fault.kind] = kinds.get(fault.kind, 0) + 1
        return (
            f"{self.enqueued} enqueued: {len(self.completed)} completed, {len(self.lost)} lost,"
            f" {len(self.stuck)} stuck, {len(self.duplicated)} duplicated"
            f" ({len(self.unexplained)} unexplained); faults: "
            + (", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none")
        )

    def details(self, limit: int = 5) -> str:
        """The summary, the first ``limit`` ids of each failure, and for each shown
        unexplained duplicate its runs and the faults within 10 s of them."""
        lines = [self.summary()]
        for name, ids in (("lost", self.lost), ("stuck", self.stuck)):
            if ids:
                lines.append(f"{name}: {sorted(ids)[:limit]}")
        for task_id, runs in list(self.unexplained.items())[:limit]:
            shown = ", ".join(
                f"{r.worker}/{r.pid} received {r.received} ran {r.start:.3f}-{r.end}" for r in runs
            )
            lines.append(f"unexplained duplicate {task_id}: {shown}")
            near = [
                f"{f.kind}@{f.worker or 'all'} {f.start:.3f}-{f.end:.3f}"
                for f in self.faults
                if f.start - 10 <= runs[-1].start and runs[0].start <= f.end + 10
            ]
            lines.append(f"  faults near: {'; '.join(near) or 'none'}")
        return "\n".join(lines)


class History:
    """The record of one scenario, in ``directory`` (``runs/`` is handed to the tasks)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.runs_dir = directory / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.enqueued: dict[str, float] = {}  # id: when its publish returned
        self.publishing: dict[str, float] = {}  # id: when its publish began
        self.faults: list[Fault] = []
        self._enqueued_log = directory / "enqueued.log"

    # -- what the test does ----------------------------------------------------------
    def enqueue(self, task_ids: Iterable[str], began: float | None = None) -> None:
        """Record ids whose publish has returned (the broker has them); ``began``: when
        their publish began (a fault from then on may have doubled them)."""
        now = time.time()
        with self._enqueued_log.open("a") as log:
            for task_id in task_ids:
                self.enqueued[task_id] = now
                self.publishing[task_id] = now if began is None else began
                log.write(f"{task_id} {now}\n")

    def load_enqueued(self) -> None:
        """Read the ids another process (a producer host) appended to ``enqueued.log``."""
        for line in self._enqueued_log.read_text().splitlines():
            task_id, stamp = line.split()
            self.enqueued.setdefault(task_id, float(stamp))

    def fault_at(
        self, kind: str, worker: str | None = None, *, explains_duplicates: bool = True
    ) -> Fault:
        """Record an instantaneous fault (a kill); widen ``end`` for one that lasts."""
        now = time.time()
        fault = Fault(kind, now, now, worker, explains_duplicates)
        self.faults.append(fault)
        return fault

    @contextlib.contextmanager
    def fault(
        self, kind: str, worker: str | None = None, *, explains_duplicates: bool = True
    ) -> Iterator[Fault]:
        """Record a fault that lasts as long as the ``with`` block."""
        fault = self.fault_at(kind, worker, explains_duplicates=explains_duplicates)
        try:
            yield fault
        finally:
            fault.end = time.time()

    # -- what the tasks did ----------------------------------------------------------
    def runs(self) -> dict[str, list[Run]]:
        """Every execution so far, by task id, in start order."""
        found: dict[str, list[Run]] = {}
        for path in sorted(self.runs_dir.glob("*.log")):
            worker, _, pid = path.stem.rpartition("-")
            open_runs: dict[str, Run] = {}
            received: dict[str, float] = {}
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 3:
                    continue  # a line cut by a kill -9 mid-write: cannot happen, but harmless
                kind, task_id, stamp = parts
                if kind == "R":
                    received[task_id] = float(stamp)
                elif kind == "S":
                    run = Run(
                        task_id, worker, int(pid), float(stamp), None, received.pop(task_id, None)
                    )
                    found.setdefault(task_id, []).append(run)
                    open_runs[task_id] = run
                elif kind == "E" and task_id in open_runs:
                    open_runs.pop(task_id).end = float(stamp)
        for runs in found.values():
            runs.sort(key=lambda r: r.start)
        return found

    def finished(self) -> int:
        """How many enqueued tasks have a finished run (cheap enough to poll)."""
        done: set[str] = set()
        for path in self.runs_dir.glob("*.log"):
            for line in path.read_text().splitlines():
                if line.startswith("E "):
                    done.add(line.split()[1])
        return len(done.intersection(self.enqueued))

    def started(self) -> int:
        return sum(
            1
            for path in self.runs_dir.glob("*.log")
            for line in path.read_text().splitlines()
            if line.startswith("S ")
        )

    def check(self, ack_grace: float = ACK_GRACE, lease: float = 0.0) -> Report:
        """The verdict; ``lease``: the workers' visibility timeout (see the module's
        docstring). The faults are written to ``faults.log`` beside the runs."""
        with (self.directory / "faults.log").open("w") as log:
            for f in self.faults:
                log.write(
                    f"{f.start} {f.end} {f.worker or '-'} {int(f.explains_duplicates)} {f.kind}\n"
                )
        runs = self.runs()
        report = Report(len(self.enqueued), faults=list(self.faults))
        report.unexpected = set(runs) - set(self.enqueued)
        for task_id in self.enqueued:
            task_runs = runs.get(task_id, [])
            if not task_runs:
                report.lost.add(task_id)
                continue
            if any(r.end is not None for r in task_runs):
                report.completed.add(task_id)
            else:
                report.stuck.add(task_id)
            if len(task_runs) > 1:
                report.duplicated[task_id] = task_runs
                if self._published_in_a_fault(task_id):
                    continue
                if not all(
                    self._explained(task_runs[:i], ack_grace, lease)
                    for i in range(1, len(task_runs))
                ):
                    report.unexplained[task_id] = task_runs
        return report

    def _published_in_a_fault(self, task_id: str) -> bool:
        began = self.publishing.get(task_id, self.enqueued[task_id])
        returned = self.enqueued[task_id]
        return any(
            f.explains_duplicates and f.worker is None and f.start <= returned and began <= f.end
            for f in self.faults
        )

    def _explained(self, earlier: list[Run], grace: float, lease: float) -> bool:
        return any(f.exposes(run, grace, lease) for run in earlier for f in self.faults)


def record_run(runs_dir: Path, worker: str, kind: str, task_id: str) -> None:
    """Append one line of a run (``kind`` ``S`` or ``E``) to this process's file: the
    tasks' half of the history, called from inside the worker."""
    path = runs_dir / f"{worker}-{os.getpid()}.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {task_id} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
