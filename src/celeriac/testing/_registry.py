"""Which conformance mixin tests which capability: the broker Protocols of
:mod:`celeriac.transports.capabilities` and the optional parts of the result-backend
contract. The core mixins check a test class against these tables."""

from __future__ import annotations

from celeriac.testing._backend_suite import ReplyConformance
from celeriac.testing._canvas_suite import (
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
from celeriac.testing._schedule_suite import ScheduleStoreConformance
from celeriac.transports.capabilities import (
    Broadcast,
    DeadLetterRemoval,
    DeadLetterStore,
    EventChannel,
    LeaseRecovery,
    QueueBindings,
    RateLimitStore,
    RemoteControl,
    RevocationListing,
    RevocationStore,
    ScheduleStore,
)

#: Every broker capability Protocol and the mixin that tests it.
BROKER_MIXINS: dict[type, type] = {
    LeaseRecovery: LeaseRecoveryConformance,
    RevocationStore: RevocationConformance,
    RevocationListing: RevocationListingConformance,
    RateLimitStore: RateLimitConformance,
    Broadcast: BroadcastConformance,
    RemoteControl: RemoteControlConformance,
    DeadLetterStore: DeadLetterConformance,
    DeadLetterRemoval: DeadLetterRemovalConformance,
    EventChannel: EventChannelConformance,
    ScheduleStore: ScheduleStoreConformance,
    QueueBindings: QueueBindingsConformance,
}

#: Every optional part of the result-backend contract (:data:`BACKEND_PARTS`) and the
#: mixin that tests it.
BACKEND_MIXINS: dict[str, type] = {
    "groups": GroupConformance,
    "chord counters": ChordCounterConformance,
    "replies": ReplyConformance,
    "key values": KeyValueConformance,
    "history": HistoryConformance,
}

__all__ = ["BACKEND_MIXINS", "BROKER_MIXINS", "backend_offers"]
