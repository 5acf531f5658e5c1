"""One broker outage, one pair of log lines: the consumer's fetching, settling, lease
extension and revocation look-ups all meet the same lost connection; the first to fail
says "lost" with its reason, the first to get through again says "restored" and after
how long, and the others say nothing in between. A result backend's outage (it may be
another server) is told apart: one line when the first write fails, one when the last
gets through."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from celeriac.exceptions import BackendError, BrokerError

logger = logging.getLogger("celeriac.worker")


#: the waits between attempts of a write (the last one repeats)
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


class Outage:
    """The broker connection's state as the consumer sees it."""

    def __init__(self) -> None:
        #: time.monotonic() of the first failure of this outage (None: no outage)
        self.since: float | None = None
        #: writes retrying after a result backend error
        self.failing_writes = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            logger.error("Broker connection lost: %s; reconnecting", exc)

    def restored(self) -> None:
        if self.since is not None:
            after = time.monotonic() - self.since
            self.since = None
            logger.warning("Broker connection restored after %.1f s", after)

    async def retrying(
        self, action: Callable[[], Awaitable[None]], cold: Callable[[], bool]
    ) -> None:
        """Run a broker/backend write until it gets through (raise at once if ``cold``)."""
        attempt = 0
        broker_down = backend_down = False
        try:
            while True:
                try:
                    await action()
                except (OSError, BrokerError, BackendError) as exc:
                    if cold():
                        raise
                    if not isinstance(exc, BackendError):
                        broker_down = True
                        self.failed(exc)
                    elif not backend_down:
                        backend_down = True
                        if self.failing_writes == 0:
                            logger.error("Cannot settle tasks: %s; retrying", exc)
                        self.failing_writes += 1
                    await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                    attempt += 1
                else:
                    if broker_down:
                        self.restored()
                    return
        finally:
            if backend_down:
                self.failing_writes -= 1
                if self.failing_writes == 0:
                    logger.info("Settling tasks again")


__all__ = ["RETRY_DELAYS", "Outage"]
