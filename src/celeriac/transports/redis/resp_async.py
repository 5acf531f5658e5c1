"""celeriac's Redis client, asyncio driver: the broker's, the backend's and pub/sub's
connections (the codec and the errors are :mod:`.resp`'s).

A connection is an :class:`asyncio.Protocol`: a call packs its commands (one or a
pipeline) into one ``transport.write`` and awaits one future per reply, which
``data_received`` resolves in order as ``hiredis.Reader`` parses them. Several
coroutines may share it; a blocking command (BLPOP, BRPOP) gets a connection of its own.
A connection made with ``push=`` speaks RESP3 and hands every push (pub/sub messages,
(un)subscribe confirmations) to that callback; hiredis before 3.2 does not tell a push
from an array reply, so such a connection is for pub/sub with commands whose replies
are not arrays (GET, PING).

The connection is made on first use (AUTH or HELLO, and SELECT, pipelined with nothing
behind them) and again after it is lost: ``connection_lost`` fails the pending calls
with :class:`~.resp.RespConnectionError` (and calls ``on_lost``), and the next call
reconnects, so a server restart costs the calls in flight and never a stale connection
later. For a ``sentinel://`` URL each connection first asks the sentinels, in order,
``SENTINEL get-master-addr-by-name``, so a reconnection after a failover finds the new
master. A call that gets no reply within the socket timeout (plus the block time it
asked for) fails with :class:`~.resp.RespTimeoutError` and drops the connection: the
replies it still owes would belong to the wrong callers.

Every connection has a deadline (the endpoint's ``health_check``, the
``health_check_interval`` option, 5 s by default): one silent that long while idle is
sent a PING, and one that owes replies (to that PING or to any call but a blocking one)
and has received nothing for that long is dropped as dead, so a connection lost without
a FIN or RST (a NAT's idle timeout, a frozen network) is found within twice the
interval, pub/sub subscribers included. TCP keepalive with short timers, and a TCP user
timeout, are the second line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from celeriac.transports.keepalive import tune_keepalive
from celeriac.transports.redis.resp import (
    NEED_DATA,
    PUSH,
    Arg,
    Endpoint,
    ReplyError,
    RespConnectionError,
    RespError,
    RespRefusedError,
    RespTimeoutError,
    Sentinels,
    encode_commands,
    make_reader,
)

Push = Callable[[list[Any]], None]
#: error replies to AUTH/HELLO/SELECT that a later connection may not get (the others,
#: WRONGPASS, NOAUTH, NOPERM, a database out of range, are a refusal)
_TRANSIENT = frozenset({"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"})


class _Protocol(asyncio.Protocol):
    def __init__(
        self, push: Push | None = None, on_lost: Callable[[BaseException], None] | None = None
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: Any = make_reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost: BaseException | None = None
        self.push = push
        self.on_lost = on_lost
        self.follow_master = False  # a sentinel's master: READONLY means it was demoted
        #: the health check (see the module docstring): the interval (None: none), when
        #: data last came, when a request was last sent to an idle connection, how many
        #: blocking calls are in flight, and the timer of the next check
        self.interval: float | None = None
        self.last_read = self.asked_at = time.monotonic()
        self.blocking = 0
        self.blocking_until = 0.0
        self.probe: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def watch(self, interval: float | None) -> None:
        """Start the health check (``interval`` None: none)."""
        self.interval = interval
        if interval is not None and self.lost is None:
            self.last_read = time.monotonic()
            self._schedule(interval)

    def _schedule(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self.probe = loop.call_later(max(delay, 0.01), self._check)

    def _check(self) -> None:
        """Drop the connection if it owes replies and is silent past the deadline; PING
        it if it is idle and silent that long; then plan the next check."""
        interval, self.probe = self.interval, None
        if interval is None or self.lost is not None or self.transport is None:
            return
        now = time.monotonic()
        if self.blocking or now < self.blocking_until:  # its own timeout covers it
            self._schedule(interval)
            return
        if self.waiting:
            since = max(self.last_read, self.asked_at)
            if now - since >= interval:
                self.fail(RespTimeoutError(f"no reply from the server for {now - since:.1f} s"))
                return
            self._schedule(since + interval - now)
            return
        if now - self.last_read >= interval:
            self.asked_at = now
            self.transport.write(encode_commands([("PING",)]))
            self.waiting.append(asyncio.get_running_loop().create_future())
            self._schedule(interval)
            return
        self._schedule(self.last_read + interval - now)

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        reader, waiting, push = self.reader, self.waiting, self.push
        reader.feed(data)
        while (reply := reader.gets()) is not NEED_DATA:
            if push is not None and isinstance(reply, PUSH):
                push(reply)
                continue
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(RespConnectionError("Protocol error: an unexpected reply"))
                return
            future = waiting.popleft()
            if not future.done():
                future.set_result(reply)
            if self.follow_master and isinstance(reply, ReplyError) and reply.code == "READONLY":
                self.fail(RespConnectionError(f"The master is now a replica: {reply}"))
                return

    def eof_received(self) -> bool | None:
        self.fail(RespConnectionError("Connection closed by server."))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        text = f"Connection lost: {exc}" if exc else "Connection closed by server."
        self.fail(RespConnectionError(text))

    def fail(self, exc: BaseException) -> None:
        first = self.lost is None
        if first:
            self.lost = exc
        if self.probe is not None:
            self.probe.cancel()
            self.probe = None
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
                future.exception()  # its caller may be gone: nothing to log then
        if self.transport is not None:
            self.transport.abort()
        if first and self.on_lost is not None:
            self.on_lost(exc)


class AsyncConnection:
    """One pipelining asyncio connection to ``target``; see the module docstring."""

    def __init__(
        self,
        target: Endpoint | Sentinels,
        *,
        push: Push | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.target = target
        self.endpoint = target if isinstance(target, Endpoint) else target.master
        self._push = push
        self._on_lost = on_lost
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.lost is None

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
        target = self.target
        ep = target if isinstance(target, Endpoint) else await resolve_master(target)
        self.endpoint = ep
        loop = asyncio.get_running_loop()

        def factory() -> _Protocol:
            return _Protocol(self._push, self._on_lost)

        try:
            if ep.path:
                connecting = loop.create_unix_connection(factory, ep.path)
            else:
                tls = ep.ssl_context() if ep.tls else None
                host = ep.host if tls else None
                connecting = loop.create_connection(
                    factory, ep.host, ep.port, ssl=tls, server_hostname=host
                )
            transport, proto = await asyncio.wait_for(connecting, ep.connect_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise RespTimeoutError(f"Timeout connecting to {ep.where}") from None
        except OSError as exc:
            where = ep.where
            raise RespConnectionError(f"Error {exc.errno} connecting to {where}. {exc}") from None
        if not ep.path:
            _tune(transport, ep.keepalive, ep.health_check)
        proto.follow_master = not isinstance(target, Endpoint)
        proto.watch(ep.health_check)
        hello: list[tuple[Arg, ...]] = []
        if self._push is not None:
            auth = () if ep.password is None else ("AUTH", ep.username or "default", ep.password)
            hello.append(("HELLO", 3, *auth))
        elif ep.password is not None:
            hello.append(("AUTH", *([ep.username] if ep.username else []), ep.password))
        if ep.db:
            hello.append(("SELECT", ep.db))
        self._protocol = proto
        if hello:
            for reply in await self._call(proto, hello, 0.0):
                if isinstance(reply, ReplyError):
                    text = f"Redis refused the connection: {reply}"
                    proto.fail(RespConnectionError(text))
                    if reply.code in _TRANSIENT:  # the server is starting or busy
                        raise RespConnectionError(text)
                    raise RespRefusedError(text)
        return proto

    async def pipeline(
        self, commands: Sequence[Sequence[Arg]], block: float = 0.0, replies: int | None = None
    ) -> list[Any]:
        """Send ``commands`` in one write; their replies, error replies as
        :class:`ReplyError` values. ``block``: how long a blocking command among them
        may wait, on top of the socket timeout. ``replies``: how many replies to wait
        for, when some commands answer by a push only (SUBSCRIBE on RESP3)."""
        return await self._call(await self._ready(), commands, block, replies)

    async def execute(self, *args: Arg) -> Any:
        """One command's reply; an error reply is raised."""
        (reply,) = await self._call(await self._ready(), [args], 0.0)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def ready(self) -> object:
        """Connect if needed; a handle on this connection for :meth:`call`."""
        return await self._ready()

    async def call(
        self, handle: object, commands: Sequence[Sequence[Arg]], replies: int | None = None
    ) -> list[Any]:
        """:meth:`pipeline` on the connection :meth:`ready` returned (its commands are
        written when the call starts; if that connection is gone meanwhile, fail with
        :class:`~.resp.RespConnectionError` rather than send on the next one)."""
        assert isinstance(handle, _Protocol)
        return await self._call(handle, commands, 0.0, replies)

    async def _call(
        self,
        proto: _Protocol,
        commands: Sequence[Sequence[Arg]],
        block: float,
        replies: int | None = None,
    ) -> list[Any]:
        if proto.lost is not None:
            raise RespConnectionError(str(proto.lost))
        loop = asyncio.get_running_loop()
        assert proto.transport is not None
        if not proto.waiting:
            proto.asked_at = time.monotonic()
        proto.transport.write(encode_commands(commands))
        if replies == 0:
            return []
        count = len(commands) if replies is None else replies
        futures = [loop.create_future() for _ in range(count)]
        proto.waiting.extend(futures)
        timeout = self.endpoint.socket_timeout
        timer = None
        if timeout is not None:
            expired = RespTimeoutError("Timeout reading from the server")
            timer = loop.call_later(timeout + block, proto.fail, expired)
        if block:
            proto.blocking += 1
        try:
            # replies come in order and a lost connection fails them all: the last one
            # done means every one is (a cancelled caller leaves the rest to be resolved
            # unread, so the stream stays in step)
            with contextlib.suppress(RespError):
                await futures[-1]
            return [future.result() for future in futures]
        finally:
            if block:
                proto.blocking -= 1
                if not futures[-1].done():  # a cancelled caller: the reply may still wait
                    until = time.monotonic() + block
                    proto.blocking_until = max(proto.blocking_until, until)
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        """Close the connection (calls in flight fail; ``on_lost`` is not called); the
        next call connects again."""
        proto, self._protocol = self._protocol, None
        if proto is not None:
            proto.on_lost = None
            proto.fail(RespConnectionError("Connection closed"))
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()


