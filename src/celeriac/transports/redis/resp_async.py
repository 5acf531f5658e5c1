"""An asyncio Redis connection for the worker's hot path (fetch, ack, store).

redis-py's asyncio client costs a few hundred microseconds of Python per command here
(connection pool, retry and observability layers around a StreamReader); the worker
settles a batch of tasks in two commands, so that cost is most of a no-op task's. This
connection is an :class:`asyncio.Protocol`: a call packs its commands (one or a
pipeline) into one ``transport.write`` and awaits one future per reply, which
``data_received`` resolves in order as the reader (hiredis when installed, see
:mod:`.resp`) parses them. Several coroutines may share it; a blocking command
(BLPOP) gets a connection of its own.

The connection is made on first use (AUTH and SELECT pipelined with nothing behind
them) and again after it is lost: ``connection_lost`` fails the pending calls with
:class:`~.resp.RespConnectionError` and the next call reconnects, so a server
restart costs the calls in flight and never a stale connection later. A call that gets
no reply within the socket timeout (plus the block time it asked for) fails with
:class:`~celeriac.transports.redis.resp.RespTimeoutError` and drops the connection: the replies it
still owes would belong to the wrong callers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from celeriac.transports.redis.resp import (
    NEED_DATA,
    Arg,
    Endpoint,
    ReplyError,
    RespConnectionError,
    RespError,
    RespTimeoutError,
    encode_command,
    make_reader,
)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: Any = make_reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        while (reply := reader.gets()) is not NEED_DATA:
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(RespConnectionError("Protocol error: an unexpected reply"))
                return
            future = waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def eof_received(self) -> bool | None:
        self.fail(RespConnectionError("Connection closed by server."))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        text = f"Connection lost: {exc}" if exc else "Connection closed by server."
        self.fail(RespConnectionError(text))

    def fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
                future.exception()  # its caller may be gone: nothing to log then
        if self.transport is not None:
            self.transport.abort()


class AsyncConnection:
    """One pipelining asyncio connection to ``endpoint``; see the module docstring."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _ready(self) -> _Protocol:
        proto = self._protocol
        if proto is not None and proto.lost is None:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        ep = self.endpoint
        loop = asyncio.get_running_loop()
        try:
            if ep.path:
                connecting = loop.create_unix_connection(_Protocol, ep.path)
            else:
                tls = ep.ssl_context() if ep.tls else None
                host = ep.host if tls else None
                connecting = loop.create_connection(
                    _Protocol, ep.host, ep.port, ssl=tls, server_hostname=host
                )
            _, proto = await asyncio.wait_for(connecting, ep.connect_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise RespTimeoutError(f"Timeout connecting to {ep.where}") from None
        except OSError as exc:
            where = ep.where
            raise RespConnectionError(f"Error {exc.errno} connecting to {where}. {exc}") from None
        hello: list[tuple[Arg, ...]] = []
        if ep.password is not None:
            hello.append(("AUTH", *([ep.username] if ep.username else []), ep.password))
        if ep.db:
            hello.append(("SELECT", ep.db))
        self._protocol = proto
        if hello:
            for reply in await self._call(proto, hello, 0.0):
                if isinstance(reply, ReplyError):
                    proto.fail(RespConnectionError(f"Redis refused the connection: {reply}"))
                    raise RespConnectionError(f"Redis refused the connection: {reply}")
        return proto

    async def pipeline(self, commands: Sequence[Sequence[Arg]], block: float = 0.0) -> list[Any]:
        """Send ``commands`` in one write; their replies, error replies as
        :class:`ReplyError` values. ``block``: how long a blocking command among them
        may wait, on top of the socket timeout."""
        return await self._call(await self._ready(), commands, block)

    async def execute(self, *args: Arg) -> Any:
        """One command's reply; an error reply is raised."""
        (reply,) = await self._call(await self._ready(), [args], 0.0)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def _call(
        self, proto: _Protocol, commands: Sequence[Sequence[Arg]], block: float
    ) -> list[Any]:
        if proto.lost is not None:
            raise RespConnectionError(str(proto.lost))
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        assert proto.transport is not None
        proto.transport.write(b"".join(encode_command(*c) for c in commands))
        proto.waiting.extend(futures)
        timeout = self.endpoint.socket_timeout
        timer = None
        if timeout is not None:
            expired = RespTimeoutError("Timeout reading from the server")
            timer = loop.call_later(timeout + block, proto.fail, expired)
        try:
            # replies come in order and a lost connection fails them all: the last one
            # done means every one is (a cancelled caller leaves the rest to be resolved
            # unread, so the stream stays in step)
            with contextlib.suppress(RespError):
                await futures[-1]
            return [future.result() for future in futures]
        finally:
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        proto, self._protocol = self._protocol, None
        if proto is not None:
            proto.fail(RespConnectionError("Connection closed"))
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()


def error_text(exc: RespError) -> str:
    """``<redis-py type name>: <message>``, as redis-py's errors read in our messages."""
    return f"{exc.kind}: {exc}"


async def run_script(conn: AsyncConnection, text: str, sha: str, *args: Arg) -> Any:
    """EVALSHA, or EVAL when the server no longer has the script (after a restart)."""
    (reply,) = await conn.pipeline([("EVALSHA", sha, 0, *args)])
    if isinstance(reply, ReplyError) and reply.code == "NOSCRIPT":
        (reply,) = await conn.pipeline([("EVAL", text, 0, *args)])
    if isinstance(reply, ReplyError):
        raise reply
    return reply


__all__ = ["AsyncConnection", "error_text", "run_script"]
