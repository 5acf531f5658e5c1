"""Wake-ups for an idle Redis consumer: every key it watches gets a connection of its own
blocked in ``BLMOVE key key RIGHT RIGHT``, which returns as soon as the list holds an
element and leaves it where it was (the tail element moves to the tail of the same list
in one atomic command). So a message LPUSHed by *any* producer (a Celery client, ``celery
beat``, celery-node, celery-ts, celeriac) wakes the consumer within one round trip,
without polling, and the wait never takes a message out of its queue: only the fetch
script does that, and it records the lease in the same atomic step. A consumer killed
between the wake-up and the fetch leaves the queue exactly as it was; nothing is ever in
flight outside Redis's own lists and lease records.

The watched keys are a queue's four priority lists (Celery's buckets) and its
``celeriac.notify`` list (celeriac producers leave a token there for delayed messages,
whose due time an idle consumer must learn). A wait stays armed across fetches; one that
returned while the consumer was busy is armed again by the next wait, which returns at
once if its list still holds an element (level-triggered: a push between a fetch and the
next wait is never missed, and a wake-up the last fetch already served costs no fetch).

Each blocking call is bounded (``BLOCK`` seconds on the server, ``SLACK`` more on the
client): a connection that gives no reply by then is silently dead, so it is closed and
made again, with one log line. A key whose wait fails (a server without BLMOVE, a key of
another type, a refused connection) is retried with a backoff up to ``polling_interval``
and, meanwhile, the consumer looks every ``polling_interval`` seconds instead.

Why not BLMPOP/BRPOP into the consumer, or BLMOVE into a per-consumer in-flight list:
see ``docs/internals/redis.md``, "Waking up".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from celeriac.transports.redis.resp import Endpoint, ReplyError, RespError, Sentinels
from celeriac.transports.redis.resp_async import AsyncConnection
from celeriac.transports.redis.scripts import connection
from celeriac.utils.log import mask_url

logger = logging.getLogger("celeriac.transports.redis.broker")

#: server-side timeout of one blocking wait (seconds); re-armed when it runs out
BLOCK = 5.0
#: how much longer the client waits for the reply before it calls the connection dead
SLACK = 3.0
_FIRST_RETRY = 0.1


class _Watch:
    """One key's connection, its pending wait and its failure state."""

    __slots__ = ("conn", "failures", "retry_at", "task")

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.task: asyncio.Task[bool] | None = None
        self.failures = 0
        self.retry_at = 0.0


class Wakeups:
    """The idle consumer's wake-up sources; see the module docstring."""

    def __init__(
        self,
        where: Endpoint | Sentinels,
        url: str,
        poll: float,
        *,
        block: float = BLOCK,
        slack: float = SLACK,
    ) -> None:
        self._where = where
        self._url = url
        self._poll = max(poll, _FIRST_RETRY)
        self._block = block
        self._slack = slack
        self._watches: dict[str, _Watch] = {}

    async def wait(self, keys: Sequence[str], timeout: float) -> bool:
        """Wait until one of ``keys`` holds an element, or ``timeout`` seconds; True when
        woken (or when a wait failed: the caller's fetch then looks, and reports a
        broken server). The caller has fetched since the last call, so the waits that
        returned meanwhile are stale: they are armed again, and a list that still holds
        an element wakes the caller at once (no redundant fetch for each of them)."""
        deadline = time.monotonic() + timeout
        self._forget_stale(keys)
        while True:
            now = time.monotonic()
            pending, retry = self._arm(keys, now, deadline)
            if not pending:  # every wait is failing: look again when one may work
                await asyncio.sleep(max(0.0, min(retry, deadline, now + self._poll) - now))
                return True
            left = min(deadline, retry) - now
            if left <= 0:
                return False
            done, _ = await asyncio.wait(pending, timeout=left, return_when="FIRST_COMPLETED")
            woke = False
            for key in keys:
                watch = self._watches[key]
                task = watch.task
                if task is not None and task in done:
                    watch.task = None
                    woke = task.result() or woke
            if woke:
                return True
            if not done and time.monotonic() >= deadline:
                return False
            # only timeouts ran out (re-armed by the next turn), or a failing key's
            # retry time came

    def _forget_stale(self, keys: Sequence[str]) -> None:
        if len(self._watches) > len(keys):  # the consumer left a queue: drop its waits
            self._drop(set(self._watches) - set(keys))
        for watch in self._watches.values():
            if watch.task is not None and watch.task.done():
                watch.task = None

    def _arm(
        self, keys: Sequence[str], now: float, deadline: float
    ) -> tuple[list[asyncio.Task[bool]], float]:
        """A pending wait on every key not backing off; when the next retry is due."""
        pending: list[asyncio.Task[bool]] = []
        retry = deadline
        for key in keys:
            watch = self._watches.get(key)
            if watch is None:
                watch = self._watches[key] = _Watch(connection(self._where))
            if watch.task is None:
                if watch.retry_at > now:
                    retry = min(retry, watch.retry_at)
                    continue
                watch.task = asyncio.ensure_future(self._peek(key, watch))
            pending.append(watch.task)
        return pending, retry

    async def _peek(self, key: str, watch: _Watch) -> bool:
        """One bounded wait on ``key``: True if it holds an element (or the wait
        failed), False if the server's timeout ran out first."""
        command = ("BLMOVE", key, key, "RIGHT", "RIGHT", self._block)
        try:
            (reply,) = await asyncio.wait_for(
                watch.conn.pipeline([command], block=self._block), self._block + self._slack
            )
            if isinstance(reply, ReplyError):
                raise reply
        except (TimeoutError, asyncio.TimeoutError):
            watch.conn.close()
            self._failed(key, watch, f"no reply within {self._block + self._slack:.1f} s")
            return True
        except (RespError, OSError) as exc:
            if not isinstance(exc, ReplyError):
                watch.conn.close()
            self._failed(key, watch, str(exc))
            return True
        if watch.failures:
            logger.info("Redis at %s: the blocking wait on %r works again", self._where_text, key)
            watch.failures = 0
        return reply is not None

    @property
    def _where_text(self) -> str:
        return mask_url(self._url)

    def _failed(self, key: str, watch: _Watch, why: str) -> None:
        if watch.failures == 0:
            logger.warning(
                "Redis at %s: the blocking wait on %r failed (%s); looking every %.1f s "
                "until it works again",
                self._where_text,
                key,
                why,
                self._poll,
            )
        watch.failures += 1
        delay = min(self._poll, _FIRST_RETRY * 2 ** (watch.failures - 1))
        watch.retry_at = time.monotonic() + delay

    def close(self) -> None:
        """Close every connection; the next wait connects again."""
        self._drop(set(self._watches))

    def _drop(self, keys: set[str]) -> None:
        for key in keys:
            watch = self._watches.pop(key)
            task, watch.task = watch.task, None
            if task is not None and not task.done():
                task.cancel()
            with contextlib.suppress(Exception):
                watch.conn.close()


__all__ = ["BLOCK", "SLACK", "Wakeups"]
