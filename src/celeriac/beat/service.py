"""The beat: sends each periodic entry's task when its schedule says, exactly once per
scheduled time however many beats run.

Each tick reads the stored last run of every entry (one call to the store), works out
from the schedule the latest scheduled instant in ``(last run, now]`` (the *slot*: it
depends on the schedule and the stored last run only, never on this beat's clock
reading beyond "is it due yet"), and claims it: a compare-and-set of the entry's last
run from the value read to the slot, which publishes the task in the same atomic step
(:class:`~celeriac.transports.capabilities.ScheduleStore`). Two beats reading the same
last run compute the same slot, and only one compare-and-set succeeds; a beat that loses
reads again on its next tick. Slots late by up to ``CATCH_UP_SECONDS`` (10 s: a busy
beat) are each sent in turn; after a longer downtime only the latest missed slot is sent
(once), and for crontab entries only if it is no older than ``beat_cron_starting_deadline``.

An entry seen for the first time gets its last run set to now (without a send), as
Celery's beat does: an interval entry first runs one interval later, a crontab entry at
its next time. The beat sleeps until the next slot of any entry, at most
``beat_max_loop_interval`` (default 300 s, as Celery's), and re-reads the runtime
entries (``app.beat.add``) on every tick. A store it cannot reach is retried with
backoff, logged each time; the beat never stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from celeriac import _publish_retry
from celeriac.beat.entries import Entry, configured, decode_entry
from celeriac.exceptions import BackendError, BrokerError, ImproperlyConfigured
from celeriac.transports.capabilities import ScheduledSend, ScheduleStore

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.beat")
UTC = timezone.utc
DEFAULT_MAX_INTERVAL = 300.0
#: the reserved stored entry that lists the entries switched off
DISABLED_KEY = "celeriac.beat.disabled"
#: a slot late by at most this is still sent in turn (a busy or briefly cut-off beat);
#: after a longer gap only the latest missed slot is sent
CATCH_UP_SECONDS = 10.0
#: the namespace of the task ids of periodic sends: (entry, slot) -> always the same id
_IDS = uuid.UUID("5b1e8a52-2f0c-4c53-9d47-0c2b7a4f3e61")


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _no_store(broker: str, backend: str) -> str:
    return (
        f"celeriac beat needs a store for its claims and last runs: the broker {broker} "
        f"cannot hold them and neither can the result backend {backend}; set result_backend "
        "to a redis:// or sqlite:// URL (with RabbitMQ, the beat claims each run there and "
        "then publishes it)"
    )


class Claims:
    """Where the beat claims slots: the broker when it can publish in the claim, else
    the result backend (claim, then publish; see docs/guide/periodic.md)."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self.store: ScheduleStore | None = None
        self.atomic = True

    @staticmethod
    def check(app: Celeriac) -> None:
        """Fail at start-up, saying what to change, when no store can hold the claims."""
        from celeriac.transports import backend_class, broker_class  # noqa: PLC0415

        broker = broker_class(app.broker_url)
        if issubclass(broker, ScheduleStore):
            return
        backend = backend_class(app.backend_url)
        if not issubclass(backend, ScheduleStore):
            raise ImproperlyConfigured(_no_store(broker.__name__, backend.__name__))

    async def open(self) -> ScheduleStore:
        if self.store is not None:
            return self.store
        broker = await self.app.get_broker()
        if isinstance(broker, ScheduleStore):
            self.store, self.atomic = broker, True
            return broker
        backend = await self.app.get_backend()
        if isinstance(backend, ScheduleStore):
            self.store, self.atomic = backend, False
            return backend
        raise ImproperlyConfigured(_no_store(type(broker).__name__, type(backend).__name__))

    async def claim(self, name: str, last: int | None, slot: int, send: ScheduledSend) -> bool:
        store = await self.open()
        if self.atomic:
            return await store.schedule_claim(name, last, slot, send)
        if not await store.schedule_claim(name, last, slot):
            return False
        queue, message, priority, not_before = send

        async def publish() -> None:
            broker = await self.app.get_broker()
            await broker.publish(queue, message, priority=priority, not_before=not_before)

        try:  # retried as any send is (task_publish_retry_policy)
            await _publish_retry.publish_async(self.app, {}, publish)
        except Exception:
            logger.error(
                "beat: %s: claimed the run of %s but could not publish it: this run is lost",
                name,
                from_ms(slot).isoformat(),
            )
            raise
        return True


