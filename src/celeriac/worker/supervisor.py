"""The prefork supervisor: forks N children, restarts the ones that die.

Each child is a complete consumer (its own event loop and broker connection, one task
at a time). When a child dies without finishing its work, the supervisor returns the
child's leased messages to the broker at once (``Broker.recover``), so the task is
delivered again; the delivery count makes a message that keeps killing children end up
dead-lettered. SIGTERM/SIGINT: warm shutdown of every child; a second one: cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.transports import create_broker
from celeriac.transports.capabilities import LeaseRecovery
from celeriac.worker._state import forget_child, write_pool
from celeriac.worker.autoscale import Autoscaler
from celeriac.worker.consumer import EXIT_ABANDONED, Consumer
from celeriac.worker.fairness import Balancer, SlotBoard
from celeriac.worker.pools import MainThreadPool
from celeriac.worker.startup import EXIT_BROKER_LOST

if TYPE_CHECKING:
    from celeriac.worker import Worker

logger = logging.getLogger("celeriac.worker")


_SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
_PR_SET_PDEATHSIG = 1
#: passed to ``Supervisor._on_signal`` for a stop that no signal asked for
_BROKER_LOST = object()


def _end_with_parent(parent: int) -> None:
    """Have the kernel send this child SIGTERM (a warm shutdown) when its supervisor
    dies, even by SIGKILL, so that no child outlives it holding messages and its output
    pipe (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: rely on the supervisor's own signals
        return
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


class Child:
    def __init__(self, index: int, pid: int) -> None:
        self.index = index
        self.pid = pid
        self.ready = False
        self.busy = False  # running a task (reported when autoscaling)
        self.idle_since = time.monotonic()
        self.retiring = False  # stopped by the autoscaler: not replaced


class Supervisor:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.children: dict[int, Child] = {}
        self.stopping = 0  # 0 running, 1 warm, 2 cold
        self.exit_code = 0
        self._ready_announced = False
        scale = worker.autoscale
        self.autoscaler = Autoscaler(*scale) if scale else None
        #: which children are free (fair dispatch), shared with them across fork
        self.board = SlotBoard()
        self._wake_r, self._wake_w = os.pipe()
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._ready_r, False)

    # -- parent ---------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: self._poke())
        first = self.autoscaler.low if self.autoscaler else self.worker.concurrency
        self.worker.state_dir = tempfile.mkdtemp(prefix="celeriac-worker-")
        try:
            for index in range(1, first + 1):
                self._spawn(index)
            self._supervise()
        finally:
            shutil.rmtree(self.worker.state_dir, ignore_errors=True)
        logger.info("Worker %s stopped", self.worker.hostname)
        return self.exit_code

    def _supervise(self) -> None:
        while self.children:
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select([self._wake_r, self._ready_r], [], [], 1.0)
                if self._wake_r in readable:
                    os.read(self._wake_r, 4096)
                if self._ready_r in readable:
                    self._read_ready()
            self._reap()
            if self.autoscaler is not None and not self.stopping:
                self._scale(self.autoscaler)

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _on_signal(self, signum: int, _frame: object) -> None:
        cold = signum == signal.SIGQUIT or self.stopping >= 1
        self.stopping = 2 if cold else 1
        if cold:
            logger.warning("Cold shutdown (%s)", signal.Signals(signum).name)
        else:
            logger.warning("Warm shutdown (%s)", signal.Signals(signum).name)
        if _frame is not _BROKER_LOST:  # a real signal
            self.worker.shutting_down(signum, cold)
        child_signal = signal.SIGQUIT if cold else signal.SIGTERM
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, child_signal)
        self._poke()

    def _scale(self, autoscaler: Autoscaler) -> None:
        grow, retire = autoscaler.decide(list(self.children.values()))
        if grow:
            used = {c.index for c in self.children.values()}
            self._spawn(min(set(range(1, autoscaler.high + 2)) - used))
            logger.info("Scaling up: %d pool processes", len(self.children))
        elif retire is not None:
            retire.retiring = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(retire.pid, signal.SIGTERM)
            left = sum(not c.retiring for c in self.children.values())
            logger.info("Scaling down: %d pool processes", left)

    def _read_ready(self) -> None:
        try:
            data = os.read(self._ready_r, 4096)
        except BlockingIOError:
            return
        for word in data.decode().split():
            if word[0] in "GSA":  # from remote control: pool_grow, pool_shrink, autoscale
                self._resize(word[0], word[1:])
                continue
            kind, pid_text = (word[0], word[1:]) if word[0] in "BI" else ("R", word)
            child = self.children.get(int(pid_text))
            if child is None:
                continue
            if kind == "R":
                child.ready = True
                child.idle_since = time.monotonic()
            else:
                child.busy = kind == "B"
                child.idle_since = time.monotonic()
        if not self._ready_announced and all(c.ready for c in self.children.values()):
            self._ready_announced = True
            self.worker.announce_ready()

    def _record_pool(self) -> None:
        if self.worker.state_dir:
            live = sorted(c.pid for c in self.children.values() if not c.retiring)
            write_pool(self.worker.state_dir, live, len(live))

    def _resize(self, kind: str, text: str) -> None:
        """``pool_grow`` (G<n>), ``pool_shrink`` (S<n>), ``autoscale`` (A<max>,<min>)."""
        if self.stopping:
            return
        if kind == "A" and self.autoscaler is not None:
            high, _, low = text.partition(",")
            self.autoscaler.high = max(1, int(high))
            self.autoscaler.low = min(max(1, int(low or 1)), self.autoscaler.high)
            logger.info("Autoscale now max=%d min=%d", self.autoscaler.high, self.autoscaler.low)
            count = sum(not c.retiring for c in self.children.values())
            if count < self.autoscaler.low:  # as Celery's: the pool follows the new range
                self._resize("G", str(self.autoscaler.low - count))
            elif count > self.autoscaler.high:
                self._resize("S", str(count - self.autoscaler.high))
            return
        n = max(0, int(text or 1))
        active = sorted(
            (c for c in self.children.values() if not c.retiring), key=lambda c: c.index
        )
        if kind == "G":
            used = {c.index for c in self.children.values()}
            for _ in range(n):
                index = min(set(range(1, len(used) + 2)) - used)
                used.add(index)
                self._spawn(index)
            self.worker.concurrency = len(active) + n
        elif kind == "S":
            retire = [c for c in reversed(active) if c.index != 1][:n]
            for child in retire:
                child.retiring = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
            self.worker.concurrency = len(active) - len(retire)
            self._record_pool()
        logger.info("Pool now has %d processes", self.worker.concurrency)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.board.mark(child.index, free=False)
            if self.worker.state_dir:
                forget_child(self.worker.state_dir, pid)
            self._child_exited(child, status)
            self._record_pool()

    def _child_exited(self, child: Child, status: int) -> None:
        name = f"ForkPoolWorker-{child.index}"
        if os.WIFSIGNALED(status):
            how = f"signal {os.WTERMSIG(status)} ({signal.Signals(os.WTERMSIG(status)).name})"
        else:
            how = f"exitcode {os.WEXITSTATUS(status)}"
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        if code == EXIT_ABANDONED:
            logger.info("Process %r pid:%d restarted after stopping a task", name, child.pid)
        if code == EXIT_BROKER_LOST and not self.stopping:  # broker_connection_retry
            logger.error("Process %r gave up on the broker: stopping the worker", name)
            self.exit_code = 1
            self._on_signal(signal.SIGTERM, _BROKER_LOST)
        if code != 0:
            if not self.stopping and code != EXIT_ABANDONED:
                logger.error("Process %r pid:%d exited with %s", name, child.pid, how)
            recovered = self._recover(self._consumer_id(child.pid))
            if recovered:
                logger.warning(
                    "Returned %d message(s) held by %s (pid %d) to the broker",
                    recovered,
                    name,
                    child.pid,
                )
        if not self.stopping and not child.retiring:
            self._spawn(child.index)

    def _consumer_id(self, pid: int) -> str:
        return f"{self.worker.hostname}:{pid}"

    def _recover(self, consumer_id: str) -> int:
        app = self.worker.app

        async def recover() -> int:
            broker = create_broker(app.broker_url, app.broker_options())
            await broker.connect()
            try:
                if not isinstance(broker, LeaseRecovery):
                    return 0  # the broker returns a dead consumer's messages by itself
                return await broker.recover(consumer_id)
            finally:
                await broker.close()

        for attempt in range(5):
            try:
                return asyncio.run(recover())
            except Exception as exc:
                logger.error("Could not recover messages of %s: %s", consumer_id, exc)
                time.sleep(0.2 * (attempt + 1))
        return 0

    def _spawn(self, index: int) -> None:
        signals.worker_before_create_process.send(sender=self)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        # A shutdown signal that arrives while forking is held back until the new child
        # is known here (else the parent's handler would not pass it on, and the child
        # would outlive the shutdown) and, in the child, until its own handlers are set.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # child
                code = 1
                try:
                    code = self._child_main(index, parent, held)
                except BaseException:
                    logger.exception("ForkPoolWorker-%d crashed", index)
                finally:
                    self._child_exit(code)
            self.children[pid] = Child(index, pid)
            self._record_pool()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    # -- child ----------------------------------------------------------------
    def _child_exit(self, code: int) -> None:
        """End this child: ``worker_process_shutdown`` (as Celery's, in the child), then
        exit with ``code``."""
        try:
            signals.worker_process_shutdown.send(
                sender=self.worker.hostname, pid=os.getpid(), exitcode=code
            )
        finally:
            logging.shutdown()
            os._exit(code)

    def _child_consumer(self, index: int, parent: int) -> Consumer:
        consumer = self.worker.consumer_for_child(self._consumer_id(os.getpid()))
        consumer.exit_on_abandon = True
        consumer.control = index == 1  # one child answers the worker's remote control
        consumer.worker_pid = parent
        consumer.monitor.supervisor_fd = self._ready_w
        consumer.balancer = Balancer(consumer, self.board, index)
        return consumer

    def _child_main(self, index: int, parent: int, mask: set[int | signal.Signals]) -> int:
        """A child: the consumer's event loop on a thread, tasks on the main thread (so a
        signal can interrupt a task blocked in a system call: soft limits, terminate).
        Shutdown signals are blocked on entry (see ``_spawn``) and unblocked, with
        ``mask``, once the child's handlers are set."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        _end_with_parent(parent)
        os.close(self._wake_r)
        os.close(self._ready_r)
        multiprocessing.current_process().name = f"ForkPoolWorker-{index}"
        worker = self.worker
        worker.open_logfile(index)
        signals.worker_process_init.send(sender=worker.hostname)
        consumer = self._child_consumer(index, parent)
        pool = consumer.pool
        assert isinstance(pool, MainThreadPool)
        if self.autoscaler is not None:
            pid = os.getpid()
            pool.on_busy = lambda busy: os.write(self._ready_w, f"{'BI'[not busy]}{pid} ".encode())
        state: dict[str, Any] = {"loop": None, "stop": None}

        def ready() -> None:
            os.write(self._ready_w, f"{os.getpid()} ".encode())

        async def main() -> None:
            state["loop"] = asyncio.get_running_loop()
            if state["stop"] is not None:  # a signal came before the loop was up
                consumer.stop(state["stop"])
            await consumer.run(on_ready=ready)

        def run_loop() -> None:
            try:
                asyncio.run(main())
            except BaseException:
                logger.exception("ForkPoolWorker-%d consumer crashed", index)
                consumer.exit_code = consumer.exit_code or 1
            if consumer.exit_code or consumer.cold:
                # the main thread may be stuck in a task that was stopped: leave now
                self._child_exit(consumer.exit_code)
            pool.stop()

        def on_signal(signum: int, _frame: object) -> None:
            if state["stop"] is None and os.getppid() != parent:
                logger.warning(
                    "ForkPoolWorker-%d: the worker's main process (pid %d) is gone; "
                    "finishing the current task and exiting",
                    index,
                    parent,
                )
            cold = signum == signal.SIGQUIT or state["stop"] is not None
            state["stop"] = cold
            loop = state["loop"]
            if loop is not None:
                loop.call_soon_threadsafe(consumer.stop, cold)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        thread = threading.Thread(target=run_loop, name="celeriac-consumer")
        thread.start()
        pool.serve()
        thread.join()
        return consumer.exit_code
