"""The worker: ``celeriac -A app worker``.

``-P prefork`` (default) forks a supervisor's N children, each a complete consumer with
its own connections; ``threads``, ``asyncio``, ``gevent`` and ``solo`` run one consumer in
this process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import __version__, signals
from celeriac._concurrency import EVENTLET_REFUSED
from celeriac._queues import consumed_queues
from celeriac.exceptions import BackendError, ImproperlyConfigured
from celeriac.transports import create_broker
from celeriac.utils.log import mask_url, setup_worker_logging
from celeriac.worker.consumer import Consumer, check_capabilities
from celeriac.worker.pools import POOLS, make_pool
from celeriac.worker.startup import connect_at_startup

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.worker")

POOL_NAMES = ("prefork", "threads", "asyncio", "solo", "gevent")
#: the waits between start-up connection attempts (the last one repeats)
STARTUP_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 10.0)


def expand_hostname(name: str | None) -> str:
    host = socket.gethostname()
    if not name:
        return f"celeriac@{host}"
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain)
    return name if "@" in name else f"{name}@{host}"


class Worker:
    """Runs tasks of ``app`` until stopped; ``run()`` returns the exit code."""

    def __init__(
        self,
        app: Celeriac,
        *,
        concurrency: int | None = None,
        pool: str | None = None,
        queues: Sequence[str] | None = None,
        hostname: str | None = None,
        loglevel: str | int | None = None,
        prefetch_multiplier: int | None = None,
        max_tasks_per_child: int | None = None,
        banner: bool = True,
    ) -> None:
        self.app = app
        self.hostname = expand_hostname(hostname)
        self._given = (concurrency, pool, queues, prefetch_multiplier, max_tasks_per_child)
        self.configure()
        #: seconds between event heartbeats (None: none, ``--without-heartbeat``)
        self.heartbeat_interval: float | None = 2.0
        #: the prefork children's shared state directory (celeriac.worker._state)
        self.state_dir: str | None = None
        self.loglevel = loglevel if loglevel is not None else "WARNING"
        self.banner = banner
        #: log to this file (``%n``, ``%i``, ... expanded) instead of stderr
        self.logfile: str | None = None
        #: one-line warnings logged at start-up (options that mean nothing here)
        self.startup_warnings: list[str] = []
        #: (max, min) pool processes of a prefork pool that grows and shrinks with load
        self.autoscale: tuple[int, int] | None = None
        #: delete the waiting messages of the worker's queues before consuming
        self.purge = False
        #: the command line's options (``celeryd_init``'s ``options``)
        self.options: dict[str, Any] = {}
        #: False when a ``setup_logging`` receiver configures logging instead
        self.own_logging = True

    def configure(self) -> None:
        """The settings the worker reads (again after ``celeryd_init``, whose receivers
        may change ``conf`` for this node), under the explicit arguments."""
        concurrency, pool, queues, prefetch_multiplier, max_tasks_per_child = self._given
        conf = self.app.conf
        self.pool = pool or conf["worker_pool"]
        if self.pool == "eventlet":
            raise ImproperlyConfigured(EVENTLET_REFUSED)
        if self.pool not in POOL_NAMES:
            raise ImproperlyConfigured(
                f"unknown pool {self.pool!r}: use one of {', '.join(POOL_NAMES)}"
            )
        self.concurrency = concurrency or conf["worker_concurrency"] or (os.cpu_count() or 1)
        if self.concurrency < 1:
            raise ImproperlyConfigured(f"concurrency must be at least 1, got {self.concurrency}")
        if self.pool == "solo":
            self.concurrency = 1
        self.queues = list(queues or consumed_queues(conf))
        self.prefetch_multiplier = prefetch_multiplier or conf["worker_prefetch_multiplier"]
        self.max_tasks_per_child = max_tasks_per_child or conf["worker_max_tasks_per_child"]
        #: KiB of resident memory after which a prefork child is replaced
        self.max_memory_per_child: int | None = conf["worker_max_memory_per_child"]

    # -- start --------------------------------------------------------------
    def run(self) -> int:
        """Start, with Celery's signals in Celery's order: ``import_modules`` (then the
        app's modules are imported), ``celeryd_init``, ``worker_init``, the logging
        signals, ``celeryd_after_setup``; ``worker_shutdown`` when it stops."""
        app = self.app
        if self.pool == "gevent":
            from celeriac.worker.gevent_pool import ensure_patched  # noqa: PLC0415

            ensure_patched()
        app.check_configuration()
        signals.send_raising(signals.import_modules, sender=app)
        app.import_modules()
        signals.celeryd_init.send(
            sender=self.hostname, instance=self, conf=app.conf, options=self.options
        )
        self.configure()
        signals.worker_init.send(sender=self)
        self.own_logging = setup_worker_logging(
            self.loglevel, app.conf, self.logfile_for(0), lambda: self.open_logfile(0)
        )
        for line in self.startup_warnings:
            logger.warning("%s", line)
        if app.conf["worker_metrics_port"]:
            from celeriac.worker._metrics import require_client  # noqa: PLC0415

            require_client()
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        try:
            asyncio.run(self._preflight())
            if self.purge:
                asyncio.run(self._purge())
            if self.banner:
                print(self.banner_text(), file=sys.stderr, flush=True)
            if self.pool == "prefork":
                from celeriac.worker.supervisor import Supervisor  # noqa: PLC0415

                return Supervisor(self).run()
            return asyncio.run(self._run_single())
        finally:
            signals.worker_shutdown.send(sender=self)

    def announce_ready(self) -> None:
        """The worker takes tasks: logged, then ``worker_ready`` and the middleware's
        ``worker_ready`` hooks."""
        logger.warning("%s ready.", self.hostname)
        signals.worker_ready.send(sender=self)
        for mw in self.app.middleware:
            mw.worker_ready(self.app, self.hostname)

    def shutting_down(self, signum: int, cold: bool) -> None:
        """A shutdown signal arrived (in the worker's main process): ``worker_shutting_down``
        with Celery's arguments (``sig='SIGTERM'``, ``how='Warm'``, ``exitcode``)."""
        signals.worker_shutting_down.send(
            sender=self.hostname,
            sig=signal.Signals(signum).name,
            how="Cold" if cold else "Warm",
            exitcode=0,
        )

    async def _preflight(self) -> None:
        """Before any child is forked: the broker can be reached (retried while
        ``broker_connection_retry_on_startup``), and it can do what the tasks ask; the
        result backend does not refuse the connection (one that cannot be reached yet
        is retried by the tasks' result writes)."""
        url = self.app.broker_url
        broker = create_broker(url, self.app.broker_options())
        await connect_at_startup(self.app.conf, url, broker.connect, STARTUP_DELAYS)
        try:
            check_capabilities(self.app, broker)
        finally:
            await broker.close()
        try:
            await self.app.get_backend()
        except BackendError as exc:
            if exc.refused:
                where = mask_url(self.app.backend_url)
                raise BackendError(
                    f"cannot connect to the result backend {where}: {exc} (the server "
                    "refused the connection; check the user, password and database in "
                    "the URL)"
                ) from exc
            logger.warning("Result backend not reachable yet: %s", exc)
        finally:
            await self.app.close_clients()

    def logfile_for(self, index: int) -> str | None:
        """The log file of pool process ``index`` (0: the main process), expanded."""
        if not self.logfile:
            return None
        from celeriac._cli.nodes import node_format  # noqa: PLC0415

        return node_format(self.logfile, self.hostname, index) or self.logfile

    def open_logfile(self, index: int) -> None:
        """Log to ``logfile`` as pool process ``index`` (0: the main process) sees it
        (unless a ``setup_logging`` receiver configured logging)."""
        path, main = self.logfile_for(index), self.logfile_for(0)
        if not path or not self.own_logging:
            return
        if index == 0:
            from celeriac._cli.daemon import log_to_file  # noqa: PLC0415

            log_to_file(path)
        elif path != main and main is not None:
            # a child's own file (``%i``): only the main process's file handler moves,
            # handlers that ``after_setup_logger`` receivers added stay
            root = logging.getLogger()
            for handler in list(root.handlers):
                if isinstance(handler, logging.FileHandler) and handler.baseFilename == main:
                    root.removeHandler(handler)
                    handler.close()
                    moved = logging.FileHandler(path, encoding="utf-8")
                    moved.setFormatter(handler.formatter)
                    root.addHandler(moved)

    async def _purge(self) -> None:
        broker = create_broker(self.app.broker_url, self.app.broker_options())
        await broker.connect()
        try:
            count = sum([await broker.purge(name) for name in self.queues])
        finally:
            await broker.close()
        logger.warning("Purged %d message(s) from %d queue(s)", count, len(self.queues))

    def make_consumer(self, pool_name: str, concurrency: int, consumer_id: str) -> Consumer:
        consumer = Consumer(
            self.app,
            make_pool(pool_name, concurrency),
            queues=self.queues,
            hostname=self.hostname,
            prefetch_multiplier=self.prefetch_multiplier,
            max_tasks=None,
            consumer_id=consumer_id,
        )
        consumer.monitor.heartbeat_interval = self.heartbeat_interval
        consumer.monitor.metrics_port = self.app.conf["worker_metrics_port"]
        consumer.monitor.worker = self
        if self.state_dir is not None:
            from celeriac.worker._state import SharedState  # noqa: PLC0415

            consumer.monitor.shared = SharedState(self.state_dir)
        return consumer

    def consumer_for_child(self, consumer_id: str) -> Consumer:
        """A prefork child's consumer, with the per-child limits."""
        consumer = self.make_consumer("prefork-child", 1, consumer_id)
        consumer.max_tasks = self.max_tasks_per_child
        consumer.max_memory = self.max_memory_per_child
        return consumer

    async def _run_single(self) -> int:
        if self.pool == "solo":  # as Celery's solo pool: its one "process" is this one
            signals.worker_process_init.send(sender=self.hostname)
        consumer = self.make_consumer(self.pool, self.concurrency, f"{self.hostname}:{os.getpid()}")
        consumer.control = True
        install_stop_handlers(consumer.stop, on_signal=self.shutting_down)
        await consumer.run(on_ready=self.announce_ready)
        return 0

    def _concurrency_text(self) -> str:
        if self.autoscale and self.pool == "prefork":
            high, low = self.autoscale
            return f"{{min={max(low, 1)}, max={high}}} ({self.pool}, autoscale)"
        return f"{self.concurrency} ({self.pool})"

    def banner_text(self) -> str:
        tasks = sorted(n for n in self.app.tasks if not n.startswith("celery."))
        app_name = self.app.main or "__main__"
        lines = [
            f" -------------- {self.hostname} v{__version__}",
            f" --- ***** ----- {platform.system()}-{platform.release()} "
            f"(Python {platform.python_version()})",
            " -- ******* ---- [config]",
            f" - *** --- * --- .> app:         {app_name}:{id(self.app):#x}",
            f" - ** ---------- .> transport:   {_where(self.app.broker_url)}",
            f" - ** ---------- .> results:     {_where(self.app.backend_url)}",
            f" - *** --- * --- .> concurrency: {self._concurrency_text()}",
            " --- ***** ----- [queues]",
        ]
        lines += [f"                .> {q}" for q in self.queues]
        lines += ["", "[tasks]"] + [f"  . {name}" for name in tasks] + [""]
        return "\n".join(lines)


def _where(url: str) -> str:
    """A URL for the banner: its password masked, a SQLite file's absolute path added."""
    if url.lower().startswith("sqlite:"):
        from celeriac.transports.sqlite.db import describe  # noqa: PLC0415

        path = describe(url)
        return f"{url} ({path})" if path else url
    return mask_url(url)


def install_stop_handlers(
    stop: Callable[[bool], None],
    announce: bool = True,
    on_signal: Callable[[int, bool], None] | None = None,
) -> None:
    """SIGTERM/SIGINT: warm stop (cold on the second); SIGQUIT: cold stop; ``on_signal``
    is told first (signal number, cold)."""
    loop = asyncio.get_running_loop()
    state = {"signalled": False}

    def handle(signum: signal.Signals, cold: bool) -> None:
        cold = cold or state["signalled"]
        state["signalled"] = True
        if announce:
            kind = "Cold" if cold else "Warm"
            logger.warning("%s shutdown (%s)", kind, signum.name)
        if on_signal is not None:
            on_signal(signum, cold)
        stop(cold)

    loop.add_signal_handler(signal.SIGTERM, handle, signal.SIGTERM, False)
    loop.add_signal_handler(signal.SIGINT, handle, signal.SIGINT, False)
    loop.add_signal_handler(signal.SIGQUIT, handle, signal.SIGQUIT, True)


__all__ = ["POOLS", "POOL_NAMES", "Worker", "expand_hostname"]
