"""``task_publish_retry`` and ``task_publish_retry_policy``: a publish that meets a
broken broker connection is tried again, as Celery's producer does.

The policy is Celery's: ``max_retries`` (3; None: no bound), a first wait of
``interval_start`` (0 s) that grows by ``interval_step`` (0.2 s) up to ``interval_max``
(1 s). Each retry is logged; when they are used up the last error is raised. A publish
option ``retry=False`` or ``retry_policy={...}`` overrides the settings for one send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.exceptions import BrokerError
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.app")

T = TypeVar("T")

#: Celery's default ``task_publish_retry_policy``
DEFAULT_POLICY: dict[str, Any] = {
    "max_retries": 3,
    "interval_start": 0.0,
    "interval_step": 0.2,
    "interval_max": 1.0,
}
#: what a broken connection raises
ERRORS = (OSError, BrokerError)


def policy(app: Celeriac, options: dict[str, Any]) -> dict[str, Any] | None:
    """The retry policy of one publish (None: no retry), from its ``retry`` and
    ``retry_policy`` options or the settings."""
    retry = options.get("retry")
    if retry is None:
        retry = app.conf["task_publish_retry"]
    if not retry:
        return None
    given = options.get("retry_policy") or {}
    return {**DEFAULT_POLICY, **(app.conf["task_publish_retry_policy"] or {}), **given}


def _waits(chosen: dict[str, Any]) -> Iterator[float]:
    """The waits before each retry: ``max_retries`` of them (endless for None)."""
    limit = chosen.get("max_retries")
    wait = float(chosen.get("interval_start") or 0.0)
    step = float(chosen.get("interval_step") or 0.0)
    most = float(chosen.get("interval_max") or 0.0)
    count = 0
    while limit is None or count < int(limit):
        yield min(wait, most) if most else wait
        wait += step
        count += 1


def _errors(chosen: dict[str, Any]) -> tuple[type[BaseException], ...]:
    extra = chosen.get("retry_errors")
    return ERRORS + tuple(extra) if extra else ERRORS


def _log(app: Celeriac, exc: BaseException, wait: float, attempt: int) -> None:
    logger.warning(
        "Cannot publish to broker %s: %s; retry %d in %.2fs (if the broker stored the"
        " message before the connection failed, the retry stores it again: at-least-once)",
        mask_url(app.broker_url),
        exc,
        attempt,
        wait,
    )


def retry_sync(
    app: Celeriac, options: dict[str, Any], exc: BaseException, publish: Callable[[], T]
) -> T:
    """A publish failed with ``exc``: run ``publish`` again as the policy says, or raise
    ``exc`` (no retry, or not an error that is retried)."""
    chosen = policy(app, options)
    if chosen is None or not isinstance(exc, _errors(chosen)):
        raise exc
    for attempt, wait in enumerate(_waits(chosen), 1):
        _log(app, exc, wait, attempt)
        time.sleep(wait)
        try:
            return publish()
        except _errors(chosen) as again:
            exc = again
    raise exc


async def retry_async(
    app: Celeriac,
    options: dict[str, Any],
    exc: BaseException,
    publish: Callable[[], Awaitable[T]],
) -> T:
    """:func:`retry_sync` for asyncio code."""
    chosen = policy(app, options)
    if chosen is None or not isinstance(exc, _errors(chosen)):
        raise exc
    for attempt, wait in enumerate(_waits(chosen), 1):
        _log(app, exc, wait, attempt)
        await asyncio.sleep(wait)
        try:
            return await publish()
        except _errors(chosen) as again:
            exc = again
    raise exc


def publish_sync(
    app: Celeriac, options: dict[str, Any], publish: Callable[..., T], *args: Any
) -> T:
    """Run ``publish(*args)``; when the broker connection breaks, retry by the policy."""
    try:
        return publish(*args)
    except ERRORS as exc:
        return retry_sync(app, options, exc, partial(publish, *args))


async def publish_async(
    app: Celeriac, options: dict[str, Any], publish: Callable[[], Awaitable[T]]
) -> T:
    """:func:`publish_sync` for asyncio code."""
    try:
        return await publish()
    except ERRORS as exc:
        return await retry_async(app, options, exc, publish)


__all__ = ["DEFAULT_POLICY", "policy", "publish_async", "publish_sync", "retry_async", "retry_sync"]
