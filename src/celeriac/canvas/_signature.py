"""``Signature``: a task call as a dict, exactly as Celery puts it on the wire.

A signature is ``{"task", "args", "kwargs", "options", "subtask_type", "immutable"}``
(a ``dict`` subclass, so it JSON-encodes as itself). Composite primitives (chain, group,
chord, chunks, xmap, xstarmap) are signatures too, told apart by ``subtask_type``, and
:func:`signature` turns any such dict back into the right class.

Sending is ``_build`` (messages into an :class:`Emit`), then ``Emit.send`` (chord sizes,
then one ``Broker.publish_many``): one broker round trip per call. Design notes:
``docs/internals/canvas.md``.
"""

from __future__ import annotations

import contextvars
import copy
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac._loop import run_sync
from celeriac.protocol.stamps import keep_stamps, stamp_options
from celeriac.result import AsyncResult, ResultBase
from celeriac.task import Task, _current_request

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.protocol import Message
    from celeriac.transports.backend import ResultBackend
    from celeriac.transports.broker import Broker

    PublishItem = tuple[str, Message, int, float | None]

#: Options that place a signature inside a group or chord; a composite hands them to
#: its "leaf" (the last step of a chain, the body of a chord).
LEAF_OPTIONS = ("group_id", "group_index", "chord")


def new_id() -> str:
    return str(uuid.uuid4())


def plain(value: Any) -> Any:
    """``value`` with every signature turned into a plain dict and tuples into lists
    (what goes into a message)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def result_ttl(app: Celeriac) -> float | None:
    value = app.conf["result_expires"]
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return float(value) if value else None


class Emit:
    """Messages (and chord sizes) a signature produced, sent together by :meth:`send`."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self.items: list[PublishItem] = []
        self.chord_starts: list[tuple[str, int]] = []

    def task(self, name: str, args: Sequence[Any], kwargs: dict[str, Any], options: Any) -> None:
        self.items.append(self.app._prepare(name, args, kwargs, dict(options)))

    def chord_start(self, group_id: str, size: int) -> None:
        self.chord_starts.append((group_id, size))

    async def start_chords(self, backend: ResultBackend | None = None) -> None:
        if self.chord_starts:
            backend = backend or await self.app.get_backend()
            ttl = result_ttl(self.app)
            for group_id, size in self.chord_starts:
                await backend.chord_start(group_id, size, ttl)

    async def send(
        self, broker: Broker | None = None, backend: ResultBackend | None = None
    ) -> None:
        """Record chord sizes, then publish every message in one ``publish_many``."""
        await self.start_chords(backend)
        if not self.items:
            return
        token = _EMITTING.set(True)
        try:
            for queue, message, _, _ in self.items:
                for mw in self.app.middleware:
                    mw.before_publish(self.app, message, queue)
            broker = broker or await self.app.get_broker()
            await broker.publish_many(self.items)
            for queue, message, _, _ in self.items:
                for mw in self.app.middleware:
                    mw.after_publish(self.app, message, queue)
        finally:
            _EMITTING.reset(token)


# -- children of the running task ------------------------------------------------
#: True while an :class:`Emit` publishes (its messages are recorded as one child).
_EMITTING: contextvars.ContextVar[bool] = contextvars.ContextVar("celeriac_emit", default=False)
#: Result tuples of what a running task sent, by ``id()`` of its request.
SENT: dict[int, list[Any]] = {}


def record_child(result: ResultBase | tuple[Any, ...]) -> None:
    """Remember ``result`` as a child of the task running in this context (if any), for
    the ``children`` of its stored result."""
    request = _current_request.get()
    if request.called_directly or request.is_eager or request.id is None:
        return
    item = result.as_tuple() if isinstance(result, ResultBase) else result
    SENT.setdefault(id(request), []).append(plain(item))


def emitting() -> bool:
    return _EMITTING.get()


