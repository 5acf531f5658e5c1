"""A TCP proxy of our own between workers and a broker, for the fault scenarios: it
forwards ``127.0.0.1:<port>`` to a target, and on command

- **resets** every open connection (``SO_LINGER`` 0, so each side gets an RST, as after a
  middlebox drop or a broker crash); new connections pass;
- **freezes** the network: nothing is forwarded either way, on open and new connections,
  until :meth:`thaw` (the bytes wait and flow again afterwards: a stall, a VM pause);
- **blackholes** open connections: whatever they send from then on is read and dropped,
  in both directions, and they stay open (no FIN, no RST: a NAT or load balancer that
  forgot them); new connections pass;
- **throttles** forwarding to ``rate`` bytes/s per direction with ``delay`` seconds added
  to every chunk (a slow, distant link).

It runs an asyncio loop in a thread of the test process; every method is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any


class _Link:
    """One proxied connection: the client's side and the broker's side."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = False
        self.tasks: list[asyncio.Task[None]] = []

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.connections = 0  # accepted so far
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()  # set: forwarding; clear: frozen
        self._rate: float | None = None
        self._delay = 0.0
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # -- commands (from any thread) --------------------------------------------------
    def reset(self) -> int:
        """Reset every open connection; return how many."""
        return int(self._call(self._reset))

    def freeze(self) -> None:
        self._call(self._open.clear)

    def thaw(self) -> None:
        self._call(self._open.set)

    def blackhole(self) -> int:
        """Silently drop all traffic of the open connections; return how many."""

        def mark() -> int:
            for link in self._links:
                link.blackholed = True
            return len(self._links)

        return int(self._call(mark))

    def throttle(self, rate: float | None, delay: float = 0.0) -> None:
        """Limit each direction to ``rate`` bytes/s (``None``: no limit) plus ``delay``."""

        def set_() -> None:
            self._rate, self._delay = rate, delay

        self._call(set_)

    def open_connections(self) -> int:
        return int(self._call(lambda: len(self._links)))

    @property
    def url_host(self) -> str:
        return f"{self.listen_host}:{self.port}"

    def _call(self, func: Any) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(func())
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the fault proxy's loop does not answer")
        return box[0] if box else None

    # -- the loop ----------------------------------------------------------------------
    def _reset(self) -> int:
        count = len(self._links)
        for link in list(self._links):
            for writer in link.writers():
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.transport.abort()
            for task in link.tasks:
                task.cancel()
        return count

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: Any) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()
                if link.blackholed:
                    continue
                if self._rate is not None or self._delay:
                    step = 4096 if self._rate is not None else len(data)
                    for i in range(0, len(data), step):
                        chunk = data[i : i + step]
                        pause = self._delay + (len(chunk) / self._rate if self._rate else 0.0)
                        await asyncio.sleep(pause)
                        await self._open.wait()
                        if link.blackholed:
                            break
                        writer.write(chunk)
                        await writer.drain()
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._open.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            link.upstream = up_writer
            link.tasks = [
                asyncio.ensure_future(self._pump(link, reader, up_writer)),
                asyncio.ensure_future(self._pump(link, up_reader, writer)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            for w in link.writers():
                w.transport.abort()

    async def _serve(self, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        self._open.set()
        handlers: set[asyncio.Task[Any]] = set()

        async def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._handle(reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(track, self.listen_host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        await self._stop.wait()
        server.close()
        self._open.set()
        self._reset()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    def start(self) -> FaultProxy:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve(started))
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._thread is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
