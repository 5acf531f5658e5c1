"""Task results: ``AsyncResult`` (stored by a worker), ``EagerResult`` (run locally), and
the result sets of canvas, ``ResultSet`` and ``GroupResult`` (written in ``_result_sets``,
public here). How results are read and waited for: ``docs/internals/results.md``."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from celeriac import states
from celeriac._loop import run_sync
from celeriac._waiting import (
    Watch,
    allow_join_result,
    assert_will_not_block,
    check_no_ack,
    denied_join_result,
)
from celeriac.exceptions import IncompleteStream, TaskRevokedError, TimeoutError
from celeriac.protocol import decode_exception
from celeriac.transports import sync_waiter

if TYPE_CHECKING:
    from celeriac._graph import DependencyGraph
    from celeriac.app import Celeriac

R = TypeVar("R")


def _attach_traceback(exc: BaseException, traceback: str | None) -> BaseException:
    if traceback:
        note = "Remote traceback (from the worker):\n" + traceback.rstrip()
        if sys.version_info >= (3, 11):
            exc.add_note(note)
        else:  # pragma: no cover - Python 3.10
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
    return exc


def exception_from_meta(meta: dict[str, Any]) -> BaseException:
    """The exception a FAILURE/REVOKED meta describes, with the remote traceback noted."""
    if meta.get("status") == states.REVOKED:
        reason = meta.get("result") or {}
        message = reason.get("exc_message") if isinstance(reason, dict) else None
        text = message[0] if isinstance(message, list) and message else "revoked"
        return TaskRevokedError(f"task {meta.get('task_id')} {text}")
    return _attach_traceback(decode_exception(meta.get("result")), meta.get("traceback"))


#: ``get``'s default EXCEPTION_STATES and PROPAGATE_STATES
_DEFAULT_STATES: tuple[Collection[str], Collection[str]] = (
    states.EXCEPTION_STATES,
    states.PROPAGATE_STATES,
)


class ResultBase:
    """What every result has: the result it came from (``parent``) and a tuple form."""

    id: str | None
    parent: ResultBase | None
    app: Celeriac

    def as_tuple(self) -> tuple[Any, ...]:
        raise NotImplementedError


class AsyncResult(ResultBase, Generic[R]):
    """A handle on a task's result in the result backend."""

    id: str

    def __init__(
        self,
        id: str,
        backend: Any = None,
        task_name: str | None = None,
        app: Celeriac | None = None,
        parent: ResultBase | None = None,
    ) -> None:
        if app is None:
            from celeriac.app import current_app  # noqa: PLC0415

            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        #: True when the task was sent with ``ignore_result``: nothing will be stored, so
        #: ``get()`` returns None at once instead of waiting (as Celery's does)
        self.ignored = False
        self._meta: dict[str, Any] | None = None

    task_id = property(lambda self: self.id)

    @property
    def backend(self) -> Any:
        """The app's result backend (``app.backend``), as Celery's."""
        return self.app.backend

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    # -- state --------------------------------------------------------------
    def _get_meta(self) -> dict[str, Any]:
        if self._meta is not None:
            return self._meta
        meta = run_sync(self.app.backend_get(self.id)) or {
            "status": states.PENDING,
            "result": None,
            "traceback": None,
            "task_id": self.id,
        }
        if meta.get("status") in states.READY_STATES:
            self._meta = meta
        return meta

    def _set_meta(self, meta: dict[str, Any]) -> None:
        if meta.get("status") in states.READY_STATES:
            self._meta = meta

    @property
    def state(self) -> str:
        return str(self._get_meta().get("status", states.PENDING))

    status = state

    @property
    def info(self) -> Any:
        meta = self._get_meta()
        if meta.get("status") in states.EXCEPTION_STATES:
            return exception_from_meta(meta)
        return meta.get("result")

    result = info

    @property
    def traceback(self) -> str | None:
        value = self._get_meta().get("traceback")
        return value if isinstance(value, str) else None

    @property
    def date_done(self) -> datetime | None:
        value = self._get_meta().get("date_done")
        if isinstance(value, str):
            return datetime.fromisoformat(value)
        return value if isinstance(value, datetime) else None

    @property
    def children(self) -> list[ResultBase] | None:
        """Results of the tasks this one sent (callbacks, next chain step), from the
        ``children`` result tuples of its meta."""
        value = self._get_meta().get("children")
        if not isinstance(value, list):
            return None
        return [result_from_tuple(item, self.app) for item in value]

    def as_tuple(self) -> tuple[Any, ...]:
        """Celery's result tuple: ``((id, parent_tuple_or_None), None)``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), None)

    def iterdeps(
        self, intermediate: bool = False
    ) -> Iterator[tuple[ResultBase | None, ResultBase]]:
        """``(parent, node)`` for this result and its descendants (breadth first);
        raises :class:`IncompleteStream` at an unfinished node unless ``intermediate``."""
        stack: deque[tuple[ResultBase | None, ResultBase]] = deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if _ready(node):
                stack.extend((node, child) for child in _children(node))
            elif not intermediate:
                raise IncompleteStream(f"result {node.id} is not ready yet")

    @property
    def graph(self) -> DependencyGraph:
        """This result and its descendants as a :class:`DependencyGraph`."""
        return self.build_graph()

    def build_graph(self, intermediate: bool = False) -> DependencyGraph:
        from celeriac._graph import DependencyGraph  # noqa: PLC0415

        graph = DependencyGraph()
        for parent, node in self.iterdeps(intermediate=intermediate):
            graph.add_arc(node)
            if parent is not None:
                graph.add_edge(parent, node)
        return graph

    def collect(
        self, intermediate: bool = False, **kwargs: Any
    ) -> Iterator[tuple[ResultBase, Any]]:
        """``(result, value)`` for this result and every result it led to (children of
        callbacks, chains, groups), breadth first."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)  # type: ignore[attr-defined]

    def get_leaf(self) -> Any:
        """The value at the end of the children graph (the last task of a workflow)."""
        value = None
        for _, node in self.iterdeps():
            value = node.get()  # type: ignore[attr-defined]
        return value

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def forget(self) -> None:
        self._meta = None
        run_sync(self.app.backend_forget(self.id))

    def revoke(self, terminate: bool = False, signal: str | None = None, **_: Any) -> None:
        """Revoke the task: it will not run; ``terminate=True`` stops it if running."""
        self._meta = None
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    # -- waiting ------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: Collection[str] = states.EXCEPTION_STATES,
        PROPAGATE_STATES: Collection[str] = states.PROPAGATE_STATES,
    ) -> R:
        """Wait for the result and return it; re-raise the task's exception if it failed.
        None at once for a task sent with ``ignore_result`` (no result will come). The
        other options are Celery's: see :mod:`celeriac._waiting`."""
        if self.ignored:
            return cast(R, None)
        if disable_sync_subtasks:
            assert_will_not_block()
        check_no_ack(no_ack)
        states_ = (EXCEPTION_STATES, PROPAGATE_STATES)
        parents = follow_parents and propagate and self.parent is not None
        if parents:
            self._raise_parent_failure()
        if self._meta is not None:  # known already (Celery's cache path)
            return self._finish(self._meta, propagate, callback if propagate else None, states_)
        meta: dict[str, Any] | None
        if on_message is not None or on_interval is not None or parents:
            check = self._raise_parent_failure if parents else None
            watch = Watch(self.id, timeout, interval, on_message, on_interval, check)
            meta = self._watch(watch)
        else:
            waiter = sync_waiter(self.app)
            if waiter is not None:  # the transport's sync fast path
                meta = waiter.wait(self.id, timeout)
            else:
                found = run_sync(self.app.backend_wait([self.id], timeout, interval))
                meta = found.get(self.id)
            if meta is None:
                raise TimeoutError(f"task {self.id} did not finish within {timeout}s")
        self._set_meta(meta)
        return self._finish(meta, propagate, callback, states_)

    wait = get

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: Collection[str] = states.EXCEPTION_STATES,
        PROPAGATE_STATES: Collection[str] = states.PROPAGATE_STATES,
    ) -> R:
        """``get`` for asyncio code (also available as ``await result``); the callbacks
        are called in the event loop's thread."""
        if self.ignored:
            return cast(R, None)
        if disable_sync_subtasks:
            assert_will_not_block()
        check_no_ack(no_ack)
        states_ = (EXCEPTION_STATES, PROPAGATE_STATES)
        parents = follow_parents and propagate and self.parent is not None
        if parents:
            await self._araise_parent_failure()
        if self._meta is not None:
            return self._finish(self._meta, propagate, callback if propagate else None, states_)
        meta: dict[str, Any] | None
        if on_message is not None or on_interval is not None or parents:
            watch = Watch(self.id, timeout, interval, on_message, on_interval, None)
            meta = await self._awatch(watch, parents)
        else:
            found = await self.app.backend_wait([self.id], timeout, interval)
            meta = found.get(self.id)
            if meta is None:
                raise TimeoutError(f"task {self.id} did not finish within {timeout}s")
        self._set_meta(meta)
        return self._finish(meta, propagate, callback, states_)

    def __await__(self) -> Generator[Any, None, R]:
        return self.aget().__await__()

    def _watch(self, watch: Watch) -> dict[str, Any]:
        while True:
            if watch.on_message is not None:
                meta = run_sync(self.app.backend_get(self.id))
                if meta is not None and watch.seen(meta, states.READY_STATES):
                    return meta
            step = watch.slice()
            if step > 0:
                found = run_sync(self.app.backend_wait([self.id], step, step))
                if self.id in found:
                    watch.seen(found[self.id], states.READY_STATES)
                    return found[self.id]
            watch.after_slice()

    async def _awatch(self, watch: Watch, parents: bool) -> dict[str, Any]:
        while True:
            if watch.on_message is not None:
                meta = await self.app.backend_get(self.id)
                if meta is not None and watch.seen(meta, states.READY_STATES):
                    return meta
            step = watch.slice()
            if step > 0:
                found = await self.app.backend_wait([self.id], step, step)
                if self.id in found:
                    watch.seen(found[self.id], states.READY_STATES)
                    return found[self.id]
            due = time.monotonic() >= watch.next_tick
            watch.after_slice()
            if due and parents:
                await self._araise_parent_failure()

    def _parents(self) -> list[ResultBase]:
        found: list[ResultBase] = []
        node = self.parent
        while node is not None and len(found) < 10_000:
            found.append(node)
            node = node.parent
        return found

    def _raise_parent_failure(self) -> None:
        """Celery's ``follow_parents``: the oldest failed parent raises its exception."""
        for node in reversed(self._parents()):
            maybe_throw = getattr(node, "maybe_throw", None)
            if maybe_throw is not None:
                maybe_throw()

    async def _araise_parent_failure(self) -> None:
        for node in reversed(self._parents()):
            if isinstance(node, AsyncResult):
                node._throw(await node._aget_meta())
            elif hasattr(node, "amaybe_throw"):
                await node.amaybe_throw()

    async def _aget_meta(self) -> dict[str, Any]:
        if self._meta is not None:
            return self._meta
        meta = await self.app.backend_get(self.id) or {"status": states.PENDING}
        self._set_meta(meta)
        return meta

    def maybe_throw(
        self, propagate: bool = True, callback: Callable[[str, Any], Any] | None = None
    ) -> Any:
        """Raise the task's exception if it failed (``propagate``); else return its value
        as it stands now (``callback(id, value)`` called with it), as Celery's."""
        meta = self._get_meta()
        return self._finish(meta, propagate, callback, _DEFAULT_STATES)

    maybe_reraise = maybe_throw

    def _throw(self, meta: dict[str, Any]) -> None:
        if meta.get("status") in states.PROPAGATE_STATES:
            raise exception_from_meta(meta)

    def _finish(
        self,
        meta: dict[str, Any],
        propagate: bool,
        callback: Callable[[str, Any], Any] | None,
        states_: tuple[Collection[str], Collection[str]] = _DEFAULT_STATES,
    ) -> R:
        exception_states, propagate_states = states_
        status = meta.get("status")
        if propagate and status in propagate_states:
            raise exception_from_meta(meta)
        if status in exception_states or status in propagate_states:
            value: Any = exception_from_meta(meta)
        else:
            value = meta.get("result")
        if callback is not None:
            callback(self.id, value)
        return cast(R, value)

    def _outcome(self, meta: dict[str, Any], propagate: bool) -> R:
        return self._finish(meta, propagate, None)