# -- signatures ------------------------------------------------------------------
class Signature(dict[str, Any]):
    """A task call with (partial) arguments and options: ``add.s(2)``,
    ``signature("tasks.add", (2, 2), countdown=10)``."""

    #: subtask_type -> class, for :func:`signature`
    TYPES: ClassVar[dict[str, type[Signature]]] = {}

    _app: Celeriac | None

    def __init__(
        self,
        task: str | Task[Any, Any] | dict[str, Any] | None = None,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        type: Task[Any, Any] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: Celeriac | None = None,
        **ex: Any,
    ) -> None:
        self._app = app
        if isinstance(task, dict):
            super().__init__(task)
            if app is None and isinstance(task, Signature):
                self._app = task._app
            return
        if isinstance(task, Task):
            name = task.name
            self._app = app or task.app
        elif type is not None:
            name = type.name
            self._app = app or type.app
        else:
            name = str(task) if task is not None else ""
        super().__init__(
            task=name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **ex},
            subtask_type=subtask_type,
            immutable=immutable,
        )

    @classmethod
    def register_type(cls, name: str) -> Callable[[type[Signature]], type[Signature]]:
        def register(subclass: type[Signature]) -> type[Signature]:
            cls.TYPES[name] = subclass
            return subclass

        return register

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celeriac | None = None) -> Signature:
        """The signature a dict describes, as the class its ``subtask_type`` names."""
        kind = d.get("subtask_type")
        target = cls.TYPES.get(kind) if kind else None
        sig = (target or Signature).__new__(target or Signature)
        dict.__init__(sig, d)
        sig._app = app if app is not None else getattr(d, "_app", None)
        sig.setdefault("args", ())
        sig.setdefault("kwargs", {})
        sig.setdefault("options", {})
        sig.setdefault("immutable", False)
        sig.setdefault("subtask_type", None)
        sig._adopt()
        return sig

    def _adopt(self) -> None:
        """Turn nested dicts (members, steps, body) into signatures."""

    # -- the wire fields as attributes ------------------------------------------
    @property
    def task(self) -> str:
        return str(self.get("task") or "")

    @task.setter
    def task(self, value: str) -> None:
        self["task"] = value

    name = task

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self.get("args") or ())

    @args.setter
    def args(self, value: Iterable[Any]) -> None:
        self["args"] = tuple(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        value = self.get("kwargs")
        if value is None:
            value = self["kwargs"] = {}
        return value

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self["kwargs"] = value

    @property
    def options(self) -> dict[str, Any]:
        value = self.get("options")
        if value is None:
            value = self["options"] = {}
        return value

    @options.setter
    def options(self, value: dict[str, Any]) -> None:
        self["options"] = value

    @property
    def subtask_type(self) -> str | None:
        value = self.get("subtask_type")
        return str(value) if value else None

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def id(self) -> str | None:
        """The pre-assigned task id (``freeze()``), if any."""
        value = self.options.get("task_id")
        return str(value) if value else None

    @property
    def app(self) -> Celeriac:
        if self._app is not None:
            return self._app
        from celeriac.app import current_app  # noqa: PLC0415

        return current_app()

    @app.setter
    def app(self, value: Celeriac | None) -> None:
        self._app = value

    @property
    def type(self) -> Task[Any, Any]:
        """The registered task (raises ``NotRegistered`` when this app has none)."""
        from celeriac.exceptions import NotRegistered  # noqa: PLC0415

        task = self.app.tasks.get(self.task)
        if task is None:
            raise NotRegistered(self.task)
        return task

    # -- copying and options ----------------------------------------------------
    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return Signature.from_dict(copy.deepcopy(dict(self), memo), app=self._app)

    def __copy__(self) -> Signature:
        return Signature.from_dict(dict(self), app=self._app)

    def __reduce__(self) -> Any:
        return (_rebuild, (dict(self),))

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A deep copy, with partial ``args`` prepended, ``kwargs`` and options merged
        (arguments are ignored for an immutable signature)."""
        sig = copy.deepcopy(self)
        if args or kwargs:
            sig["args"], sig["kwargs"] = self._merge(args or (), kwargs or {})
        if options:
            sig.options.update(keep_stamps(self.options, options))
        return sig

    partial = clone

    def replace(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Signature:
        """A copy with ``args``, ``kwargs`` or ``options`` replaced (not merged)."""
        sig = self.clone()
        if args is not None:
            sig["args"] = tuple(args)
        if kwargs is not None:
            sig["kwargs"] = dict(kwargs)
        if options is not None:
            sig["options"] = dict(options)
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options in place (``sig.set(countdown=10)``); returns the signature."""
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> Any:
        """Stamp it (a composite: what it holds) with ``headers`` and the stamps
        ``visitor`` (a ``StampingVisitor``) gives; see ``celeriac.canvas._stamping``."""
        from celeriac.canvas._stamping import stamp  # noqa: PLC0415

        return stamp(self, visitor, append_stamps, headers)

    def stamp_links(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        """Stamp its callbacks and errbacks only."""
        from celeriac.canvas._stamping import stamp_links  # noqa: PLC0415

        stamp_links(self, visitor, append_stamps, headers)

    def _merge(
        self, args: Iterable[Any], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.immutable:
            return self.args, dict(self.kwargs)
        return (*tuple(args), *self.args), {**self.kwargs, **kwargs}

    def link(self, callback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        """Run ``callback`` with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        """Call ``errback`` when this task fails: ``errback(request, exc, traceback)`` in
        the worker, or (if it takes one argument) sent as a task with the failed id."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature | dict[str, Any]) -> Signature:
        self.link_error(errback)
        return self

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultBase:
        """Assign the task id now (in place) and return the result it will have."""
        opts = self.options
        if _id is not None:
            opts["task_id"] = _id
        elif not opts.get("task_id"):
            opts["task_id"] = new_id()
        for key, value in (
            ("group_id", group_id),
            ("chord", chord),
            ("root_id", root_id),
            ("parent_id", parent_id),
            ("group_index", group_index),
        ):
            if value is not None:
                opts[key] = plain(value) if key == "chord" else value
        if "reply_to" not in opts:  # as Celery: the freezing client's reply queue, so a
            opts["reply_to"] = self.app.reply_to  # step sent by a worker answers it (rpc)
        return AsyncResult(str(opts["task_id"]), app=self.app, task_name=self.task)

    # -- composing ---------------------------------------------------------------
    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        from celeriac.canvas._primitives import chain  # noqa: PLC0415

        if isinstance(other, Signature):
            if isinstance(other, chain):
                return chain(self, *other.tasks, app=self._app)
            return chain(self, other, app=self._app)
        return NotImplemented

    def __repr__(self) -> str:
        args = ", ".join(
            [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        )
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    # -- placing it in a workflow -------------------------------------------------
    def set_leaf(self, options: dict[str, Any]) -> None:
        """Take the group/chord membership options meant for this call's result."""
        self.options.update(options)

    def attach_chain(self, steps: list[Any]) -> None:
        """Run ``steps`` (Celery's reversed ``chain`` list) after this one."""
        own = list(self.options.get("chain") or [])
        self.options["chain"] = [*steps, *own]

    def result_ids(self) -> list[str]:
        """Ids of the results a caller waits on (frozen ids only)."""
        return [self.id] if self.id else []

    # -- calling -------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function here, with the partial arguments merged."""
        merged_args, merged_kwargs = self._merge(args, kwargs)
        return self.type(*merged_args, **merged_kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send it with these extra arguments."""
        return self.apply_async(args, kwargs)

    def __invert__(self) -> Any:
        """``~sig``: send it and wait for its value (``sig.apply_async().get()``), the
        shorthand of Celery's Canvas guide."""
        return self.apply_async().get()

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Send it (every message of a composite in one round trip); returns its result."""
        app = self.app
        if app.conf["task_always_eager"]:
            return self.apply(args, kwargs, **options)
        emit = Emit(app)
        result = self.clone()._build(emit, tuple(args or ()), dict(kwargs or {}), options)
        run_sync(emit.send())
        record_child(result)
        return result

    async def aapply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """``apply_async`` for asyncio code."""
        emit = Emit(self.app)
        result = self.clone()._build(emit, tuple(args or ()), dict(kwargs or {}), options)
        await emit.send()
        record_child(result)
        return result

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        return await self.aapply_async(args, kwargs)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run it here and now (no broker); returns an ``EagerResult``."""
        merged_args, merged_kwargs = self._merge(args or (), kwargs or {})
        opts = {**self.options, **options}
        task_id = opts.get("task_id")
        return self.type.apply(merged_args, merged_kwargs, task_id=task_id, **stamp_options(opts))

    def _build(
        self, emit: Emit, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultBase:
        """Add this call's message to ``emit``; ``self`` is a private copy."""
        merged_args, merged_kwargs = self._merge(args, kwargs)
        outer = options.get("chain")
        given = keep_stamps(self.options, options)
        opts = {**self.options, **{k: v for k, v in given.items() if k != "chain"}}
        if outer:
            opts["chain"] = [*outer, *(self.options.get("chain") or [])]
        for key in ("link", "link_error", "chain", "chord"):
            if opts.get(key) is not None:
                opts[key] = plain(opts[key])
        task_id = opts.get("task_id") or new_id()
        opts["task_id"] = task_id
        emit.task(self.task, merged_args, merged_kwargs, opts)
        return AsyncResult(str(task_id), app=emit.app, task_name=self.task)


def _rebuild(d: dict[str, Any]) -> Signature:
    return Signature.from_dict(d)


def signature(varies: Any, *args: Any, app: Celeriac | None = None, **kwargs: Any) -> Signature:
    """A signature from a task name (and arguments), a task, or a signature dict."""
    if isinstance(varies, dict):
        if isinstance(varies, Signature):
            if app is not None and varies._app is None:
                varies._app = app
            return varies
        return Signature.from_dict(varies, app=app)
    sig = Signature(varies, *args, **kwargs)
    if app is not None:
        sig._app = app
    return sig


subtask = signature


def maybe_signature(d: Any, app: Celeriac | None = None, clone: bool = False) -> Any:
    """``d`` as a signature if it is a dict (None stays None)."""
    if d is None:
        return None
    if isinstance(d, dict):
        sig = signature(d, app=app)
        return sig.clone() if clone else sig
    return d


__all__ = [
    "LEAF_OPTIONS",
    "SENT",
    "Emit",
    "Signature",
    "maybe_signature",
    "new_id",
    "plain",
    "record_child",
    "result_ttl",
    "signature",
    "subtask",
]