def _tune(transport: asyncio.BaseTransport, keepalive: bool, interval: float | None) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and keepalive:  # asyncio already sets TCP_NODELAY
        tune_keepalive(sock, interval)


async def resolve_master(sentinels: Sentinels) -> Endpoint:
    """The master's endpoint, as the first sentinel that knows it says."""
    problems = []
    for host, port in sentinels.addresses:
        conn = AsyncConnection(sentinels.at(host, port, master=False))
        try:
            name = sentinels.master_name
            reply = await conn.execute("SENTINEL", "get-master-addr-by-name", name)
        except RespError as exc:
            problems.append(f"{host}:{port}: {exc}")
            continue
        finally:
            conn.close()
        if isinstance(reply, list) and len(reply) == 2:
            return sentinels.at(reply[0].decode(), int(reply[1]))
        problems.append(f"{host}:{port}: no master named {sentinels.master_name!r}")
    raise RespConnectionError(f"No master found for {sentinels.where}: {'; '.join(problems)}")


async def run_script(conn: AsyncConnection, text: str, sha: str, *args: Arg) -> Any:
    """EVALSHA, or EVAL when the server no longer has the script (after a restart)."""
    (reply,) = await conn.pipeline([("EVALSHA", sha, 0, *args)])
    if isinstance(reply, ReplyError) and reply.code == "NOSCRIPT":
        (reply,) = await conn.pipeline([("EVAL", text, 0, *args)])
    if isinstance(reply, ReplyError):
        raise reply
    return reply


__all__ = ["AsyncConnection", "resolve_master", "run_script"]
