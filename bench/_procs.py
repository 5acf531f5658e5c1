"""Worker processes of the benchmark: start in their own session, wait for a ready line,
stop by process group (and every descendant), always.

Every process started here is remembered in ``_LIVE`` until it is stopped, so that
:func:`stop_all` (called from ``finally`` and from the signal handlers of ``run.py``)
can end exactly the processes this run started, by PID, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_LIVE: dict[int, Worker] = {}
_LIVE_LOCK = threading.Lock()


def _children_map() -> dict[int, list[int]]:
    """ppid -> [pid] for every process we can see (Linux /proc)."""
    result: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after it
        rest = stat.rsplit(")", 1)[-1].split()
        if len(rest) >= 2:
            result.setdefault(int(rest[1]), []).append(int(entry))
    return result


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (RQ's work horses leave their parent's session)."""
    children = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Worker:
    """One worker command, started in a new session; its output goes to ``log_path``."""

    def __init__(
        self,
        label: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        ready_pattern: str,
        ready_count: int = 1,
    ) -> None:
        self.label = label
        self.argv = list(argv)
        self.log_path = log_path
        self._pattern = re.compile(ready_pattern)
        self._needed = ready_count
        self._seen = 0
        self.ready_at: float | None = None
        self._ready = threading.Event()
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with _LIVE_LOCK:
            _LIVE[self.proc.pid] = self
        self._reader = threading.Thread(target=self._read, name=f"log-{label}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            now = time.time()
            with contextlib.suppress(ValueError):  # log closed during stop
                self._log.write(raw)
            if self.ready_at is None and self._pattern.search(raw.decode(errors="replace")):
                self._seen += 1
                if self._seen >= self._needed:
                    self.ready_at = now
                    self._ready.set()
        self._ready.set()  # the process ended: wake a waiter

    def wait_ready(self, timeout: float) -> float:
        """The time the ready line(s) appeared; raises if the worker died or timed out."""
        deadline = time.time() + timeout
        while not self._ready.wait(0.05):
            if time.time() > deadline:
                raise TimeoutError(f"{self.label}: not ready after {timeout:.0f}s ({self.tail()})")
        if self.ready_at is None:
            raise RuntimeError(
                f"{self.label}: exited with {self.proc.poll()} before ready ({self.tail()})"
            )
        return self.ready_at

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.label}: exited with {code} ({self.tail()})")

    def tail(self, lines: int = 6) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(text[-lines:]) + f" [log: {self.log_path}]"

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL whatever is left
        (the group and every descendant seen on the way)."""
        pid = self.proc.pid
        doomed = set(descendants(pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline:
            doomed |= set(descendants(pid)) if self.proc.poll() is None else set()
            if self.proc.poll() is not None and not any(_alive(p) for p in doomed):
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        for child in doomed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._reader.join(timeout=2)
        with _LIVE_LOCK:
            _LIVE.pop(pid, None)
        self._log.close()


class WorkerGroup:
    """Several worker commands that together make one worker (RQ: one process each)."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    def wait_ready(self, timeout: float) -> float:
        deadline = time.time() + timeout
        return max(w.wait_ready(max(0.1, deadline - time.time())) for w in self.workers)

    def check_alive(self) -> None:
        for worker in self.workers:
            worker.check_alive()

    def tail(self) -> str:
        return self.workers[0].tail() if self.workers else ""

    def stop(self, grace: float = 10.0) -> None:
        for worker in self.workers:  # signal them all first, so they stop in parallel
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            worker.stop(grace)


def stop_all() -> None:
    """Stop every worker this run started and has not stopped yet."""
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for worker in live:
        with contextlib.suppress(Exception):
            worker.stop(grace=3.0)


def run_driver(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a client-side driver in its own session; kill its group on timeout."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
