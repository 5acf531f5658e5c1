"""Connecting to the broker at start-up: ``broker_connection_retry_on_startup`` (None:
as ``broker_connection_retry``) and ``broker_connection_max_retries`` (0 or None: no
bound), as Celery's worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from celeriac.exceptions import BrokerError
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac._config import Settings

logger = logging.getLogger("celeriac.worker")

T = TypeVar("T")


def startup_policy(conf: Settings) -> tuple[bool, int | None]:
    """(retry at start-up, at most this many retries or None for no bound)."""
    retry = conf["broker_connection_retry_on_startup"]
    if retry is None:
        retry = conf["broker_connection_retry"]
    return bool(retry), conf["broker_connection_max_retries"] or None


async def connect_at_startup(
    conf: Settings,
    url: str,
    connect: Callable[[], Awaitable[T]],
    delays: Sequence[float],
    stopping: Callable[[], bool] = lambda: False,
) -> T:
    """``await connect()``, retried after a connection error as the settings say; a
    :class:`BrokerError` that names the setting when they say stop."""
    retry, limit = startup_policy(conf)
    attempt = 0
    while True:
        try:
            return await connect()
        except (OSError, BrokerError) as exc:
            where = mask_url(url)
            if stopping():
                raise
            if not retry:
                raise BrokerError(
                    f"cannot connect to broker {where}: {exc} (not retried: "
                    "broker_connection_retry_on_startup is False)"
                ) from exc
            if limit is not None and attempt >= limit:
                raise BrokerError(
                    f"cannot connect to broker {where}: {exc} (gave up after {attempt} "
                    f"retries: broker_connection_max_retries={limit})"
                ) from exc
            delay = delays[min(attempt, len(delays) - 1)]
            attempt += 1
            bound = f"{attempt}/{limit}" if limit is not None else f"{attempt}"
            logger.warning(
                "Cannot connect to broker %s: %s; retry %s in %.1fs", where, exc, bound, delay
            )
            await asyncio.sleep(delay)


__all__ = ["connect_at_startup", "startup_policy"]
