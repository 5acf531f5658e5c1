"""``Task``: a registered function with Celery's calling API, typed with ParamSpec."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import random
import traceback as tb
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar

from celeriac import _pydantic, states
from celeriac._loop import run_sync
from celeriac._retry_args import retry_arguments, task_parameters
from celeriac.exceptions import ImproperlyConfigured, MaxRetriesExceededError, Retry
from celeriac.protocol import result_meta
from celeriac.protocol.stamps import eager_stamps
from celeriac.result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas import Signature

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Context:
    """``task.request``: what the worker knows about the running task (Celery's fields)."""

    id: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    #: as in the message's headers (ISO 8601 text), as Celery's worker gives them
    eta: str | datetime | None = None
    expires: str | datetime | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    root_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    #: the custom headers the caller sent (``apply_async(headers=...)``), None when none,
    #: as Celery's worker gives them; every header of the message: ``message_headers``
    headers: dict[str, Any] | None = None
    message_headers: dict[str, Any] = field(default_factory=dict)
    #: the stamp names (``sig.stamp(...)``), None when unstamped; and name -> value
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] | None = None
    #: ``[hard, soft]`` as the message carries it; also as ``time_limit``/``soft_time_limit``
    timelimit: Any = None
    #: the message's properties (``correlation_id``, ``reply_to``, ``delivery_info``, ...)
    properties: dict[str, Any] = field(default_factory=dict)
    is_eager: bool = False
    called_directly: bool = True
    callbacks: Any = None
    errbacks: Any = None
    chain: Any = None
    chord: Any = None
    ignore_result: bool = False
    delivery_count: int = 1
    #: the task stored a state of its own (``update_state``) while running
    state_updated: bool = False
    #: the ``Task`` running with this request (``celeriac.current_task``); None outside
    running_task: Any = field(default=None, repr=False, compare=False)

    #: Celery's Context defaults of fields celeriac's worker does not use
    logfile: ClassVar[str | None] = None
    loglevel: ClassVar[int | None] = None
    utc: ClassVar[bool | None] = None
    taskset: ClassVar[str | None] = None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __getattr__(self, key: str) -> Any:
        """Any other header of the message (``task``, ``argsrepr``, ``lang``, a custom
        header ...), as Celery's Context has every header as an attribute."""
        headers = self.__dict__.get("message_headers")
        if headers and key in headers and not key.startswith("__"):
            return headers[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    # read from the message when asked (the worker builds a Context per task)
    @property
    def scheduled_time(self) -> str | None:
        """The slot a periodic task was sent for (ISO 8601, UTC), from its beat's
        ``scheduled_time`` header; None for a task no beat sent."""
        value = self.message_headers.get("scheduled_time")
        return None if value is None else str(value)

    @property
    def time_limit(self) -> float | None:
        limits = self.timelimit
        return limits[0] if isinstance(limits, (list, tuple)) and len(limits) == 2 else None

    @property
    def soft_time_limit(self) -> float | None:
        limits = self.timelimit
        return limits[1] if isinstance(limits, (list, tuple)) and len(limits) == 2 else None

    @property
    def origin(self) -> str | None:
        """The client that sent the task (``pid@host``)."""
        return self.message_headers.get("origin")

    @property
    def shadow(self) -> str | None:
        return self.message_headers.get("shadow")

    @property
    def replaced_task_nesting(self) -> int:
        return int(self.message_headers.get("replaced_task_nesting") or 0)


#: the headers of protocol v2 (and celeriac's own) a message carries for every task:
#: the others are the caller's custom headers (``request.headers``)
PROTOCOL_HEADERS = frozenset(
    {
        *("lang", "task", "id", "shadow", "eta", "expires", "group", "group_index"),
        *("retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr"),
        *("origin", "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps"),
        *("redelivered", "celeriac_requeues", "x-death", "x-first-death-exchange"),
        *("x-first-death-queue", "x-first-death-reason", "x-delivery-count"),
    }
)


def custom_headers(headers: dict[str, Any]) -> dict[str, Any] | None:
    """The caller's own headers among a message's (stamps left out), or None."""
    stamped = headers.get("stamped_headers")
    stamps = set(stamped) if isinstance(stamped, list) else set()
    found = {k: v for k, v in headers.items() if k not in PROTOCOL_HEADERS and k not in stamps}
    return found or None


_DIRECT = Context()
_current_request: contextvars.ContextVar[Context] = contextvars.ContextVar(
    "celeriac_request", default=_DIRECT
)


def get_current_task() -> Task[Any, Any] | None:
    """The task running in this thread or asyncio task (on a worker or eagerly); None
    outside one. As Celery's ``celery._state.get_current_task``."""
    task: Task[Any, Any] | None = _current_request.get().running_task
    return task


class _CurrentTaskProxy:
    """``celeriac.current_task``: the running task (see :func:`get_current_task`); false
    outside a task, as Celery's ``current_task``."""

    def __getattr__(self, name: str) -> Any:
        task = get_current_task()
        if task is None:
            raise AttributeError(f"current_task: no task is running here (asked for {name!r})")
        return getattr(task, name)

    def __bool__(self) -> bool:
        return get_current_task() is not None

    def __repr__(self) -> str:
        return repr(get_current_task())


current_task = _CurrentTaskProxy()

#: Options ``@app.task(...)`` accepts; anything else is an error at decoration time.
TASK_OPTIONS = frozenset(
    {
        "name",
        "bind",
        "base",
        "ignore_result",
        "acks_late",
        "queue",
        "priority",
        "serializer",
        "max_retries",
        "default_retry_delay",
        "autoretry_for",
        "retry_kwargs",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "rate_limit",
        "time_limit",
        "soft_time_limit",
        "track_started",
        "store_errors_even_if_ignored",
        "typing",
        "reject_on_worker_lost",
        "acks_on_failure_or_timeout",
        "expires",
        "shared",
        "throws",
        "trail",
        "routing_key",
        "exchange",
        "rate_limit_scope",
        *_pydantic.OPTIONS,
    }
)
_NOT_ATTRIBUTES = {"name", "base", "shared", "trail", *_pydantic.OPTIONS}


class Task(Generic[P, R]):
    """A task. ``@app.task`` makes one subclass per function and one instance of it."""

    name: str = ""
    bind: bool = False
    is_async: bool = False
    ignore_result: bool | None = None
    acks_late: bool | None = None
    queue: str | None = None
    priority: int | None = None
    serializer: str | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180.0
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    rate_limit: str | None = None
    #: "worker" (each worker process keeps its own bucket, as Celery) or "global" (one
    #: bucket in the broker's store shared by every worker)
    rate_limit_scope: str = "worker"
    time_limit: float | None = None
    soft_time_limit: float | None = None
    track_started: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    reject_on_worker_lost: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    expires: float | datetime | None = None
    throws: tuple[type[BaseException], ...] = ()
    typing: bool = True

    # the wrapped function; set on each subclass
    _fn: Callable[..., Any]
    _bound_app: Celeriac | None = None
    _pydantic_models: _pydantic.PydanticTask | None = None  # pydantic=True (_pydantic.py)

    @property
    def app(self) -> Celeriac:
        """The app the task is registered with (``@app.task`` sets it on the class,
        ``app.register_task`` on the instance); the current app before that, as Celery."""
        if self._bound_app is not None:
            return self._bound_app
        from celeriac.app import current_app  # noqa: PLC0415

        return current_app()

    @app.setter
    def app(self, value: Celeriac) -> None:
        self._bound_app = value

    @property
    def backend(self) -> Any:
        """The app's result backend (``app.backend``), as Celery's ``Task.backend``."""
        return self.app.backend

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self._fn(self, *args, **kwargs)
        return self._fn(*args, **kwargs)

    # -- calling ------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function in this process, as a plain function call."""
        result = self.run(*args, **kwargs)
        if self.is_async and inspect.isawaitable(result):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(result)  # type: ignore[arg-type]
        return result  # type: ignore[no-any-return]

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; returns a handle on its result."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """``delay`` for asyncio code."""
        return await self.aapply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send the task with options (``countdown``, ``eta``, ``expires``, ``queue``,
        ``priority``, ``task_id``, ``headers``, ``ignore_result``, ``serializer``, ...)."""
        if self.app.conf.task_always_eager:
            from celeriac._arguments import check_arguments  # noqa: PLC0415

            check_arguments(self, list(args or ()), dict(kwargs or {}))  # as Celery does
            return self.apply(args, kwargs, **options)
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """``delay`` once the current Django transaction commits (never on rollback)."""
        from celeriac.contrib.django.fixup import on_commit  # noqa: PLC0415

        on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``apply_async`` once the current Django transaction commits."""
        from celeriac.contrib.django.fixup import on_commit  # noqa: PLC0415

        on_commit(functools.partial(self.apply_async, *args, **kwargs))

    async def aapply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """``apply_async`` for asyncio code."""
        return await self.app.asend_task(self.name, args, kwargs, _task=self, **options)

    def apply(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here and now (no broker); returns an :class:`EagerResult`."""
        task_id = task_id or str(uuid.uuid4())
        request = Context(
            id=task_id,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            retries=int(options.get("retries", 0)),
            is_eager=True,
            called_directly=False,
            root_id=task_id,
            headers=dict(options["headers"]) if options.get("headers") else None,
            message_headers={**(options.get("headers") or {}), "task": self.name},
            running_task=self,
            **eager_stamps(options),
        )
        token = _current_request.set(request)
        a, kw = request.args, request.kwargs
        try:  # the hooks of a base class run as on a worker (as Celery's eager trace)
            self.before_start(task_id, a, kw)
            value = self(*a, **kw)
        except Exception as exc:
            trace = tb.format_exc()
            if not isinstance(exc, Retry):
                self.on_failure(exc, task_id, a, kw, trace)
                self.after_return(states.FAILURE, exc, task_id, a, kw, trace)
            if throw if throw is not None else self.app.conf.task_eager_propagates:
                raise
            return EagerResult(task_id, exc, states.FAILURE, trace, app=self.app)
        else:
            self.on_success(value, task_id, a, kw)
            self.after_return(states.SUCCESS, value, task_id, a, kw, None)
        finally:
            _current_request.reset(token)
        return EagerResult(task_id, value, states.SUCCESS, app=self.app)

    # -- states -------------------------------------------------------------
    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        **kwargs: Any,
    ) -> None:
        """Store a state of a task (this one while it runs, unless ``task_id`` is given):
        ``self.update_state(state="PROGRESS", meta={"done": 3, "total": 10})``. Callers
        see it as ``AsyncResult.state`` and ``.info``; the final state replaces it. Not
        stored when the task runs eagerly or is called directly."""
        stored = self._state_update(task_id, state, meta)
        if stored is not None:
            run_sync(self.app.backend_store(*stored))

    async def aupdate_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        **kwargs: Any,
    ) -> None:
        """``update_state`` for ``async def`` tasks."""
        stored = self._state_update(task_id, state, meta)
        if stored is not None:
            await self.app.backend_store(*stored)

    def _state_update(
        self, task_id: str | None, state: str | None, meta: Any
    ) -> tuple[str, dict[str, Any], str | None] | None:
        request = self.request
        if task_id is None:
            if request.called_directly or request.is_eager or request.id is None:
                return None  # not running as a task: nowhere to report to
            task_id = request.id
        if task_id == request.id:
            request.state_updated = True  # the worker's own STARTED must not replace it
        return task_id, result_meta(task_id, state or states.PENDING, meta), request.reply_to

    # -- retries ------------------------------------------------------------
    def retry(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Run this task again later, as a new message with the same id.

        Raises :class:`Retry` (so the worker records RETRY and publishes the new message
        before acking this one), or ``exc``/``MaxRetriesExceededError`` when
        ``request.retries`` has reached ``max_retries``.
        """
        request = self.request
        if request.called_directly:
            raise RuntimeError(f"task {self.name} can only be retried while it runs as a task")
        limit = self.max_retries if max_retries is None else max_retries
        retries = request.retries
        if limit is not None and retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}",
                task_args=request.args,
                task_kwargs=request.kwargs,
            )
        when: float | datetime
        if eta is not None:
            when = eta
        else:
            when = self.default_retry_delay if countdown is None else countdown
        parameters = None
        if (args is None) != (kwargs is None):  # only one given: Celery's merge rules
            parameters = task_parameters(self)
        new_args, new_kwargs = retry_arguments(
            parameters, request.args, request.kwargs, args, kwargs
        )
        sig = {"args": new_args, "kwargs": new_kwargs, "options": options}
        retry = Retry(exc=exc, when=when, sig=sig, is_eager=request.is_eager)
        if throw:
            raise retry
        return retry

    def backoff_delay(self, retries: int) -> float:
        """The countdown ``autoretry_for`` uses: exponential when ``retry_backoff``."""
        if not self.retry_backoff:
            value = self.retry_kwargs.get("countdown", self.default_retry_delay)
            return float(value)
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(float(self.retry_backoff_max), factor * (2**retries))
        if self.retry_jitter:
            delay = random.uniform(0, delay)
        return float(delay)

    # -- canvas -------------------------------------------------------------
    def signature(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A signature of this task: ``add.signature((2, 2), countdown=10)``."""
        from celeriac.canvas import Signature  # noqa: PLC0415

        immutable = bool(options.pop("immutable", False))
        return Signature(self, args, kwargs, options, immutable=immutable, app=self.app)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature with partial arguments (a parent's result is prepended)."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a parent's result is not passed to it."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> Signature:
        """``[task(item) for item in it]`` in one message (``celery.map``)."""
        from celeriac.canvas import xmap  # noqa: PLC0415

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Any) -> Signature:
        """``[task(*item) for item in it]`` in one message (``celery.starmap``)."""
        from celeriac.canvas import xstarmap  # noqa: PLC0415

        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Any, n: int) -> Signature:
        """``it`` split into messages of ``n`` calls each (a group of starmaps)."""
        from celeriac.canvas import chunks  # noqa: PLC0415

        return chunks(self.s(), it, n, app=self.app)

    def replace(self, sig: Signature | dict[str, Any]) -> Any:
        """Hand this task's place to ``sig`` (a task, group, chain or chord signature):
        it inherits the task id, callbacks, errbacks, chain, group and chord membership,
        so the caller gets its result. Sends it and raises ``Ignore`` (nothing after
        ``replace`` runs; write ``return self.replace(...)``); eagerly, runs it and
        returns its value."""
        from celeriac.canvas._replace import replacement  # noqa: PLC0415

        return self.on_replace(replacement(self, sig))

    def on_replace(self, sig: Signature) -> Any:
        """Send the replacement built by :meth:`replace` (a base class may override it
        and must call this one)."""
        from celeriac.canvas._replace import replaced  # noqa: PLC0415

        if self.request.is_eager:
            return sig.apply().get()
        sig.apply_async()
        raise replaced()

    async def areplace(self, sig: Signature | dict[str, Any]) -> Any:
        """``replace`` for ``async def`` tasks: ``return await self.areplace(sig)``."""
        from celeriac.canvas._replace import replaced, replacement  # noqa: PLC0415

        new = replacement(self, sig)
        if self.request.is_eager:
            return new.apply().get()
        await new.aapply_async()
        raise replaced()

    def add_to_chord(self, sig: Signature | dict[str, Any], lazy: bool = False) -> Any:
        """Add ``sig`` to the chord this task is a header member of (the body then gets
        its result too); sends it and returns its result, or with ``lazy`` returns the
        signature for the caller to send. ``ValueError`` outside a chord."""
        from celeriac.canvas._replace import chord_member, grow_chord  # noqa: PLC0415

        new = chord_member(self, sig)
        run_sync(grow_chord(self.app, str(self.request.group)))
        return new if lazy else new.delay()

    async def aadd_to_chord(self, sig: Signature | dict[str, Any], lazy: bool = False) -> Any:
        """``add_to_chord`` for ``async def`` tasks."""
        from celeriac.canvas._replace import chord_member, grow_chord  # noqa: PLC0415

        new = chord_member(self, sig)
        await grow_chord(self.app, str(self.request.group))
        return new if lazy else await new.adelay()

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        return AsyncResult(task_id, task_name=self.name, app=self.app)

    # -- context ------------------------------------------------------------
    @property
    def request(self) -> Context:
        return _current_request.get()

    # -- hooks a base class may override (Celery's names) -------------------
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Called before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called after the task returned."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called after the task raised."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called when the task is to be retried."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called after the task finished, whatever the outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


