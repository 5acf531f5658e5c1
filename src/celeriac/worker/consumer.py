"""The consumer: one asyncio loop that fetches, dispatches to a pool, and settles.

It holds ``concurrency * prefetch_multiplier`` deliveries (Celery's prefetch limit), more
when tasks are short (see :func:`prefetch_limit`). Outcomes are settled in
batches, in the order the at-least-once guarantee needs: store results, publish follow-up
messages, then ack (or requeue, or dead-letter). Leases of held deliveries are extended
while they are held. A warm stop returns unstarted deliveries and waits for running ones;
a cold stop returns everything held and leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from celeriac import _queues
from celeriac._outcome import Action, Outcome
from celeriac.control import remote_command
from celeriac.exceptions import (
    BackendError,
    BrokerError,
    CeleriacError,
    ImproperlyConfigured,
    MessageError,
)
from celeriac.middleware import Middleware, consumer_sender, overriding
from celeriac.protocol import Message, control_reply, parse_control
from celeriac.states import REJECTED
from celeriac.transports.broker import Broker, Delivery, Revocation
from celeriac.transports.capabilities import (
    LeaseRecovery,
    RateLimitStore,
    RemoteControl,
    RevocationStore,
)
from celeriac.worker._monitor import WorkerMonitor
from celeriac.worker._outage import RETRY_DELAYS, Outage
from celeriac.worker.builtins import builtins
from celeriac.worker.core import Handler, Job
from celeriac.worker.fairness import Balancer
from celeriac.worker.limits import resident_kib
from celeriac.worker.pools import Pool
from celeriac.worker.startup import EXIT_BROKER_LOST, connect_at_startup, give_up

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.transports.backend import ResultBackend

logger = logging.getLogger("celeriac.worker")

FETCH_TIMEOUT = 1.0
#: How long start-up waits for the remote-control listener before going on without it
#: (it keeps trying, and logs why)
CONTROL_START_TIMEOUT = 5.0
WATCHDOG_INTERVAL = 0.05
#: exit code of a prefork child that stopped a task it could not interrupt
EXIT_ABANDONED = 75
#: How long settling waits for more outcomes while the pool is busy (batching).
SETTLE_LINGER = 0.001
#: How soon a lease extension that failed (the broker unreachable) is tried again.
EXTEND_RETRY = 1.0
#: The prefetch limit grows at most this many times for short tasks.
PREFETCH_GROWTH = 64
#: Weight of the latest task in the running average of task run times.
RUNTIME_WEIGHT = 0.1
#: How often the loop looks for outcomes a pool thread held too long (and, with
#: nothing held, how often it looks whether anything is)
OUTBOX_TICK = 0.005
IDLE_TICK = 0.05


def prefetch_limit(base: int, concurrency: int, window: float, runtime: float | None) -> int:
    """How many deliveries a consumer holds: ``base`` (Celery's prefetch limit), or, for
    tasks that take ``runtime`` seconds on average, as many as the pool runs in
    ``window`` seconds, up to ``PREFETCH_GROWTH`` times ``base``.

    Holding a few more tasks of a millisecond costs no one any waiting, and it lets one
    round trip fetch, and one settle, many of them; tasks of ``window`` or longer keep the
    configured limit exactly. ``window`` 0 turns this off."""
    if window <= 0 or runtime is None:
        return base
    fits = int(window * concurrency / max(runtime, 1e-6))
    return max(base, min(fits, base * PREFETCH_GROWTH))


class Consumer:
    def __init__(
        self,
        app: Celeriac,
        pool: Pool,
        *,
        queues: Sequence[str],
        hostname: str,
        prefetch_multiplier: int = 4,
        max_tasks: int | None = None,
        consumer_id: str = "",
    ) -> None:
        self.app = app
        self.pool = pool
        self.queues = list(queues)
        self.hostname = hostname
        self.base_limit = max(1, pool.concurrency * prefetch_multiplier)
        self.limit = self.base_limit
        self._window = float(app.conf["worker_prefetch_window"] or 0.0)
        self._runtime: float | None = None  # running average of task run times
        self.max_tasks = max_tasks
        self.max_memory: int | None = None  # KiB of resident memory (prefork children)
        self.consumer_id = consumer_id
        self.handler = Handler(app, hostname)
        self.held: dict[Delivery, Job | None] = {}
        self.processed = 0
        self._done: list[Outcome] = []
        self._pending_acks: list[Delivery] = []
        #: the broker's and result backend's outages (one line when lost, one when restored)
        self.outage = Outage()
        self._extend_wake: asyncio.Event | None = None
        self._awaiting_space = False
        #: jobs a middleware gate holds (rate limits), and the task awaiting it
        self._gated: dict[Job, asyncio.Task[None]] = {}
        self._submitted = 0
        self._withheld: list[Job] = []
        self._unstarted: list[Job] = []
        #: a prefork child exits after settling a job it had to stop, so that the
        #: thread still running it dies with the process
        self.exit_on_abandon = False
        #: this consumer answers Celery's remote control for the worker (one per worker)
        self.control = False
        #: the worker's main process (a prefork child's is its supervisor)
        self.worker_pid = os.getpid()
        #: a prefork child's share of fair dispatch (celeriac.worker.fairness)
        self.balancer: Balancer | None = None
        self.exit_code = 0
        self._stopping = False
        self._closing = False
        self._cold = False
        self._wake: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._settled: asyncio.Event | None = None
        self.broker: Broker | None = None
        #: the broker's capabilities, asked once at start (None: it has not got it)
        self.revocation_store: RevocationStore | None = None
        self.rate_store: RateLimitStore | None = None
        self.backend: ResultBackend | None = None
        #: events, counts and shared state for monitors (celeriac.worker._monitor)
        self.monitor = WorkerMonitor(self)
        self.use_middleware([*builtins(self), self.monitor, *app.middleware])

    def use_middleware(self, middleware: list[Middleware]) -> None:
        """Run these hooks (the worker's own, then the app's), calling only those that
        each middleware overrides."""
        self.middleware = middleware
        self.handler.use_middleware(middleware)
        self._gates = overriding(middleware, "gate")
        self._settlers = overriding(middleware, "settle")
        self._tickers = overriding(middleware, "tick")

    @property
    def cold(self) -> bool:
        """True once a cold stop was asked for."""
        return self._cold

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stopping

    def unsubmit(self, count: int) -> None:
        """``count`` submitted jobs went back to the broker unstarted (fair dispatch):
        the fetch loop may fetch again (after its hold-off)."""
        self._submitted -= count
        if self._space is not None:
            self._space.set()

    # -- control ------------------------------------------------------------
    def stop(self, cold: bool = False) -> None:
        """Ask the consumer to stop: warm first, cold if asked (or asked twice)."""
        if self._stopping:
            cold = True
        self._stopping = True
        self._cold = self._cold or cold
        if self.balancer is not None:
            self.balancer.mark(free=False)
        if self.pool.outbox is not None:
            # take unstarted jobs back now, before a free pool thread starts one of them
            self._unstarted.extend(self.pool.reclaim())
            self.pool.outbox.flush()  # outcomes held for the jobs just taken back
        for event in (self._wake, self._space, self._settled):
            if event is not None:
                event.set()

    # -- main ---------------------------------------------------------------
    async def run(self, on_ready: Any = None) -> None:
        loop = asyncio.get_running_loop()
        consumer_sender.set(self)  # the sender of task_received, task_unknown ...
        self._wake, self._space, self._settled = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.broker = await self._connect_broker()
        self.broker.consumer_id = self.consumer_id
        if isinstance(self.broker, RevocationStore):
            self.revocation_store = self.broker
        if isinstance(self.broker, RateLimitStore):
            self.rate_store = self.broker
        self.backend = await self.app.get_backend()
        check_capabilities(self.app, self.broker)
        for queue in self.queues:
            await self.broker.declare(queue)
        await _queues.bind_consumed(self.app.conf, self.broker, self.queues)
        self.pool.start(loop, self.handler, self._on_outcomes)
        self._batch_outcomes()
        for mw in self.middleware:
            mw.worker_start(self.app, self.hostname)
        helpers: list[asyncio.Task[None]] = []
        remote = self.control and self.app.conf["worker_enable_remote_control"]
        if remote and isinstance(self.broker, RemoteControl):
            # listening before "ready": a request sent right after it must not be lost
            listening = asyncio.Event()
            helpers.append(loop.create_task(self._listen_control(listening.set)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(listening.wait(), CONTROL_START_TIMEOUT)
        if on_ready is not None:
            on_ready()
        helpers.append(loop.create_task(self.monitor.run()))
        settler = loop.create_task(self._settle_loop())
        helpers += [loop.create_task(self._extend_loop()), loop.create_task(self._watchdog())]
        helpers.append(loop.create_task(self._outbox_timer()))
        if self.balancer is not None:
            helpers.append(loop.create_task(self.balancer.run()))
        try:
            await self._fetch_loop()
            await self._drain()
        finally:
            for helper in helpers:
                helper.cancel()
            self._stopping = True
            self._closing = True  # the drain is over: nothing more will be settled
            self._wake.set()
            await asyncio.gather(settler, *helpers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.monitor.close()
            self.pool.stop()
            for mw in self.middleware:
                mw.worker_shutdown(self.app, self.hostname)
            await self.app.close_clients()

    # -- remote control -----------------------------------------------------------
    async def _listen_control(self, listening: Callable[[], None]) -> None:
        assert isinstance(self.broker, RemoteControl)
        await self.broker.listen_control(self.hostname, self._on_control, listening)

    async def _on_control(self, message: Message) -> None:
        """Carry out a Celery remote-control request meant for this worker, and answer
        it if the caller waits for answers."""
        try:
            request = parse_control(message)
        except MessageError as exc:
            logger.warning("Remote control: ignored a request: %s", exc)
            return
        if request.ours or (request.expires and request.expires < time.time()):
            return  # celeriac's own broadcast (in effect already), or too late
        if request.destination is not None and self.hostname not in request.destination:
            return
        try:
            result = await remote_command(self.app, request, self.worker_pid, self)
        except (OSError, CeleriacError) as exc:
            logger.error("Remote control: %s failed: %s", request.method, exc)
            result = {"error": f"{request.method} failed: {exc}"}
        else:
            logger.info("Remote control: %s %s", request.method, request.arguments or "")
        if request.reply_key and isinstance(self.broker, RemoteControl):
            reply = control_reply(self.hostname, request, result)
            try:
                await self.broker.reply_control(request.reply_key, reply)
            except (OSError, CeleriacError) as exc:
                logger.warning("Remote control: could not answer %s: %s", request.method, exc)

    async def _connect_broker(self) -> Broker:
        return await connect_at_startup(
            self.app.conf,
            self.app.broker_url,
            self.app.get_broker,
            RETRY_DELAYS,
            lambda: self._stopping,
        )

    async def _fetch_loop(self) -> None:
        broker, space = self.broker, self._space
        assert broker is not None and space is not None
        failures = 0
        while not self._stopping:
            if self.balancer is not None and (pause := self.balancer.hold_off()) > 0:
                await asyncio.sleep(pause)  # leave what it handed back to its siblings
                continue
            room = self.limit - len(self.held)
            low_water = max(1, self.limit // 2)
            # refill in batches: wait until half the prefetch window is free (or all of it
            # is idle), so one round trip acks the last batch and brings the next
            if room <= 0 or (self.held and room < low_water):
                space.clear()  # before the flush awaits: space freed meanwhile must wake us
                await self._flush_acks()
                self._awaiting_space = True
                await space.wait()
                self._awaiting_space = False
                continue
            acks, self._pending_acks = self._pending_acks, []
            if self.balancer is not None:  # free while it waits holding nothing
                self.balancer.mark(free=not self.held and not self._stopping)
            try:
                deliveries = await broker.ack_and_fetch(acks, self.queues, room, FETCH_TIMEOUT)
            except (OSError, BrokerError) as exc:
                self._pending_acks = acks + self._pending_acks  # acks are idempotent
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                stop = give_up(self.app.conf, self.app.broker_url, failures, exc)
                if stop is not None:  # broker_connection_retry(_max_retries)
                    self.exit_code = EXIT_BROKER_LOST
                    raise stop from exc
                self.outage.failed(exc)
                await asyncio.sleep(delay)
                continue
            self.monitor.fetched_at = time.monotonic()
            self.outage.restored()
            if failures:
                failures = 0
                await self._recover_lost_fetches(deliveries)
                self._extend_soon()
            if deliveries:
                if self.balancer is not None:
                    self.balancer.mark(free=False)
                await self._accept_batch(deliveries)

    async def _recover_lost_fetches(self, fetched: list[Delivery]) -> None:
        """A fetch that failed may have leased messages whose reply never came (the
        connection broke after the broker ran it): return every lease of ours that we do
        not hold, now rather than when the lease expires."""
        if not isinstance(self.broker, LeaseRecovery):
            return  # the broker returns them by itself
        keep = [*self.held, *self._pending_acks, *fetched]
        try:
            back = await self.broker.recover(self.consumer_id, keep)
        except (OSError, BrokerError) as exc:
            logger.warning("Could not return leases of failed fetches: %s", exc)
            return
        if back:
            logger.warning("Returned %d message(s) leased by a fetch that failed", back)

    async def _flush_acks(self) -> None:
        acks, self._pending_acks = self._pending_acks, []
        if acks:
            broker = self.broker
            assert broker is not None
            await self._retrying(lambda: broker.ack(acks))

    async def _accept_batch(self, deliveries: list[Delivery]) -> None:
        revoked = await self.revocations(lambda store: store.revoked_among(deliveries))
        for delivery in deliveries:
            task_id = delivery.message.task_id if delivery.message else None
            decided = self.handler.accept_delivery(delivery, revoked.get(task_id or ""))
            if isinstance(decided, Job):
                self.held[delivery] = decided
                if not decided.acks_late:
                    self._early_ack(decided)
                self._submit(decided)
            else:
                self.held[delivery] = None
                self._on_outcomes([decided])

    async def revocations(
        self, lookup: Callable[[RevocationStore], Awaitable[dict[str, Revocation]]]
    ) -> dict[str, Revocation]:
        """What ``lookup`` finds in the broker's revocation store ({} without one, or
        when the store cannot be read: revocation is best effort)."""
        store = self.revocation_store
        if store is None:
            return {}
        try:
            return await lookup(store)
        except (OSError, BrokerError) as exc:  # the messages run; revocation is best effort
            self.outage.failed(exc)
            return {}

    # -- gates (rate limits) -----------------------------------------------------
    def _submit(self, job: Job) -> None:
        if self.max_tasks and self._submitted >= self.max_tasks:
            self._withheld.append(job)  # this process stops after max_tasks: give it back
            if not self._stopping:
                self.monitor.recycling = True
                self.stop()
            return
        self._submitted += 1
        for index, gate in enumerate(self._gates):
            wait = gate(job)
            if wait is not None:
                loop = asyncio.get_running_loop()
                self._gated[job] = loop.create_task(self._pass_gates(job, wait, index + 1))
                return
        self.pool.submit(job)

    async def _pass_gates(self, job: Job, wait: Callable[[], Awaitable[None]], rest: int) -> None:
        """Hold ``job`` until the gate that stopped it, and every later one, lets it pass."""
        await wait()
        for gate in self._gates[rest:]:
            more = gate(job)
            if more is not None:
                await more()
        self._gated.pop(job, None)
        self.pool.submit(job)

    def _early_ack(self, job: Job) -> None:
        """At-most-once tasks (``acks_late=False``): ack before running."""
        assert self.broker is not None
        job.delivery.extra["acked"] = True
        asyncio.get_running_loop().create_task(self.broker.ack([job.delivery]))

    # -- settling -----------------------------------------------------------
    def _on_outcomes(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            job = outcome.job
            if job is not None and job.abandoned and outcome is not job.stop_outcome:
                continue  # the watchdog settled this job already
            self._done.append(outcome)
        if self._wake is not None:
            self._wake.set()

    async def _settle_loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._done:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._linger()
            batch, self._done = self._done, []
            await self._settle(batch)

    async def _linger(self) -> None:
        """While the pool is still running jobs, wait a moment for their outcomes, so one
        round trip settles several; stop waiting as soon as the pool is idle."""
        assert self._wake is not None
        deadline = asyncio.get_running_loop().time() + SETTLE_LINGER
        while self._running() and len(self._done) < self.limit // 2 and not self._stopping:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def _outbox_timer(self) -> None:
        """Outcomes a pool thread holds while it runs more jobs come out after
        ``OUTBOX_TICK`` at the latest, even when the next job runs long."""
        outbox = self.pool.outbox
        if outbox is None:
            return
        while True:
            await asyncio.sleep(OUTBOX_TICK if self.held else IDLE_TICK)
            outbox.flush_aged()

    def _running(self) -> int:
        """Jobs handed to the pool whose outcome has not arrived yet."""
        return len(self.held) - len(self._done)

    async def _settle(self, batch: list[Outcome]) -> None:
        broker, backend = self.broker, self.backend
        assert broker is not None and backend is not None
        await self._run_settlers(batch, broker, backend)
        follow_ups = [item for o in batch for item in o.follow_ups]
        if follow_ups:
            # new messages (retries, callbacks, chain steps) go through the publish hooks
            # (before/after_task_publish); a rejected message put back is not new
            new = [(q, m) for o in batch if o.state != REJECTED for q, m, _, _ in o.follow_ups]
            self._publish_hooks("before_publish", new)
            await self._retrying(partial(broker.publish_many, follow_ups))
            self._publish_hooks("after_publish", new)
        await self._release(batch, broker)
        for outcome in batch:
            if outcome.action is Action.PROGRESS:
                continue
            self.held.pop(outcome.delivery, None)
            if outcome.job is not None:
                self.processed += 1
                if outcome.job.started:
                    self._observe(outcome.runtime)
                if outcome.job.abandoned and self.exit_on_abandon:
                    self._exit_after_abandon(outcome.job)
        if self.max_tasks and self.processed >= self.max_tasks and not self._stopping:
            logger.info("Consumer reached max tasks (%d); restarting", self.max_tasks)
            self.monitor.recycling = True
            self.stop()
        if self.max_memory and not self._stopping and (rss := resident_kib()) > self.max_memory:
            logger.warning(
                "Child process uses %d KiB (max %d KiB); restarting", rss, self.max_memory
            )
            self.monitor.recycling = True
            self.stop()
        assert self._space is not None and self._settled is not None
        self._space.set()
        self._settled.set()

    async def _run_settlers(
        self, batch: list[Outcome], broker: Broker, backend: ResultBackend
    ) -> None:
        """The settle hooks, results first (the built-in ResultStore); one that fails
        other than by the connection is an internal error of each task of the batch."""
        for settle in self._settlers:
            try:
                await self._retrying(partial(settle, self.app, batch, broker, backend))
            except (OSError, BrokerError, BackendError):
                raise  # a cold stop during an outage
            except Exception as exc:
                logger.exception("Settling %d outcome(s) failed: %r", len(batch), exc)
                for outcome in batch:
                    if outcome.job is not None and outcome.action is not Action.PROGRESS:
                        self.handler.tell_internal_error(outcome.job, exc)

    def _publish_hooks(self, hook: str, messages: list[tuple[str, Message]]) -> None:
        for mw in self.app.middleware:
            for queue, message in messages:
                getattr(mw, hook)(self.app, message, queue)

    def _observe(self, runtime: float) -> None:
        average = self._runtime
        if average is None:
            average = runtime
        else:
            average += RUNTIME_WEIGHT * (runtime - average)
        self._runtime = average
        limit = prefetch_limit(self.base_limit, self.pool.concurrency, self._window, average)
        if limit != self.limit:
            logger.debug("Prefetch limit now %d (tasks take %.2g s on average)", limit, average)
            self.limit = limit
            self._batch_outcomes()

    def _batch_outcomes(self) -> None:
        """Outcomes come to the loop by halves of the prefetch window (see Outbox)."""
        if self.pool.outbox is not None:
            self.pool.outbox.batch = max(1, self.limit // 2)

    async def _release(self, batch: list[Outcome], broker: Broker) -> None:
        """Ack, requeue or dead-letter each settled delivery."""
        acks = [o.delivery for o in batch if o.action is Action.ACK and not _acked(o.delivery)]
        if acks:
            if self._awaiting_space and not self._stopping:
                # the fetch loop wakes up now (space is set below): it acks these in the
                # same round trip as its next fetch
                self._pending_acks.extend(acks)
            else:
                await self._retrying(lambda: broker.ack(acks))
        for outcome in batch:
            if _acked(outcome.delivery):
                continue
            delivery, when, reason = outcome.delivery, outcome.not_before, outcome.reason or ""
            if outcome.action is Action.REQUEUE:
                await self._retrying(partial(broker.requeue, [delivery], not_before=when))
            elif outcome.action is Action.DEAD_LETTER:
                await self._retrying(partial(broker.dead_letter, delivery, reason))

    async def _retrying(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run a broker/backend write, retrying while the connection is down (logged
        once per outage: see :mod:`._outage`); a cold stop ends the retries."""
        await self.outage.retrying(action, lambda: self._cold)

    async def _extend_loop(self) -> None:
        """Extend the leases of held deliveries every third of the lease; while the
        broker cannot be reached, every second, and at once when it is back (the fetch
        loop wakes this), so an outage shorter than what is left of a lease costs no
        delivery twice."""
        assert self.broker is not None
        lease = self.broker.lease_seconds
        wake = self._extend_wake = asyncio.Event()
        wait = lease / 3
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
            wake.clear()
            wait = lease / 3
            held = [d for d in self.held if not _acked(d)]
            if held:
                try:
                    await self.broker.extend(held, lease)
                    logger.debug("Extended the leases of %d message(s)", len(held))
                except (OSError, BrokerError) as exc:
                    self.outage.failed(exc)
                    wait = min(wait, EXTEND_RETRY)
                else:
                    self.outage.restored()

    def _extend_soon(self) -> None:
        if self._extend_wake is not None:
            self._extend_wake.set()

    async def wait_settled(self, timeout: float) -> None:
        """Wait until the next batch is settled, or ``timeout`` seconds."""
        assert self._settled is not None
        self._settled.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

    # -- watchdog: the tick hooks (time limits, terminate) ---------------------------
    async def _watchdog(self) -> None:
        """Hand the running jobs to the middleware's ``tick`` hooks, every
        ``WATCHDOG_INTERVAL`` seconds while any run."""
        tickers = self._tickers
        if not tickers:
            return
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            running = [j for j in self.held.values() if j is not None and j.running]
            if running:
                for tick in tickers:
                    await tick(running)

    def stop_job(self, job: Job, reason: BaseException, inject: type[BaseException]) -> None:
        """Settle a running job now (its late result is dropped) and stop its code."""
        job.abandoned = True
        job.stop_outcome = self.handler.stopped(job, reason)
        self._on_outcomes([job.stop_outcome])
        self.pool.interrupt(job, inject)

    def _exit_after_abandon(self, job: Job) -> None:
        logger.warning(
            "Restarting this process: %s[%s] was stopped while running",
            job.call.name,
            job.call.id,
        )
        self.monitor.recycling = True
        self.stop()
        self.exit_code = EXIT_ABANDONED

    # -- stopping -----------------------------------------------------------
    async def _drain(self) -> None:
        """Return unstarted deliveries, wait for running ones (unless cold)."""
        assert self.broker is not None and self._settled is not None
        await self._flush_acks()
        unstarted, self._unstarted = [*self._unstarted, *self.pool.reclaim()], []
        if self.pool.outbox is not None:
            self.pool.outbox.flush()
        for job, gate in list(self._gated.items()):  # held by a gate (rate limit)
            gate.cancel()
            unstarted.append(job)
        self._gated.clear()
        unstarted += self._withheld
        self._withheld = []
        returned = [j.delivery for j in unstarted if not _acked(j.delivery)]
        for job in unstarted:
            self.held.pop(job.delivery, None)
        if returned:
            await self.broker.requeue(returned)
            logger.info("Returned %d unstarted message(s) to the broker", len(returned))
        while self.held and not self._cold:
            self._settled.clear()
            await self._settled.wait()
        if self._cold and self.held:
            left = [d for d in self.held if not _acked(d)]
            with contextlib.suppress(Exception):
                await self.broker.requeue(left)
            logger.warning("Cold shutdown: returned %d message(s) to the broker", len(left))
            self.held.clear()


def check_capabilities(app: Celeriac, broker: Broker) -> None:
    """A task that needs what this broker cannot do fails the start, saying so."""
    if isinstance(broker, RateLimitStore):
        return
    for task in app.tasks.values():
        if task.rate_limit and task.rate_limit_scope == "global":
            raise ImproperlyConfigured(
                f"task {task.name} has rate_limit_scope='global', which needs a broker "
                f"that can keep a shared token bucket ({type(broker).__name__} cannot); "
                "use rate_limit_scope='worker' or a broker that keeps one (SQLite, Redis, "
                "RabbitMQ, memory)"
            )


def _acked(delivery: Delivery) -> bool:
    return bool(delivery.extra.get("acked"))
