"""Per-task work for the benchmark's real-work workloads, and the helpers ``run.py``
starts around them.

Workloads (the same task body for every system, added to each system's task module):

- ``noop``: returns None;
- ``incr``: one synchronous Redis round trip, ``INCR`` with redis-py's sync client (one
  connection per process, made on first use after the fork), on database 14's key
  ``bench-work:incr``;
- ``http``: one ``GET`` to a local HTTP server the bench starts (``serve`` below), with
  the standard library's ``http.client`` on a kept-alive connection per process;
- ``cpu``: about 1 ms of pure-Python CPU (a loop of ``BENCH_CPU_LOOPS`` steps, calibrated
  by the bench on an idle core before the run: the same work for every system).

``CpuHog`` runs a bounded busy loop on every core (one process per core, each ending by
itself after ``limit`` seconds even if the bench dies), started and stopped by the bench
around a ``--cpu-hog`` measurement.

    python _work.py serve PORT      # the HTTP server (asyncio, HTTP/1.1 keep-alive)
    python _work.py hog SECONDS     # one core's busy loop
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: the workloads, in report order: (key, task name, description)
WORKLOADS = (
    ("noop", "noop", "no-op"),
    ("incr", "incr", "one sync Redis INCR (redis-py)"),
    ("http", "http", "one HTTP GET to a local server (http.client, kept alive)"),
    ("cpu", "cpu", "1 ms of pure-Python CPU"),
)
WORK_KEY = "bench-work:incr"
WORK_DB = 14

#: appended to every system's task module: the task bodies call these
WORK_SOURCE = """

# -- the real-work task bodies (bench/_work.py), the same for every system -------------
import http.client as _http_client
import threading as _threading

_work = _threading.local()
_CPU_LOOPS = int(os.environ.get("BENCH_CPU_LOOPS", "20000"))


def _redis_client():
    client = getattr(_work, "redis", None)
    if client is None or _work.redis_pid != os.getpid():
        import redis as _redis_py

        client = _work.redis = _redis_py.Redis.from_url(os.environ["BENCH_WORK_REDIS_URL"])
        _work.redis_pid = os.getpid()
    return client


def work_incr():
    return int(_redis_client().incr("bench-work:incr"))


def work_http():
    for attempt in (0, 1):
        conn = getattr(_work, "http", None)
        if conn is None or _work.http_pid != os.getpid():
            host, port = os.environ["BENCH_WORK_HTTP"].rsplit(":", 1)
            conn = _work.http = _http_client.HTTPConnection(host, int(port), timeout=10)
            _work.http_pid = os.getpid()
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            return len(body)
        except (OSError, _http_client.HTTPException):
            conn.close()
            _work.http = None
            if attempt:
                raise
    return 0


def work_cpu():
    total = 0
    for i in range(_CPU_LOOPS):
        total += i * i
    return total & 0xFF
"""

#: each system's decorators for the work tasks (RQ takes plain functions)
TASK_TEMPLATES = {
    "celeriac": "@app.task\ndef {name}():\n    return work_{name}()\n",
    "celery": "@app.task\ndef {name}():\n    return work_{name}()\n",
    "dramatiq": "@dramatiq.actor(store_results=True)\ndef {name}():\n    return work_{name}()\n",
    "rq": "def {name}():\n    return work_{name}()\n",
    "huey": "@huey.task()\ndef {name}():\n    return work_{name}()\n",
}


def with_work_tasks(system: str, source: str) -> str:
    """``source`` (a system's task module) plus the work tasks ``incr``, ``http``, ``cpu``;
    ``source`` alone for a system without a template (it runs the no-op and I/O only)."""
    template = TASK_TEMPLATES.get(system)
    if template is None:
        return source
    tasks = "\n\n".join(template.format(name=n) for n in ("incr", "http", "cpu"))
    return source + WORK_SOURCE + "\n\n" + tasks


def calibrate_cpu(target: float = 0.001) -> int:
    """Loop steps of ``work_cpu`` that take ``target`` seconds of CPU on this machine
    (best of several tries, in process CPU time, so other load matters little)."""
    loops = 20_000

    def run(n: int) -> float:
        start = time.process_time()
        total = 0
        for i in range(n):
            total += i * i
        return time.process_time() - start

    for _ in range(3):
        best = min(run(loops * 10) for _ in range(5)) / 10
        loops = max(1000, int(loops * target / best))
    return loops


# -- the local HTTP server ------------------------------------------------------------


class _Http(asyncio.Protocol):
    """Answers every request with ``200 ok``, keeping the connection open."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4 :]  # GET requests: no body
            self.transport.write(self.RESPONSE)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=1024)
    print("BENCH-HTTP-READY", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


class HttpServer:
    """The local HTTP server in its own process (started by the bench, stopped by PID)."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_work.py"), "serve", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "BENCH-HTTP-READY" not in line:
            self.stop()
            raise RuntimeError(f"the bench's HTTP server did not start: {line!r}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class CpuHog:
    """A busy loop on each core, in processes of their own (each stops by itself after
    ``limit`` seconds: the bound, should the bench not stop it)."""

    def __init__(self, cores: int | None = None, limit: float = 300.0) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.limit = limit
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for _ in range(self.cores):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(HERE / "_work.py"), "hog", str(self.limit)],
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []

    def __enter__(self) -> CpuHog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _hog(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(10_000):
            pass


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(_serve(int(sys.argv[2])))
    elif sys.argv[1] == "hog":
        _hog(float(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")