def make_task_class(
    fn: Callable[..., Any],
    task_name: str,
    app: Celeriac,
    base: type[Task[Any, Any]],
    opts: dict[str, Any],
) -> type[Task[Any, Any]]:
    name = task_name
    unknown = set(opts) - TASK_OPTIONS
    if unknown:
        import difflib  # noqa: PLC0415

        bad = sorted(unknown)[0]
        near = difflib.get_close_matches(bad, TASK_OPTIONS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise TypeError(f"@task got an unknown option {bad!r} for {name}{hint}")
    _check_options(name, opts)
    run, models = _pydantic.wrap(fn, app, name, opts)
    attrs: dict[str, Any] = {
        "name": name,
        "_bound_app": app,
        "_fn": staticmethod(run),
        "_pydantic_models": models,
        "is_async": inspect.iscoroutinefunction(fn),
        "__doc__": fn.__doc__,
        "__module__": fn.__module__,
        "__qualname__": getattr(fn, "__qualname__", name),
        "__wrapped__": fn,
    }
    for key, value in opts.items():
        if key in _NOT_ATTRIBUTES:
            continue
        attrs[key] = tuple(value) if key in {"autoretry_for", "throws"} else value
    return type(fn.__name__, (base,), attrs)


def register_class_task(app: Celeriac, task: Any, options: dict[str, Any]) -> Task[Any, Any]:
    """``app.register_task``: bind a class-based task (or its class) to ``app``."""
    if isinstance(task, type):
        task = task()
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a Task instance or class, not {task!r}")
    cls = type(task)
    if not task.name:
        task.name = app.gen_task_name(cls.__name__, cls.__module__)
    unknown = set(options) - TASK_OPTIONS
    if unknown:
        raise TypeError(f"register_task got unknown option(s) {sorted(unknown)} for {task.name}")
    _check_options(task.name, options)
    if any(options.get(key) for key in _pydantic.OPTIONS):
        raise ImproperlyConfigured(
            f"register_task({task.name}): pydantic options apply to function tasks "
            "(@app.task(pydantic=True)); validate models in the class's run()"
        )
    for key, value in options.items():
        if key not in _NOT_ATTRIBUTES:
            setattr(task, key, tuple(value) if key in {"autoretry_for", "throws"} else value)
    task.app = app
    if "_fn" not in cls.__dict__ and inspect.iscoroutinefunction(cls.run):
        task.is_async = True
    return task


def _check_options(name: str, opts: dict[str, Any]) -> None:
    """Bad option values fail when the task is defined, naming the option."""
    from celeriac._rates import parse_rate  # noqa: PLC0415

    if opts.get("rate_limit") is not None:
        parse_rate(opts["rate_limit"])
    scope = opts.get("rate_limit_scope", "worker")
    if scope not in {"worker", "global"}:
        raise ImproperlyConfigured(
            f"task {name}: rate_limit_scope={scope!r} is invalid: use 'worker' or 'global'"
        )


__all__ = ["Context", "Task"]
