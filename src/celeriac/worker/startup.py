"""Connecting to the broker, as Celery's worker: at start-up as
``broker_connection_retry_on_startup`` says (None: as ``broker_connection_retry``), after
a lost connection as ``broker_connection_retry`` says; either way at most
``broker_connection_max_retries`` retries (0 or None: no bound). A worker that gives up
after a lost connection stops (exit code 1; a prefork child tells its supervisor by
exiting with :data:`EXIT_BROKER_LOST`)."""

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

#: exit code of a prefork child that gave up reconnecting: its supervisor stops the worker
EXIT_BROKER_LOST = 76


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
            if isinstance(exc, BrokerError) and exc.refused:
                raise BrokerError(
                    f"cannot connect to broker {where}: {exc} (not retried: the broker "
                    "refused the connection; check the user, password and virtual host or "
                    "database in the URL)"
                ) from exc
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


def give_up(conf: Settings, url: str, failures: int, exc: BaseException) -> BrokerError | None:
    """After ``failures`` failed attempts to use a lost connection: the error to stop
    the worker with, or None to keep retrying."""
    where = mask_url(url)
    if not conf["broker_connection_retry"]:
        return BrokerError(
            f"lost the connection to broker {where}: {exc} (not reconnecting: "
            "broker_connection_retry is False)"
        )
    limit = conf["broker_connection_max_retries"] or None
    if limit is not None and failures > limit:
        return BrokerError(
            f"lost the connection to broker {where}: {exc} (gave up after {limit} "
            f"retries: broker_connection_max_retries={limit})"
        )
    return None


__all__ = ["EXIT_BROKER_LOST", "connect_at_startup", "give_up", "startup_policy"]
