"""A minimal TCP proxy for the dead-connection tests (tests/integration/test_deadlines.py):
it forwards loopback connections to a server and can *freeze* (stop forwarding in both
directions without closing anything: what a NAT's idle timeout or a VM migration looks
like to both ends) and resume. Private to those tests; the fault-injection suite has a
fuller proxy of its own."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class FreezeProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>`` on a thread of its
    own; :meth:`freeze` and :meth:`resume` stop and restart the flow of every connection
    (new connections are accepted while frozen, and get nothing through either)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def freeze(self) -> None:
        self._call(self._event.clear)

    def resume(self) -> None:
        self._call(self._event.set)

    @property
    def _event(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _call(self, action: Any) -> None:
        done = threading.Event()

        def run() -> None:
            action()
            done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(5):
            raise RuntimeError("the freeze proxy's loop does not answer")

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flowing = self._event
        try:
            while True:
                await flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await flowing.wait()  # read before the freeze: held, as the network would
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self._event.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def __enter__(self) -> FreezeProxy:
        started = threading.Event()
        handlers: set[asyncio.Task[Any]] = set()

        async def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._handle(reader, writer)
            finally:
                handlers.discard(task)

        async def serve() -> None:
            self._flowing, self._stop = asyncio.Event(), asyncio.Event()
            self._flowing.set()
            server = await asyncio.start_server(track, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            await self._stop.wait()
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="freeze-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the freeze proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None and self._stop is not None:
            stop = self._stop
            self._loop.call_soon_threadsafe(stop.set)
            self._thread.join(10)
