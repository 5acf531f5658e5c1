"""The application: configuration, task registry, routing and the producer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import threading
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from celeriac import (
    _publish_retry,
    _queues,
    _task_config,
    _transactional,
    _transport_settings,
)
from celeriac._arguments import check_sent
from celeriac._autodiscover import autodiscover_tasks, install_fixups
from celeriac._backend_api import BackendAPI
from celeriac._config import Settings
from celeriac._loop import run_sync
from celeriac._parentage import inherit
from celeriac._pydantic import dump_sent
from celeriac._sending import as_utc, expiry_time, from_routes, sig_list
from celeriac._shared_task import _SharedTask
from celeriac.app._api import AppAPI
from celeriac.app._periodic import PeriodicMixin
from celeriac.exceptions import ImproperlyConfigured
from celeriac.middleware import Middleware, SignalsMiddleware
from celeriac.protocol import Message, build_task_message, utcnow
from celeriac.protocol.stamps import stamp_headers
from celeriac.result import AsyncResult
from celeriac.task import Task, make_task_class
from celeriac.transports import (
    BACKENDS,
    Broker,
    ResultBackend,
    backend_class,
    broker_class,
    class_path,
    close_sync,
    create_backend,
    create_broker,
    sync_publisher,
)
from celeriac.transports.tls import apply_tls

if TYPE_CHECKING:
    from celeriac.control import Control

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_BROKER_URL = "sqlite:///celeriac.sqlite3"


class _TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class _BoundTaskDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R], /) -> Task[P, R]: ...


class _Clients:
    """The broker and backend of one event loop, connected on first use."""

    def __init__(self, broker: Broker, backend: ResultBackend) -> None:
        self.broker = broker
        self.backend = backend
        self.ready: set[str] = set()  # "broker", "backend": connected
        self.lock = asyncio.Lock()

    async def connect(self, part: str) -> None:
        """Connect the broker or the backend once, however many callers ask at once."""
        async with self.lock:
            if part not in self.ready:
                await (self.broker if part == "broker" else self.backend).connect()
                self.ready.add(part)


_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []
_apps: weakref.WeakSet[Celeriac] = weakref.WeakSet()
_current: Celeriac | None = None


class Celeriac(PeriodicMixin, AppAPI):
    """A celeriac application (also importable as ``Celery``)."""

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        include: Sequence[str] | None = None,
        config_source: Any = None,
        set_as_current: bool = True,
        task_cls: type[Task[Any, Any]] | str | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self._task_cls = task_cls  # app.Task's base (app/_api.py)
        self._fixups: list[Any] = []  # the Django fix-up (celeriac.contrib.django.fixup)
        self._on_import_modules: list[Callable[[], Any]] = []  # lazy autodiscover_tasks()
        self.conf = Settings()
        self.conf.update_from_env()
        if config_source is not None:
            self.conf.update_from_object(config_source)
        if broker is not None:
            self.conf["broker_url"] = broker
        if backend is not None:
            self.conf["result_backend"] = backend
        if include:
            self.conf["include"] = list(include)
        for key, value in settings.items():
            self.conf[key] = value
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.conf.watch(_task_config.WATCHED, lambda: _task_config.configure_all(self))
        self.middleware: list[Middleware] = [SignalsMiddleware(), _sent_events()]
        from celeriac.canvas._worker import install  # noqa: PLC0415 - canvas imports app types

        install(self)  # canvas: callbacks, chains, chord joins, celery.map/starmap/chunks
        self.reply_to = str(uuid.uuid4())
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()
        for fn, opts in _shared_tasks:
            self._register(fn, dict(opts))
        _apps.add(self)
        if set_as_current:
            self.set_current()
        install_fixups(self)  # Django's, when DJANGO_SETTINGS_MODULE is set (as Celery)

    def __repr__(self) -> str:
        return f"<Celeriac {self.main or '__main__'} at {id(self):#x}>"

    def set_current(self) -> None:
        global _current
        _current = self

    # -- configuration ------------------------------------------------------
    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Load settings from a module, object, mapping, or ``"module:attr"`` string."""
        if isinstance(obj, str):
            install_fixups(self, obj)  # "django.conf:settings": Django's fix-up too
            module_name, _, attr = obj.partition(":")
            try:
                module: Any = importlib.import_module(module_name)
            except ImportError:
                if silent:
                    return
                raise
            obj = getattr(module, attr) if attr else module
        self.conf.update_from_object(obj, namespace=namespace)

    def config_from_envvar(self, name: str, silent: bool = False) -> None:
        import os  # noqa: PLC0415

        target = os.environ.get(name)
        if not target:
            if silent:
                return
            raise ImproperlyConfigured(f"environment variable {name} is not set")
        self.config_from_object(target)

    @property
    def broker_url(self) -> str:
        """The broker's URL (``broker_use_ssl`` makes it ``amqps://``/``rediss://``)."""
        return self._broker_tls()[0]

    @property
    def backend_url(self) -> str:
        return self._backend_tls()[0]

    def broker_options(self) -> dict[str, Any]:
        """The broker's transport options: ``broker_transport_options`` over those of
        ``broker_use_ssl`` and of settings that are options (``broker_heartbeat``...)."""
        return _transport_settings.merged(self.conf, "broker", *self._broker_tls())

    def backend_options(self) -> dict[str, Any]:
        """The result backend's transport options, as :meth:`broker_options`."""
        return _transport_settings.merged(self.conf, "backend", *self._backend_tls())

    def _broker_tls(self) -> tuple[str, dict[str, Any]]:
        url = self.conf["broker_url"]
        url = str(url) if url else DEFAULT_BROKER_URL
        return apply_tls("broker_use_ssl", url, self.conf["broker_use_ssl"])

    def _backend_tls(self) -> tuple[str, dict[str, Any]]:
        url = self.conf["result_backend"]
        if url:
            return apply_tls("redis_backend_use_ssl", str(url), self.conf["redis_backend_use_ssl"])
        broker_url, options = self._broker_tls()
        broker_class(broker_url)  # an unknown scheme or a missing extra fails here
        if class_path(broker_url, BACKENDS) is not None:
            return broker_url, options  # results on the broker's server, as the broker
        return "rpc://", {}

    def check_configuration(self) -> None:
        """Fail now, with a clear message, if the broker or backend URL is unusable."""
        broker_class(self.broker_url)
        backend_class(self.backend_url, self.broker_url)  # rpc://: can this broker reply?

    def start(self, argv: list[str] | None = None) -> None:
        """Run the ``celeriac`` command line with this app (``python app.py worker``)."""
        from celeriac.cli import start_app  # noqa: PLC0415

        start_app(self, argv)

    def worker_main(self, argv: list[str] | None = None) -> None:
        """Run ``celeriac worker`` with this app; ``argv`` must name ``worker``."""
        from celeriac.cli import worker_main  # noqa: PLC0415

        worker_main(self, argv)

    def import_modules(self) -> None:
        """The worker's: fix-ups (``django.setup()``), autodiscovery, imports, include."""
        for hook in [fixup.on_import_modules for fixup in self._fixups] + self._on_import_modules:
            hook()
        self._on_import_modules = []
        for name in [*self.conf["imports"], *self.conf["include"]]:
            importlib.import_module(name)

    autodiscover_tasks = autodiscover_tasks

    # -- tasks --------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(self, *, bind: Literal[True], **options: Any) -> _BoundTaskDecorator: ...
    @overload
    def task(self, *, bind: Literal[False] = ..., **options: Any) -> _TaskDecorator: ...

    def task(  # type: ignore[misc]  # mypy cannot match **options against fn
        self, fn: Callable[..., Any] | None = None, /, *, bind: bool = False, **options: Any
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(**options)``."""
        options["bind"] = bind
        if fn is not None:
            return self._register(fn, options)

        def decorate(func: Callable[..., Any]) -> Task[Any, Any]:
            return self._register(func, options)

        return decorate

    def _register(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
        if isinstance(fn, Task):
            return fn
        name = options.get("name") or self.gen_task_name(fn.__name__, fn.__module__)
        base = options.get("base") or self.Task
        cls = make_task_class(fn, name, self, base, options)
        task = cls()
        _task_config.configure_task(self, task)
        self.tasks[name] = task
        return task

    def gen_task_name(self, name: str, module: str) -> str:
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def register_task(self, task: Any, **options: Any) -> Task[Any, Any]:
        """Register a class-based task (a ``Task`` subclass's instance, or the class)."""
        from celeriac.task import register_class_task  # noqa: PLC0415

        registered = register_class_task(self, task, options)
        self.tasks[registered.name] = registered
        return registered

    # -- clients ------------------------------------------------------------
    def _clients_for_loop(self) -> _Clients:
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            with self._clients_lock:
                clients = self._clients.get(loop)
                if clients is None:
                    opts = self.broker_options()
                    bopts = self.backend_options()
                    if backend_class(self.backend_url).needs_reply_to:  # rpc: the broker's
                        # server, and this app's reply queue (``reply_to`` of its tasks)
                        bopts = {
                            "broker_url": self.broker_url,
                            "broker_options": opts,
                            "reply_to": self.reply_to,
                            **bopts,
                        }
                    clients = _Clients(
                        create_broker(self.broker_url, opts),
                        create_backend(self.backend_url, bopts),
                    )
                    self._clients[loop] = clients
        return clients

    async def get_broker(self) -> Broker:
        """This event loop's broker, connected."""
        clients = self._clients_for_loop()
        if "broker" not in clients.ready:
            await clients.connect("broker")
        return clients.broker

    async def get_backend(self) -> ResultBackend:
        """This event loop's result backend, connected."""
        clients = self._clients_for_loop()
        if "backend" not in clients.ready:
            await clients.connect("backend")
        return clients.backend

    async def close_clients(self) -> None:
        """Close this loop's broker and backend connections."""
        loop = asyncio.get_running_loop()
        clients = self._clients.pop(loop, None)
        if clients is not None:
            if "broker" in clients.ready:
                await clients.broker.close()
            if "backend" in clients.ready:
                await clients.backend.close()

    def close(self) -> None:
        """Close the broker and backend connections this thread opened (as Celery's
        ``app.close()``); they reopen on next use."""
        close_sync(self)
        run_sync(self.close_clients())

    @functools.cached_property
    def backend(self) -> BackendAPI:
        """Celery's ``app.backend``: the result backend's calls, sync (``_backend_api``)."""
        return BackendAPI(self)

    async def backend_get(self, task_id: str) -> dict[str, Any] | None:
        return await (await self.get_backend()).get(task_id)

    async def backend_wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.5
    ) -> dict[str, dict[str, Any]]:
        backend = await self.get_backend()
        return await backend.wait(task_ids, timeout, interval=min(interval, 0.05))

    async def backend_forget(self, task_id: str) -> None:
        await (await self.get_backend()).forget(task_id)

    async def backend_store(
        self, task_id: str, meta: dict[str, Any], reply_to: str | None = None
    ) -> None:
        """Store a state for ``task_id`` as the worker does (``result_expires``); over
        ``rpc://`` it goes to ``reply_to``, the caller's reply queue."""
        backend = await self.get_backend()
        if backend.needs_reply_to:
            await backend.store_replies([(reply_to, task_id, meta)])
        else:
            await backend.store(task_id, meta, self.conf["result_expires"] or None)

    # -- producing ----------------------------------------------------------
    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name (it need not be registered here)."""
        options.setdefault("_unchecked", "_task" not in options)  # as Celery: by name, unchecked
        conn = _transactional.connection_of(self, options)
        queue, message, priority, not_before = self._prepare(name, args, kwargs, options)
        publisher = sync_publisher(self)
        if conn is not None:  # written by the caller's connection, in its transaction
            with self._publishing(message, queue):
                _transactional.publish(self, conn, queue, message, priority, not_before)
        elif publisher is None:
            run_sync(self._publish(queue, message, priority, not_before, options))
        else:  # the transport's sync fast path (no event loop)
            with self._publishing(message, queue):
                args = (queue, message, priority, not_before)
                _publish_retry.publish_sync(self, options, publisher.publish, *args)
        return self._result_of(name, message)

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """``send_task`` for asyncio code."""
        options.setdefault("_unchecked", "_task" not in options)
        conn = _transactional.connection_of(self, options)
        queue, message, priority, not_before = self._prepare(name, args, kwargs, options)
        if conn is not None:
            with self._publishing(message, queue):
                await _transactional.apublish(self, conn, queue, message, priority, not_before)
        else:
            await self._publish(queue, message, priority, not_before, options)
        return self._result_of(name, message)

    def transaction(self, connection: Any) -> Any:
        """A block that is one transaction on ``connection`` (psycopg, Django,
        SQLAlchemy; a PostgreSQL broker's database), in which the tasks this app sends
        are written through it: queued if it commits, never if it rolls back.
        ``with`` for sync connections, ``async with`` for an async psycopg one."""
        return _transactional.transaction(self, connection)

    def _result_of(self, name: str, message: Message) -> AsyncResult[Any]:
        result: AsyncResult[Any] = AsyncResult(message.headers["id"], task_name=name, app=self)
        result.ignored = bool(message.headers.get("ignore_result"))
        return result

    async def _publish(
        self,
        queue: str,
        message: Message,
        priority: int,
        not_before: float | None,
        options: dict[str, Any] | None = None,
    ) -> None:
        async def publish() -> None:
            if self._clients_for_loop().backend.needs_reply_to:
                await self.get_backend()  # rpc: the reply queue must exist before an answer
            broker = await self.get_broker()
            await broker.publish(queue, message, priority=priority, not_before=not_before)

        with self._publishing(message, queue):
            await _publish_retry.publish_async(self, options or {}, publish)

    @contextlib.contextmanager
    def _publishing(self, message: Message, queue: str) -> Iterator[None]:
        """The middleware's before/after publish hooks around one publish."""
        for mw in self.middleware:
            mw.before_publish(self, message, queue)
        yield
        for mw in self.middleware:
            mw.after_publish(self, message, queue)

    def _prepare(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> tuple[str, Message, int, float | None]:
        task: Task[Any, Any] | None = options.pop("_task", None) or self.tasks.get(name)
        args = list(args or ())
        kwargs = dict(kwargs or {})
        check_sent(task, args, kwargs, options)  # typing=True: TypeError now, as Celery
        serializer = (
            options.get("serializer")
            or (task.serializer if task else None)
            or self.conf["task_serializer"]
        )
        args, kwargs = dump_sent(task, args, kwargs, serializer)  # pydantic=True models
        inherit(options, self.conf["task_inherit_parent_priority"])  # sent from a task
        now = utcnow()
        eta = as_utc(options.get("eta"))
        countdown = options.get("countdown")
        if countdown is not None:
            eta = now + timedelta(seconds=float(countdown))
        expires = options.get("expires", task.expires if task else None)
        expires_at = expiry_time(expires, now)
        queue = self.route(name, args, kwargs, options, task)
        if not self.conf["task_create_missing_queues"]:
            _queues.check_queue(self.conf, queue)
        priority = options.get("priority")
        if priority is None and task is not None:
            priority = task.priority
        if priority is None:
            priority = self.conf["task_default_priority"]
        ignore_result = options.get("ignore_result")
        if ignore_result is None:
            ignore_result = task.ignore_result if task and task.ignore_result is not None else None
        if ignore_result is None:
            ignore_result = self.conf["task_ignore_result"]
        time_limit = options.get("time_limit", task.time_limit if task else None)
        soft_limit = options.get("soft_time_limit", task.soft_time_limit if task else None)
        message = build_task_message(
            name,
            args,
            kwargs,
            task_id=options.get("task_id"),
            eta=eta,
            expires=expires_at,
            retries=int(options.get("retries", 0)),
            timelimit=(time_limit, soft_limit),
            root_id=options.get("root_id"),
            parent_id=options.get("parent_id"),
            group_id=options.get("group_id"),
            group_index=options.get("group_index"),
            shadow=options.get("shadow"),
            ignore_result=bool(ignore_result),
            callbacks=sig_list(options.get("link")),
            errbacks=sig_list(options.get("link_error")),
            chain=options.get("chain"),
            chord=options.get("chord"),
            extra_headers=stamp_headers(options),
            reply_to=options.get("reply_to") or self.reply_to,
            priority=priority,
            serializer=serializer,
            queue=queue,
            now=now,
            replaced_task_nesting=int(options.get("replaced_task_nesting") or 0),
        )
        not_before = eta.timestamp() if eta is not None and eta > now else None
        return queue, message, int(priority or 0), not_before

    def route(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        task: Task[Any, Any] | None = None,
    ) -> str:
        """The queue a task goes to: ``queue=`` option, ``task_routes``, task, default
        (each a queue name, a queue object, or an exchange and routing key)."""
        for route in (
            options,
            from_routes(self.conf["task_routes"], name, args, kwargs, options, task),
            {k: getattr(task, k, None) for k in ("queue", "exchange", "routing_key")},
        ):
            queue = _queues.route_queue(self.conf, route)
            if queue:
                return queue
        return str(self.conf["task_default_queue"])

    @property
    def control(self) -> Control:
        """Remote control of workers: ``revoke``, ``purge``."""
        from celeriac.control import Control  # noqa: PLC0415 - imports the worker core

        return Control(self)

    def add_middleware(self, middleware: Middleware) -> None:
        self.middleware.append(middleware)


def current_app() -> Celeriac:
    """The app most recently created (or set with ``set_current``); a default one if none."""
    global _current
    if _current is None:
        _current = Celeriac("default")
    return _current


class _CurrentAppProxy:
    """``celeriac.current_app``: forwards attribute access to :func:`current_app`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(current_app(), name)

    def __repr__(self) -> str:
        return repr(current_app())


@overload
def shared_task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
@overload
def shared_task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def shared_task(*, bind: Literal[True], **options: Any) -> _BoundTaskDecorator: ...
@overload
def shared_task(*, bind: Literal[False] = ..., **options: Any) -> _TaskDecorator: ...


def shared_task(
    fn: Callable[..., Any] | None = None, /, *, bind: bool = False, **options: Any
) -> Any:
    """Register a task with every app, present and future (for reusable apps)."""
    options["bind"] = bind

    def decorate(func: Callable[..., Any]) -> Task[Any, Any]:
        _shared_tasks.append((func, options))
        for app in list(_apps):
            app._register(func, dict(options))
        return cast("Task[Any, Any]", _SharedTask(func, options))

    return decorate(fn) if fn is not None else decorate


Celery = Celeriac

__all__ = ["Celeriac", "Celery", "current_app", "shared_task"]


def _sent_events() -> Middleware:
    from celeriac.events.sent import TaskSentEvents  # noqa: PLC0415 - events import the app

    return TaskSentEvents()