class EagerResult(AsyncResult[R]):
    """The result of ``Task.apply``: already known, nothing stored."""

    def __init__(
        self,
        id: str,
        retval: Any,
        state: str,
        traceback: str | None = None,
        app: Celeriac | None = None,
    ) -> None:
        super().__init__(id, app=app)
        self._retval = retval
        self._state = state
        self._traceback = traceback
        self._meta = {
            "status": state,
            "result": retval,
            "traceback": traceback,
            "task_id": id,
        }

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def info(self) -> Any:
        return self._retval

    result = info

    def forget(self) -> None:
        """Nothing is stored for an eager result."""

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: Collection[str] = states.EXCEPTION_STATES,
        PROPAGATE_STATES: Collection[str] = states.PROPAGATE_STATES,
    ) -> R:
        """The value (or the exception, raised with ``propagate``); it is known already,
        so nothing is waited for: ``on_message``/``on_interval`` are never called."""
        if disable_sync_subtasks:
            assert_will_not_block()
        check_no_ack(no_ack)
        failed = self._state in PROPAGATE_STATES and isinstance(self._retval, BaseException)
        if failed and propagate:
            raise self._retval
        if callback is not None:
            callback(self.id, self._retval)
        return cast(R, self._retval)

    wait = get


def _ready(node: ResultBase) -> bool:
    ready = getattr(node, "ready", None)
    return bool(ready()) if ready is not None else False


def _children(node: ResultBase) -> list[ResultBase]:
    return list(getattr(node, "children", None) or [])


def result_from_tuple(value: Any, app: Celeriac | None = None) -> ResultBase:
    """A result object from Celery's tuple form (``children``, saved groups):
    ``[[id, parent_tuple], None]`` for a task, ``[[group_id, parent], [members]]`` for a
    group."""
    if isinstance(value, ResultBase):
        return value
    try:
        (result_id, parent), nodes = value
    except (TypeError, ValueError):
        raise ValueError(f"not a result tuple: {value!r}") from None
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        members = [result_from_tuple(node, app) for node in nodes]
        return GroupResult(result_id, members, parent=parent_result, app=app)
    return AsyncResult(str(result_id), app=app, parent=parent_result)


# The sets build on AsyncResult, so their module imports this one and comes in last
# (result_from_tuple above needs GroupResult only when it is called).
from celeriac._result_sets import GroupResult, ResultSet  # noqa: E402

__all__ = [
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultBase",
    "ResultSet",
    "allow_join_result",
    "denied_join_result",
    "result_from_tuple",
]
