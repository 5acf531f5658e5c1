"""The broker and result-backend conformance suite, written once for every transport.

Subclass :class:`BrokerConformance` or :class:`BackendConformance` in a test module and
provide a ``broker_factory`` / ``backend_factory`` fixture: a callable that returns a new,
not yet connected instance each time it is called. All instances made by one factory
share one namespace (URL, database file, key prefix) that no other test uses; a test
that needs two consumers calls the factory twice::

    class TestMyBroker(BrokerConformance):
        @pytest.fixture
        def broker_factory(self) -> BrokerFactory:
            return url_factory(MyBroker, f"my://localhost/{uuid.uuid4().hex}")

The tests are plain synchronous pytest tests that run coroutines with ``asyncio.run``
(no pytest plugin needed). Waits are bounded fetches or waits with a timeout, never
sleeps (only the result-expiry test polls: expiry is time passing, not an event).
Set ``supports_recover = False`` and ``supports_lease_expiry = False`` for a broker with
native unacked tracking (no leases to recover or expire), and ``supports_publish_raw =
False`` for one without a ``publish_raw(queue, raw)`` helper.
"""

from __future__ import annotations

from celeriac.testing._backend_suite import BackendConformance
from celeriac.testing._broker_suite import BrokerConformance
from celeriac.testing._support import (
    QUEUE,
    BackendFactory,
    BrokerFactory,
    Factory,
    message,
    number,
    opened,
    run,
    run_in_threads,
    url_factory,
)

__all__ = [
    "QUEUE",
    "BackendConformance",
    "BackendFactory",
    "BrokerConformance",
    "BrokerFactory",
    "Factory",
    "message",
    "number",
    "opened",
    "run",
    "run_in_threads",
    "url_factory",
]
