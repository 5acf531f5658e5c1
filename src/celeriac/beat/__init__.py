"""Periodic tasks: the beat service (:mod:`.service`), its entries (:mod:`.entries`)
and ``app.beat`` (:mod:`.api`). Exactly-once firing through the transport's
:class:`~celeriac.transports.capabilities.ScheduleStore`; see docs/guide/periodic.md."""

from celeriac.beat.api import BeatAPI, Row
from celeriac.beat.entries import Entry
from celeriac.beat.service import Beat

__all__ = ["Beat", "BeatAPI", "Entry", "Row"]
