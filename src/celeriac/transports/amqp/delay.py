"""The delay cascade: delayed messages wait on the server, in a binary cascade of TTL
queues ("delay exchange" technique, 32 levels; a level is declared when a delay first
needs it). The names, the routing keys and the declarations are here; the design and
why it beat the alternatives: docs/internals/amqp.md, "Delays"."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.transports.amqp.connection import Channel

#: delay levels: level k holds a message 2**k ms, so delays up to 2**LEVELS - 1 ms
LEVELS = 32
DELAY_OUT = "celeriac.delay.out"


def delay_queue(queue: str, level: int) -> str:
    """The name of ``queue``'s delay queue for ``level`` (a TTL of 2**level ms)."""
    return f"celeriac.delay.{queue}.{level:02d}"


def delay_exchange(level: int) -> str:
    """The topic exchange of ``level``; level -1 is the exit, bound to target queues."""
    return f"celeriac.delay.{level:02d}" if level >= 0 else DELAY_OUT


def _token(queue: str) -> str:
    return hashlib.blake2b(queue.encode(), digest_size=8).hexdigest()


def _words(level: int, bit: str) -> list[str]:
    """Binding words up to and including ``level``'s position (most significant first)."""
    return ["*"] * (LEVELS - 1 - level) + [bit]


def delay_key(ms: int, queue: str) -> str:
    """The routing key of a delay of ``ms``: its bits, most significant first, and a
    token of the target queue (a hash: queue names may hold dots and wildcards)."""
    return ".".join([*format(min(ms, 2**LEVELS - 1), f"0{LEVELS}b"), _token(queue)])


async def declare_cascade(ch: Channel) -> None:
    """The shared level exchanges; each skips a message whose bit is 0 to the next."""
    for level in range(-1, LEVELS):
        await ch.exchange_declare(
            delay_exchange(level), exchange_type="topic", durable=True, nowait=True
        )
    for level in range(LEVELS):
        await ch.exchange_bind(
            destination=delay_exchange(level - 1),
            source=delay_exchange(level),
            routing_key=".".join([*_words(level, "0"), "#"]),
            nowait=True,
        )


async def declare_levels(ch: Channel, queue: str, levels: Sequence[int]) -> None:
    """``queue``'s delay queues for ``levels`` (each takes the messages whose bit is 1 and
    dead-letters them to the next level when their TTL ends) and ``queue``'s binding to
    the exit. The last call waits for an answer: an error before it closed the channel."""
    token = _token(queue)
    for level in levels:
        args: dict[str, Any] = {
            "x-message-ttl": 1 << level,
            "x-dead-letter-exchange": delay_exchange(level - 1),
        }
        name = delay_queue(queue, level)
        await ch.queue_declare(name, durable=True, arguments=args, nowait=True)
        key = ".".join([*_words(level, "1"), *["*"] * level, token])
        await ch.queue_bind(name, delay_exchange(level), routing_key=key, nowait=True)
    await ch.queue_bind(queue, DELAY_OUT, routing_key=".".join([*["*"] * LEVELS, token]))


__all__ = [
    "DELAY_OUT",
    "LEVELS",
    "declare_cascade",
    "declare_levels",
    "delay_exchange",
    "delay_key",
    "delay_queue",
]