class Beat:
    """One beat; run it with :meth:`run` (or ``celeriac beat``, ``worker -B``)."""

    def __init__(
        self,
        app: Celeriac,
        *,
        max_interval: float | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.app = app
        configured_max = app.conf["beat_max_loop_interval"]
        self.max_interval = float(max_interval or configured_max or DEFAULT_MAX_INTERVAL)
        self.clock = clock
        self.claims = Claims(app)
        self.sent = 0
        #: entry -> the last slot said to be missed / the last error said (once each)
        self._missed: dict[str, int] = {}
        self._failed: dict[str, str] = {}

    async def entries(self) -> list[Entry]:
        """``beat_schedule``'s entries, then those stored at runtime (a stored entry of
        the same name wins: it was added later)."""
        store = await self.claims.open()
        found = {e.name: e for e in configured(self.app)}
        for name, raw in (await store.schedule_entries()).items():
            if name == DISABLED_KEY:
                continue
            try:
                found[name] = decode_entry(self.app, name, raw)
            except Exception as exc:
                logger.error("beat: stored entry %r cannot be read, skipped: %r", name, exc)
        return list(found.values())

    async def disabled(self) -> list[str]:
        """The names of the entries switched off (by the dashboard): kept in the
        schedule store as one reserved entry, so that every beat skips them."""
        store = await self.claims.open()
        raw = (await store.schedule_entries()).get(DISABLED_KEY)
        try:
            names = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [str(n) for n in names] if isinstance(names, list) else []

    async def set_enabled(self, name: str, enabled: bool) -> None:
        """Switch entry ``name`` on or off for every beat (from its next tick). A disabled
        entry is not sent; switched on again, it sends its latest missed slot."""
        off = set(await self.disabled())
        if enabled:
            off.discard(name)
        else:
            off.add(name)
        store = await self.claims.open()
        data = json.dumps(sorted(off)).encode() if off else None
        await store.schedule_set_entry(DISABLED_KEY, data)

    async def tick(self) -> float:
        """Send what is due; return the seconds until the next slot (capped)."""
        store = await self.claims.open()
        off = set(await self.disabled())
        entries = [e for e in await self.entries() if e.name not in off]
        runs = await store.schedule_runs([e.name for e in entries])
        now = self.clock()
        wait = self.max_interval
        for entry in entries:
            last_ms = runs.get(entry.name)
            if last_ms is None:  # first sight: the anchor (whoever claims first sets it)
                last_ms = to_ms(now)
                if not await store.schedule_claim(entry.name, None, last_ms):
                    wait = 0.0  # another beat anchored it first: read it again now
                    continue
            else:
                await self._guarded_send(entry, last_ms, now)
            upcoming = _next_fire(entry.schedule, from_ms(last_ms), now)
            if upcoming is not None:
                wait = min(wait, max((upcoming - self.clock()).total_seconds(), 0.0))
        return wait

    async def _guarded_send(self, entry: Entry, last_ms: int, now: datetime) -> None:
        """:meth:`_maybe_send`; an entry that cannot be sent (a bad option, an unknown
        queue) is logged, once per error, and the other entries go on."""
        try:
            await self._maybe_send(entry, last_ms, now)
        except (BrokerError, BackendError, OSError):
            raise
        except Exception as exc:
            if self._failed.get(entry.name) != repr(exc):
                self._failed[entry.name] = repr(exc)
                logger.error("beat: entry %s cannot be sent: %r", entry.name, exc)

    async def _maybe_send(self, entry: Entry, last_ms: int, now: datetime) -> None:
        """Send the due slots of ``entry``: each in turn while they are late by less
        than :data:`CATCH_UP_SECONDS` (a busy beat), else only the latest (downtime)."""
        for _ in range(100):
            slot = _slot(entry.schedule, from_ms(last_ms), now)
            if slot is None or to_ms(slot) <= last_ms or self._too_late(entry, slot, now):
                return
            if not await self._send(entry, last_ms, slot):
                return
            last_ms = to_ms(slot)

    def _too_late(self, entry: Entry, slot: datetime, now: datetime) -> bool:
        deadline = self.app.conf["beat_cron_starting_deadline"]
        late = (now - slot).total_seconds()
        if deadline is None or not _is_cron(entry.schedule) or late <= deadline:
            return False
        if self._missed.get(entry.name) != to_ms(slot):
            self._missed[entry.name] = to_ms(slot)
            logger.warning(
                "beat: %s missed its run of %s by %.0f s (more than "
                "beat_cron_starting_deadline=%s s): not sent",
                entry.name,
                slot.isoformat(),
                late,
                deadline,
            )
        return True

    async def _send(self, entry: Entry, last_ms: int, slot: datetime) -> bool:
        send = self._message(entry, slot)
        for mw in self.app.middleware:
            mw.before_publish(self.app, send[1], send[0])
        if not await self.claims.claim(entry.name, last_ms, to_ms(slot), send):
            return False
        self.sent += 1
        for mw in self.app.middleware:
            mw.after_publish(self.app, send[1], send[0])
        logger.info(
            "Scheduler: Sending due task %s (%s) for %s, id %s",
            entry.name,
            entry.task,
            slot.isoformat(),
            send[1].task_id,
        )
        return True

    def _message(self, entry: Entry, slot: datetime) -> ScheduledSend:
        options = dict(entry.options)
        headers = dict(options.get("headers") or {})
        headers["scheduled_time"] = slot.astimezone(UTC).isoformat()
        options["headers"] = headers
        options.setdefault("task_id", str(uuid.uuid5(_IDS, f"{entry.name}@{to_ms(slot)}")))
        options["_unchecked"] = True
        queue, message, priority, not_before = self.app._prepare(
            entry.task, list(entry.args), dict(entry.kwargs), options
        )
        return queue, message, priority, not_before

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Tick until ``stop`` is set (forever without one)."""
        stop = stop or asyncio.Event()
        self.app.finalize()
        backoff = 1.0
        first = True
        lost_at: float | None = None  # one line when the store is lost, one when back
        while not stop.is_set():
            try:
                store = await self.claims.open()
                if first:
                    first = False
                    where = "broker" if self.claims.atomic else "result backend"
                    names = [e.name for e in await self.entries()]
                    logger.info(
                        "beat: started; %d entries (%s); claims in the %s (%s)",
                        len(names),
                        ", ".join(names) or "none yet",
                        where,
                        type(store).__name__,
                    )
                wait = await self.tick()
                backoff = 1.0
                if lost_at is not None:
                    after = time.monotonic() - lost_at
                    logger.warning("beat: reached the broker and store again after %.1f s", after)
                    lost_at = None
            except ImproperlyConfigured:
                raise
            except Exception as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    logger.warning(
                        "beat: cannot reach the broker or store (%s: %s); retrying",
                        type(exc).__name__,
                        exc,
                    )
                logger.debug("beat: retrying in %.0f s", backoff)
                wait, backoff = backoff, min(backoff * 2, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.005))
        logger.info("beat: stopped after sending %d tasks", self.sent)


def _is_cron(sched: Any) -> bool:
    from celeriac.schedules import crontab  # noqa: PLC0415

    return isinstance(sched, crontab)


def _own(sched: Any) -> bool:
    """True for celeriac's schedules whose ``is_due`` a subclass did not replace (their
    fire times are exact); a replaced one is asked through ``is_due``."""
    from celeriac.schedules import BaseSchedule, crontab, schedule, solar  # noqa: PLC0415

    if not isinstance(sched, BaseSchedule):
        return False
    for base in (schedule, crontab, solar):
        if isinstance(sched, base):
            cls = type(sched)
            return cls.is_due is base.is_due and cls.remaining_estimate is base.remaining_estimate
    return False


def _slot(sched: Any, last: datetime, now: datetime) -> datetime | None:
    """The slot to claim after ``last``: the next one when it is due and late by less
    than :data:`CATCH_UP_SECONDS`, else the latest due one (None: nothing is due)."""
    from celeriac.schedules import BaseSchedule  # noqa: PLC0415

    if _own(sched):
        first = sched.first_fire(last)
        if first is None or first > now:
            return None
        if (now - first).total_seconds() <= CATCH_UP_SECONDS:
            return first  # type: ignore[no-any-return]
        return sched.fire_time(last, now)  # type: ignore[no-any-return]
    if isinstance(sched, BaseSchedule):
        return BaseSchedule.fire_time(sched, last, now)
    due, _ = sched.is_due(last)  # a schedule object of another kind: Celery's protocol
    return now.replace(microsecond=now.microsecond // 1000 * 1000) if due else None


def _next_fire(sched: Any, last: datetime, now: datetime) -> datetime | None:
    from celeriac.schedules import BaseSchedule  # noqa: PLC0415

    if _own(sched):
        return sched.next_fire(last, now)  # type: ignore[no-any-return]
    if isinstance(sched, BaseSchedule):
        return BaseSchedule.next_fire(sched, last, now)
    _, seconds = sched.is_due(last)
    return now + timedelta(seconds=float(seconds))


__all__ = ["DEFAULT_MAX_INTERVAL", "Beat", "Claims", "from_ms", "to_ms"]
