"""``rpc://`` result backend: results travel as AMQP messages to the caller's reply queue,
as with Celery's ``rpc://`` backend (the default when the broker is RabbitMQ), and on the
same wire: a Celery client reads our workers' replies and the other way round.

The caller declares its reply queue (named after its app's ``reply_to``) when it connects
and consumes it from the first ``wait``/``get`` on; results are kept in memory by task id
(the newest ``max_results``) and reach only the process that sent the task. Workers
publish replies with confirms (``confirm_publish``), a batch written by the fast lane in
one socket write. Options (``result_backend_transport_options``): ``heartbeat`` (off by
default), ``reply_queue_expires``, ``max_results``, ``confirm_publish``,
``connect_timeout``. The wire and the design: docs/internals/amqp.md, "rpc:// results".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from celeriac import states
from celeriac.exceptions import BackendError, CeleriacError, MessageError
from celeriac.protocol import deserialize, serialize
from celeriac.transports.amqp.codec import encode_properties, publish_frames
from celeriac.transports.amqp.connection import (
    AMQPError,
    Channel,
    Connection,
    DeliveredMessage,
    connection,
    connection_url,
    has_host,
    quiet_aiormq,
)
from celeriac.transports.amqp.wire import ConfirmTap
from celeriac.transports.backend import ResultBackend
from celeriac.utils.log import mask_url

logger = logging.getLogger("celeriac.transports.amqp.rpc")

READY = states.READY_STATES
_ERRORS = (AMQPError, RuntimeError, ConnectionError, OSError, TimeoutError)


class RPCBackend(ResultBackend):
    """Results by AMQP reply queue; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("rpc",)
    needs_reply_to: ClassVar[bool] = True

    def __init__(self, url: str = "rpc://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        opts = self.options
        server = "amqp" + url[3:] if has_host(url) else str(opts.get("broker_url") or "amqp://")
        self._url = connection_url(server, opts.get("heartbeat", 0))
        self.reply_to: str | None = opts.get("reply_to") or None
        self._expires_ms = int(float(opts.get("reply_queue_expires", 86400)) * 1000)
        self._max = int(opts.get("max_results", 100_000))
        self._confirm = bool(opts.get("confirm_publish", True))
        self._accept = frozenset(opts.get("accept_content") or ["json", "msgpack"])
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._conn: Connection | None = None
        self._ch: Channel | None = None
        self._confirms: ConfirmTap | None = None  # the fast lane's publishes of ``_ch``
        self._consuming = False
        self._waiters: set[asyncio.Future[None]] = set()
        self._lock = asyncio.Lock()
        quiet_aiormq()

    # -- connection -----------------------------------------------------------
    async def connect(self) -> None:
        async with self._errors():
            await self._channel()

    async def close(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _channel(self) -> Channel:
        ch = self._ch
        if ch is not None and not ch.is_closed:
            return ch
        async with self._lock:
            if self._ch is not None and not self._ch.is_closed:
                return self._ch
            await self.close()
            conn = connection(self._url)
            await asyncio.wait_for(conn.connect(), float(self.options.get("connect_timeout", 10)))
            ch = await conn.channel(publisher_confirms=self._confirm)
            self._conn, self._ch, self._consuming = conn, ch, False
            self._confirms = None
            if self._confirm:  # replies are published by the fast lane only
                self._confirms = ConfirmTap(conn.wire, ch)
                conn.wire.tap(ch, self._confirms)
            ch.closing.add_done_callback(lambda _: self._wake())
            if self.reply_to:
                await ch.queue_declare(
                    self.reply_to,
                    durable=True,
                    auto_delete=True,
                    arguments={"x-expires": self._expires_ms},
                )
            return ch

    async def _consume(self) -> Channel:
        """The channel, consuming the reply queue (from the first ``wait``/``get`` on)."""
        ch = await self._channel()
        if not self._consuming and self.reply_to:
            self._consuming = True
            await ch.basic_consume(self.reply_to, self._on_reply, no_ack=True)
        return ch

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except CeleriacError:
            raise
        except _ERRORS as exc:
            if self._ch is not None:
                self._ch = None  # reconnect on the next call
            raise BackendError(f"rpc result backend {mask_url(self._url)}: {exc!r}") from exc

    # -- receiving ------------------------------------------------------------
    async def _on_reply(self, message: DeliveredMessage) -> None:
        props = message.header.properties
        try:
            meta = deserialize(message.body, props.content_type or "application/json", self._accept)
        except MessageError as exc:
            logger.warning("Dropping a reply that cannot be read: %s", exc.reason)
            return
        task_id = meta.get("task_id") if isinstance(meta, dict) else None
        task_id = task_id or props.correlation_id
        if not isinstance(meta, dict) or not task_id:
            logger.warning("Dropping a reply that is not a result: %r", message.body[:200])
            return
        self._remember(str(task_id), meta)

    def _remember(self, task_id: str, meta: dict[str, Any]) -> None:
        known = self._results.get(task_id) or {}
        if known.get("status") in READY and meta.get("status") not in READY:
            return  # a late progress report never hides the final state
        self._results[task_id] = meta
        self._results.move_to_end(task_id)
        while len(self._results) > self._max:
            self._results.popitem(last=False)
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        async with self._errors():
            ch = await self._consume()
            if self.reply_to:  # one round trip: replies already sent arrive before its answer
                await ch.queue_declare(self.reply_to, passive=True)
                await asyncio.sleep(0)
        return self._results.get(task_id)

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if task_ids:
            await self.get(task_ids[0])
        return {t: self._results[t] for t in task_ids if t in self._results}

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            async with self._errors():
                await self._consume()
            ready = {
                t: meta
                for t in task_ids
                if (meta := self._results.get(t)) and meta.get("status") in states.READY_STATES
            }
            left = None if deadline is None else deadline - loop.time()
            if ready or (left is not None and left <= 0):
                return ready
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)

    async def forget(self, task_id: str) -> None:
        self._results.pop(task_id, None)

    # -- sending (workers) ----------------------------------------------------
    async def store_replies(self, items: Sequence[tuple[str | None, str, dict[str, Any]]]) -> None:
        """Publish the replies together and wait for their confirms together."""
        replies = [(r, t, m) for r, t, m in items if r]
        if len(replies) < len(items):
            logger.debug("%d result(s) had no reply_to; not sent", len(items) - len(replies))
        for attempt in (1, 2):  # a connection that died while idle: reconnect once
            try:
                async with self._errors():
                    await self._send(await self._channel(), replies)
                return
            except BackendError:
                if attempt == 2:
                    raise

    async def _send(self, ch: Channel, replies: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        conn, confirms = self._conn, self._confirms
        assert conn is not None
        if confirms is None:  # confirm_publish=False: as Celery, written and forgotten
            for reply_to, task_id, meta in replies:
                flags, props, body = _reply(task_id, meta)
                conn.wire.write(
                    publish_frames(ch.number, "", reply_to, flags, props, body, conn.wire.frame_max)
                )
            return
        sent = []
        for reply_to, task_id, meta in replies:
            flags, props, body = _reply(task_id, meta)
            sent.append(confirms.publish("", reply_to, (flags, props), body))
        for result in await asyncio.gather(*sent, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def store(self, task_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        """Without a task's ``reply_to``, a result can only go to this app's own queue."""
        if self.reply_to:
            self._remember(task_id, meta)
            await self.store_replies([(self.reply_to, task_id, meta)])


#: encoded reply properties up to the correlation id (the last one), by content type
_REPLY_PROPS: dict[tuple[str, str], tuple[int, bytes]] = {}


def _reply(task_id: str, meta: Any) -> tuple[int, bytes, bytes]:
    """The properties (flags, bytes) and body of a reply, as Celery's rpc backend sends:
    content type and encoding, empty headers, delivery mode 1, priority 0, correlation id
    = task id."""
    body, content_type, encoding = serialize(meta, "json")
    head = _REPLY_PROPS.get((content_type, encoding))
    if head is None:
        head = _REPLY_PROPS[content_type, encoding] = encode_properties(
            content_type=content_type,
            content_encoding=encoding,
            headers={},
            delivery_mode=1,
            priority=0,
        )
    flags, tail = encode_properties(correlation_id=task_id)
    return head[0] | flags, head[1] + tail, body


__all__ = ["RPCBackend"]
