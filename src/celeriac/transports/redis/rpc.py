"""``rpc://`` results over a Redis broker, on Celery's wire: a reply is a kombu JSON
envelope (the meta as its body, ``correlation_id`` = task id) LPUSHed to the list named
by the task's ``reply_to`` (``global_keyprefix`` first), which is what kombu's Redis
transport does with Celery's rpc reply (a publish to the default exchange, routing key =
the reply queue). So a Celery client using ``rpc://`` reads a celeriac worker's results
and a celeriac client reads a Celery worker's.

The client pops its list (``BRPOP`` then ``RPOP`` of the rest, in one round trip, on a
connection of its own); the worker sets the list to expire ``reply_queue_expires`` after
its last reply, so the list of a client that went away does not stay forever. The
connection uses the broker's URL and transport options; the shared part (waiting,
ordering, memory) is :mod:`celeriac.transports.replies`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from celeriac.exceptions import BackendError, MessageError
from celeriac.protocol import Message, decode_envelope, encode_envelope, serialize
from celeriac.transports.redis.resp import Endpoint, RespError, Sentinels
from celeriac.transports.redis.scripts import (
    connection,
    first_error,
    key_prefix,
    split_url,
    target,
    translated_errors,
)
from celeriac.transports.replies import Reply, ReplyBackend

logger = logging.getLogger("celeriac.transports.rpc")

_BATCH = 1000  # replies taken per RPOP


class RedisRPCBackend(ReplyBackend):
    """Replies in Redis lists; see the module docstring."""

    def __init__(self, url: str = "rpc://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        broker_url = str(self.options.get("broker_url") or "redis://localhost:6379/0")
        self._url, url_options = split_url(broker_url)
        where = {**url_options, **(self.options.get("broker_options") or {})}
        self.prefix = key_prefix(where)
        self._where: Endpoint | Sentinels = target(self._url, where)
        self._fast = connection(self._where)  # pushes and non-blocking pulls
        self._blocking = connection(self._where)  # BRPOP holds its connection

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return translated_errors("rpc result backend on Redis", self._url, BackendError)

    async def _close(self) -> None:
        self._fast.close()  # both reconnect if used again
        self._blocking.close()

    async def _push(self, replies: Sequence[Reply]) -> None:
        ttl_ms = max(1, int(self.reply_expires * 1000))
        commands: list[tuple[Any, ...]] = []
        for reply_to, task_id, meta in replies:
            key = self.prefix + reply_to
            raw = _envelope(reply_to, task_id, meta)
            commands += [("LPUSH", key, raw), ("PEXPIRE", key, ttl_ms)]
        for attempt in (1, 2):  # a connection that died while idle: once more on a new one
            try:
                with self._errors():
                    first_error(await self._fast.pipeline(commands))
                return
            except BackendError as exc:
                if attempt == 2 or not isinstance(exc.__cause__, (RespError, OSError)):
                    raise

    async def _pull(self, queue: str, block: float) -> list[dict[str, Any]]:
        key = self.prefix + queue
        raws: list[bytes] = []
        with self._errors():
            if block < 0.01:  # BRPOP's 0 would wait for ever
                (rest,) = first_error(await self._fast.pipeline([("RPOP", key, _BATCH)]))
            else:
                wait = ("BRPOP", key, round(block, 3))
                first, rest = first_error(
                    await self._blocking.pipeline([wait, ("RPOP", key, _BATCH)], block)
                )
                if first is not None:
                    raws.append(first[1])
        raws += rest or []
        metas = []
        for raw in raws:
            try:
                message = decode_envelope(raw)
            except MessageError as exc:
                logger.warning("Dropping a reply in %r that cannot be read: %s", queue, exc)
                continue
            meta = self._decode(
                message.body, message.content_type, message.properties.get("correlation_id")
            )
            if meta is not None:
                metas.append(meta)
        return metas


def _envelope(reply_to: str, task_id: str, meta: dict[str, Any]) -> bytes:
    """The kombu envelope of a Celery rpc reply: properties as kombu's Redis transport
    writes them for a publish to the default exchange."""
    body, content_type, encoding = serialize(meta, "json")
    properties = {
        "correlation_id": task_id,
        "delivery_mode": 1,
        "priority": 0,
        "delivery_info": {"exchange": "", "routing_key": reply_to},
    }
    return encode_envelope(Message({}, body, content_type, encoding, properties))


__all__ = ["RedisRPCBackend"]
