"""Test support: run real worker processes and wait for what they log."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celeriac._loop import run_sync

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """``celeriac -A <spec> worker ...`` in a subprocess, its log collected as it comes."""

    def __init__(
        self, cwd: Path, app_spec: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.cwd = cwd
        self.argv = [sys.executable, "-m", "celeriac", "-A", app_spec, "worker", *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 30) -> WorkerProcess:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: see ``stop``
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_for(r"ready\.", timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20, count: int = 1) -> list[str]:
        """Wait until ``count`` log lines match ``pattern``; return the matching lines."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found
                if self.proc is not None and self.proc.poll() is not None and not found:
                    self._cond.wait(0.2)
                    if self.proc.poll() is not None:
                        found = [line for line in self.lines if regex.search(line)]
                        if len(found) >= count:
                            return found
                        raise AssertionError(
                            f"worker exited ({self.proc.returncode}) before logging {pattern!r}:"
                            f"\n{self.log}"
                        )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no log line matched {pattern!r} in {timeout}s:\n{self.log}"
                    )
                self._cond.wait(left)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self._reader.is_alive():
            # a process of the group still holds the output pipe (closing it now would
            # block on the reader): end them, so one test's leftovers cannot hang the run
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class DashboardProcess(WorkerProcess):
    """``celeriac -A <spec> dashboard --port 0 ...`` in a subprocess; :attr:`url` once it
    listens (its socket is bound and listening before that line is printed)."""

    def __init__(self, cwd: Path, app_spec: str, *args: str, env: dict[str, str] | None = None):
        super().__init__(cwd, app_spec, env=env)
        self.argv = [sys.executable, "-m", "celeriac", "-A", app_spec, "dashboard", "--port", "0"]
        self.argv.extend(args)
        self.url = ""

    def start(self, wait_ready: bool = True, timeout: float = 30) -> DashboardProcess:
        super().start(wait_ready=False)
        if wait_ready:
            line = self.wait_for(r"-> celeriac dashboard: http://", timeout)[0]
            self.url = re.search(r"(http://\S+/)", line).group(1)  # type: ignore[union-attr]
        return self


def celery_worker(cwd: Path, app_spec: str, *args: str) -> WorkerProcess:
    """A real Celery worker (the interoperability peer), quiet on the network: no
    heartbeat, gossip or mingle; ``args`` are more worker options (``-P threads``, ``-Q``)."""
    options = list(args) if "-P" in args else ["-P", "solo", *args]
    worker = WorkerProcess(cwd, app_spec)
    worker.argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_spec,
        "worker",
        "-l",
        "info",
        *options,
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    ]
    return worker


def close_celery_app(app: Any) -> None:
    """Close a real Celery client app's connections, its result backend's own included
    (Redis pub/sub, rpc reply consumer): ``app.close()`` leaves those to the garbage
    collector, whose ResourceWarning then lands in whichever test runs at the time."""
    backend = app.backend
    consumer = getattr(backend, "result_consumer", None)
    pubsub = getattr(consumer, "_pubsub", None)
    if pubsub is not None:
        pubsub.close()
    connection = getattr(consumer, "_connection", None)  # the rpc backend's
    if connection is not None:
        connection.close()
    client = getattr(backend, "client", None)
    if client is not None:
        client.connection_pool.disconnect()
    app.close()


@contextlib.contextmanager
def own_celery_tasks() -> Iterator[None]:
    """Celery apps made and finalized inside get only their own shared tasks.

    Celery's ``@app.task`` is shared by default: it adds itself to every Celery app
    the process finalizes later, so the tasks of earlier tests (two of one name make a
    duplicate-name error) would join a test's app. Inside, the earlier ones are set
    aside; afterwards they come back and the ones defined inside are dropped (they go
    with their test). Finalize the app inside (``app.finalize(auto=True)``; a module
    that calls ``app.register_task`` or reads ``app.tasks`` does it when imported).
    """
    import celery._state

    finalizers: set[object] = celery._state._on_app_finalizers
    earlier = set(finalizers)
    finalizers.clear()
    try:
        yield
    finally:
        finalizers.clear()
        finalizers.update(earlier)


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def repeat_until_logged(
    action: Any, worker: WorkerProcess, pattern: str, timeout: float = 20
) -> None:
    """Run ``action`` (idempotent) until ``worker`` logs ``pattern``, waiting a second
    for the line after each run: a pub/sub or fanout broadcast reaches a worker only
    once it has subscribed or bound its queue, which may come after "ready"."""

    def heard() -> bool:
        action()
        try:
            worker.wait_for(pattern, timeout=1)
        except AssertionError:
            return False
        return True

    wait_until(heard, timeout, f"{pattern!r} in the worker's log")


def wait_until(predicate: Any, timeout: float = 10, what: str = "condition") -> Any:
    """Poll ``predicate`` (a cheap check of an external effect) until it is truthy."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class TLSProxy:
    """A TLS endpoint on a free loopback port that forwards each connection in plain TCP
    to ``127.0.0.1:<target_port>``: lets the tests speak ``amqps://`` and ``rediss://`` to
    the test servers, which have no TLS listener. Its certificate is self-signed for
    ``localhost`` and 127.0.0.1 (made by the ``openssl`` command); ``ca_file`` is the file
    a client trusts to verify it."""

    def __init__(self, directory: Path, target_port: int) -> None:
        self.directory = directory
        self.target_port = target_port
        self.ca_file = str(directory / "tls-cert.pem")
        self.port = 0
        self.connections = 0
        self._loop: Any = None
        self._stop: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TLSProxy:
        import asyncio
        import ssl

        key = self.directory / "tls-key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                self.ca_file,
            ],
            check=True,
            capture_output=True,
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca_file, str(key))
        loop = self._loop = asyncio.new_event_loop()
        started = threading.Event()

        async def pipe(reader: Any, writer: Any) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                writer.close()

        async def handle(reader: Any, writer: Any) -> None:
            self.connections += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        stop = self._stop = asyncio.Event()
        handlers: set[Any] = set()

        async def track(reader: Any, writer: Any) -> None:
            task = asyncio.current_task()
            handlers.add(task)
            try:
                await handle(reader, writer)
            finally:
                handlers.discard(task)

        async def serve() -> None:
            server = await asyncio.start_server(track, "127.0.0.1", 0, ssl=context)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            await stop.wait()
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="tls-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the TLS proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)


@contextlib.contextmanager
def closing(app: Any) -> Iterator[Any]:
    """Close the app's client connections (this thread's loop) afterwards."""
    try:
        yield app
    finally:
        run_sync(app.close_clients())
