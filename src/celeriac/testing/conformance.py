"""The broker and result-backend conformance suite, written once for every transport.

One mixin per part of the contract. :class:`BrokerConformance` tests the core broker
contract every broker has; each capability Protocol of
:mod:`celeriac.transports.capabilities` has its own mixin:

| Protocol | mixin |
|---|---|
| ``LeaseRecovery`` | :class:`LeaseRecoveryConformance` (recover, and leases that expire) |
| ``RevocationStore`` | :class:`RevocationConformance` |
| ``RevocationListing`` | :class:`RevocationListingConformance` |
| ``RateLimitStore`` | :class:`RateLimitConformance` (one global bucket for all instances) |
| ``Broadcast`` | :class:`BroadcastConformance` |
| ``RemoteControl`` | :class:`RemoteControlConformance` (includes the Broadcast one) |
| ``DeadLetterStore`` | :class:`DeadLetterConformance` |
| ``DeadLetterRemoval`` | :class:`DeadLetterRemovalConformance` |
| ``EventChannel`` | :class:`EventChannelConformance` |
| ``ScheduleStore`` | :class:`ScheduleStoreConformance` (beat's claims; on a result |
|  | backend: :class:`BackendScheduleStoreConformance`) |
| ``QueueBindings`` | :class:`QueueBindingsConformance` |

On the result-backend side :class:`BackendConformance` tests the core (store, get, wait,
forget) of backends that store results by task id, :class:`GroupConformance` saved
groups and :class:`ChordCounterConformance` chord counters (the optional methods that
default to ``NotImplementedError``), :class:`HistoryConformance` the listing of stored
results (``recent_results``, the dashboard's history), and :class:`ReplyConformance` a
backend that sends results to the caller's reply queue instead (``needs_reply_to``,
``rpc://``).

A transport's test module composes the core mixin with the mixins of what its classes
offer, and provides a ``broker_factory`` / ``backend_factory`` fixture: a callable that
returns a new, not yet connected instance each time it is called. All instances made by
one factory share one namespace (URL, database file, key prefix) that no other test
uses; a test that needs two instances (two consumers, a worker and a client) calls the
factory twice, and the capability tests rely on that: two instances of one factory share
token buckets, revocations and the remote-control channel. ``options`` go to the
instance (``visibility_timeout``; ``reply_to`` for :class:`ReplyConformance`). A
third-party transport does the same::

    from celeriac.testing.conformance import (
        BrokerConformance, BrokerFactory, DeadLetterConformance, RevocationConformance,
        url_factory,
    )

    class TestMyBroker(BrokerConformance, RevocationConformance, DeadLetterConformance):
        @pytest.fixture
        def broker_factory(self) -> BrokerFactory:
            return url_factory(MyBroker, f"my://localhost/{uuid.uuid4().hex}")

Composition is checked both ways: each capability mixin first asserts that the instance
implements its Protocol (``isinstance``), so claiming a capability without it fails;
and the core mixins' ``test_claimed_capabilities_match_*`` fails when the class
implements a capability (or backend part) whose mixin the test class leaves out, so
nothing a transport offers goes untested (:class:`ReplyConformance` runs that check too,
for a backend that stores nothing by id and so composes no :class:`BackendConformance`).
:data:`BROKER_MIXINS` and :data:`BACKEND_MIXINS` are the tables both checks read.

The tests are plain synchronous pytest tests that run coroutines with ``asyncio.run``
(no pytest plugin needed). Waits are bounded fetches or waits with a timeout, never
sleeps where an event can be awaited (expiry and token refills are time passing: those
tests poll, or sleep the wait the bucket asked for, bounded).

The garbage-bytes tests put raw bytes on a queue through a ``publish_raw(queue, raw)``
method (sync or async) of the broker. It is a test helper, not part of the contract
(producers never publish unencoded bytes), so it is neither a capability Protocol nor a
flag: a broker without it skips those tests, saying why.
"""

from __future__ import annotations

from celeriac.testing._backend_suite import BackendConformance, ReplyConformance
from celeriac.testing._broker_suite import BrokerConformance, publish_raw
from celeriac.testing._canvas_suite import (
    BACKEND_PARTS,
    ChordCounterConformance,
    GroupConformance,
    backend_offers,
)
from celeriac.testing._capability_suites import (
    BroadcastConformance,
    DeadLetterConformance,
    DeadLetterRemovalConformance,
    LeaseRecoveryConformance,
    QueueBindingsConformance,
    RateLimitConformance,
    RemoteControlConformance,
    RevocationConformance,
    RevocationListingConformance,
)
from celeriac.testing._events_suite import EventChannelConformance
from celeriac.testing._history_suite import HistoryConformance
from celeriac.testing._kv_suite import KeyValueConformance
from celeriac.testing._registry import BACKEND_MIXINS, BROKER_MIXINS
from celeriac.testing._schedule_suite import (
    BackendScheduleStoreConformance,
    ScheduleStoreConformance,
)
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
    "BACKEND_MIXINS",
    "BACKEND_PARTS",
    "BROKER_MIXINS",
    "QUEUE",
    "BackendConformance",
    "BackendFactory",
    "BackendScheduleStoreConformance",
    "BroadcastConformance",
    "BrokerConformance",
    "BrokerFactory",
    "ChordCounterConformance",
    "DeadLetterConformance",
    "DeadLetterRemovalConformance",
    "EventChannelConformance",
    "Factory",
    "GroupConformance",
    "HistoryConformance",
    "KeyValueConformance",
    "LeaseRecoveryConformance",
    "QueueBindingsConformance",
    "RateLimitConformance",
    "RemoteControlConformance",
    "ReplyConformance",
    "RevocationConformance",
    "RevocationListingConformance",
    "ScheduleStoreConformance",
    "backend_offers",
    "message",
    "number",
    "opened",
    "publish_raw",
    "run",
    "run_in_threads",
    "url_factory",
]
