"""``ResultSet`` and ``GroupResult``: the results of a group, waited for together.

Import them from :mod:`celeriac.result` (their public home, and their ``__module__``);
this module builds on :class:`~celeriac.result.AsyncResult` and is imported by it. How
a set waits: ``docs/internals/results.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._loop import run_sync
from celeriac._waiting import Watch, assert_will_not_block, check_no_ack
from celeriac.exceptions import ImproperlyConfigured, TimeoutError
from celeriac.result import AsyncResult, ResultBase, exception_from_meta, result_from_tuple

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class ResultSet(ResultBase):
    """Several results, waited for together: ``get``/``join`` return their values in
    order (a nested :class:`GroupResult` gives a nested list)."""

    __module__ = "celeriac.result"  # its public home (re-exported there)

    supports_native_join = True

    def __init__(
        self,
        results: Sequence[ResultBase] | None = None,
        app: Celeriac | None = None,
        **_ignored: Any,
    ) -> None:
        if app is None:
            from celeriac.app import current_app  # noqa: PLC0415

            app = current_app()
        self.app = app
        self.results: list[ResultBase] = list(results or [])
        self.id = None
        self.parent = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(str(r.id) for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ResultBase]:
        return iter(self.results)

    def __getitem__(self, index: int) -> ResultBase:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def add(self, result: ResultBase) -> None:
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: ResultBase | str) -> None:
        found = [r for r in self.results if result in (r, r.id)]
        if not found:
            raise KeyError(result)
        self.results.remove(found[0])

    def discard(self, result: ResultBase | str) -> None:
        if any(result in (r, r.id) for r in self.results):
            self.remove(result)

    def update(self, results: Sequence[ResultBase]) -> None:
        for result in results:
            self.add(result)

    def clear(self) -> None:
        self.results.clear()

    @property
    def children(self) -> list[ResultBase]:
        return self.results

    def leaves(self) -> list[AsyncResult[Any]]:
        """The task results in order, nested sets flattened."""
        out: list[AsyncResult[Any]] = []
        for result in self.results:
            if isinstance(result, ResultSet):
                out.extend(result.leaves())
            elif isinstance(result, AsyncResult):
                out.append(result)
        return out

    # -- state --------------------------------------------------------------
    def _metas(self) -> dict[str, dict[str, Any]]:
        """The metas of the leaves, read in one call (cached ones reused)."""
        leaves = self.leaves()
        metas = {r.id: r._meta for r in leaves if r._meta is not None}
        missing = list(dict.fromkeys(r.id for r in leaves if r.id not in metas))
        if missing:
            metas.update(run_sync(_get_many(self.app, missing)))
        return {k: v for k, v in metas.items() if v is not None}

    def _states(self) -> list[str]:
        metas = self._metas()
        return [str(metas.get(r.id, {}).get("status", states.PENDING)) for r in self.leaves()]

    def ready(self) -> bool:
        """True when every task has finished (successfully or not)."""
        return all(state in states.READY_STATES for state in self._states())

    def successful(self) -> bool:
        """True when every task succeeded."""
        return all(state == states.SUCCESS for state in self._states())

    def failed(self) -> bool:
        """True when any task failed."""
        return any(state == states.FAILURE for state in self._states())

    def waiting(self) -> bool:
        """True when any task has not finished yet."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many tasks succeeded."""
        return sum(state == states.SUCCESS for state in self._states())

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        **_ignored: Any,
    ) -> None:
        """Revoke every task of the set (``terminate``: stop running ones)."""
        control = getattr(self.app, "control", None)
        if control is None:
            raise NotImplementedError("revoking needs app.control (remote control)")
        for result in self.leaves():
            result._meta = None
        control.revoke([r.id for r in self.leaves()], terminate=terminate, signal=signal)

    def forget(self) -> None:
        """Delete every task's stored result."""
        for result in self.leaves():
            result.forget()

    # -- waiting ------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], Any] | None = None,
    ) -> list[Any] | None:
        """Wait for every task; return their values in order. With ``propagate`` the
        first failure (in order) is raised as soon as it is known. Celery's other options
        (``callback(task_id, value)`` per task as it finishes, then None is returned;
        ``on_message``, ``on_interval``, ``disable_sync_subtasks``): :mod:`celeriac._waiting`.
        """
        return self.join_native(
            timeout,
            propagate,
            interval,
            callback,
            no_ack,
            on_message,
            on_interval,
            disable_sync_subtasks,
        )

    def join_native(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any] | None:
        """``get``: the tasks waited for together; with ``callback``, each is reported
        as it finishes (in any order) and None is returned, as Celery's."""
        if disable_sync_subtasks:
            assert_will_not_block()
        check_no_ack(no_ack)
        if callback is None and on_message is None and on_interval is None:
            return run_sync(self.aget(timeout, propagate, interval, disable_sync_subtasks=False))
        watch = Watch(repr(self), timeout, interval, on_message, on_interval, None)
        self._join_watching(watch, propagate, callback)
        return None if callback is not None else self._values(propagate)

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], Any] | None = None,
    ) -> list[Any]:
        """The tasks waited for one after the other, in order (``callback`` called in
        order, and an empty list returned); Celery's ``join`` takes no ``on_message``."""
        if on_message is not None:
            raise ImproperlyConfigured("Backend does not support on_message callback")
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[Any] = []
        for result in self.results:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            value = result.get(  # type: ignore[attr-defined]
                timeout=left,
                propagate=propagate,
                interval=interval,
                no_ack=no_ack,
                on_interval=on_interval,
                disable_sync_subtasks=False,
            )
            if callback is not None:
                callback(str(result.id), value)
            else:
                values.append(value)
        return values

    def _join_watching(
        self, watch: Watch, propagate: bool, callback: Callable[[str, Any], Any] | None
    ) -> None:
        """Wait in slices (see :class:`Watch`): each task's new states go to
        ``on_message``, each finished member to ``callback`` (a failure raised first with
        ``propagate``), and ``on_interval`` is called between slices."""
        leaves = self.leaves()
        metas: dict[str, dict[str, Any]] = {r.id: r._meta for r in leaves if r._meta}
        seen: dict[str, Any] = {}
        reported: set[int] = set()
        while True:
            pending = list(dict.fromkeys(r.id for r in leaves if r.id not in metas))
            if pending and watch.on_message is not None:
                metas.update(_report_states(self.app, pending, seen, watch.on_message))
            step = watch.slice()
            pending = [task_id for task_id in pending if task_id not in metas]
            if pending and step > 0:
                metas.update(run_sync(_wait_round(self.app, pending, step)))
            for result in leaves:
                if result.id in metas:
                    result._set_meta(metas[result.id])
            for index, member in enumerate(self.results):
                if index not in reported and _member_ready(member, metas):
                    reported.add(index)
                    value = _member_value(member, propagate)
                    if callback is not None:
                        callback(str(member.id), value)
            if propagate and callback is None:
                _raise_first_failure(leaves, metas)
            if len(reported) == len(self.results):
                return
            watch.after_slice()

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """``get`` for asyncio code (``disable_sync_subtasks`` as ``get``'s).

        Waits through ``backend.wait`` (push-based where the backend allows), one id at a
        time: the unfinished task that comes last in order, which tends to finish last,
        so each wake-up is followed by one read of every unfinished task and a few rounds
        settle even a large group.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        leaves = self.leaves()
        deadline = None if timeout is None else time.monotonic() + timeout
        metas: dict[str, dict[str, Any]] = {r.id: r._meta for r in leaves if r._meta}
        pending = list(dict.fromkeys(r.id for r in leaves if r.id not in metas))
        if pending:
            backend = await self.app.get_backend()
            metas.update(_ready_only(await backend.get_many(pending)))
        while True:
            pending = [task_id for task_id in pending if task_id not in metas]
            if propagate:
                _raise_first_failure(leaves, metas)
            if not pending:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(pending)} task(s) did not finish within {timeout}s")
            found = await backend.wait([pending[-1]], left, interval=min(interval, 0.05))
            if not found:
                raise TimeoutError(f"{len(pending)} task(s) did not finish within {timeout}s")
            metas.update(found)
            rest = [task_id for task_id in pending if task_id not in metas]
            if rest:
                metas.update(_ready_only(await backend.get_many(rest)))
        for result in leaves:
            result._set_meta(metas[result.id])
        return self._values(propagate)

    def _values(self, propagate: bool) -> list[Any]:
        values: list[Any] = []
        for result in self.results:
            if isinstance(result, ResultSet):
                values.append(result._values(propagate))
            elif isinstance(result, AsyncResult):
                assert result._meta is not None
                values.append(result._outcome(result._meta, propagate))
        return values


async def _get_many(app: Celeriac, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    return await (await app.get_backend()).get_many(task_ids)


def _report_states(
    app: Celeriac,
    task_ids: list[str],
    seen: dict[str, Any],
    on_message: Callable[[dict[str, Any]], Any],
) -> dict[str, dict[str, Any]]:
    """Read the tasks' states, call ``on_message`` with each one that changed since it
    was last ``seen``; the ready ones are returned."""
    ready: dict[str, dict[str, Any]] = {}
    for task_id, meta in run_sync(_get_many(app, task_ids)).items():
        shown = (meta.get("status"), meta.get("result"), meta.get("date_done"))
        if seen.get(task_id) != shown:
            seen[task_id] = shown
            on_message(meta)
        if meta.get("status") in states.READY_STATES:
            ready[task_id] = meta
    return ready


async def _wait_round(app: Celeriac, task_ids: list[str], step: float) -> dict[str, dict[str, Any]]:
    """The ready metas after waiting up to ``step`` for the last of ``task_ids``."""
    backend = await app.get_backend()
    found = dict(await backend.wait([task_ids[-1]], step, interval=min(step, 0.05)))
    rest = [task_id for task_id in task_ids if task_id not in found]
    if rest:
        found.update(_ready_only(await backend.get_many(rest)))
    return found


def _member_ready(member: ResultBase, metas: dict[str, dict[str, Any]]) -> bool:
    if isinstance(member, ResultSet):
        return all(leaf.id in metas for leaf in member.leaves())
    return member.id in metas


def _member_value(member: ResultBase, propagate: bool) -> Any:
    """A finished member's value (raising its failure with ``propagate``)."""
    if isinstance(member, ResultSet):
        return member._values(propagate)
    assert isinstance(member, AsyncResult) and member._meta is not None
    return member._outcome(member._meta, propagate)


def _ready_only(metas: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in metas.items() if v.get("status") in states.READY_STATES}


def _raise_first_failure(leaves: list[AsyncResult[Any]], metas: dict[str, dict[str, Any]]) -> None:
    """Raise the first failure in order, once every task before it has succeeded."""
    for result in leaves:
        meta = metas.get(result.id)
        if meta is None:
            return
        if meta.get("status") in states.PROPAGATE_STATES:
            result._set_meta(meta)
            raise exception_from_meta(meta)


class GroupResult(ResultSet):
    """The results of a group, under the group's id; ``save()`` stores it in the backend
    as Celery does (``celery-taskset-meta-<id>``) so any process can ``restore(id)`` it."""

    __module__ = "celeriac.result"  # its public home (re-exported there)

    def __init__(
        self,
        id: str | None = None,
        results: Sequence[ResultBase] | None = None,
        parent: ResultBase | None = None,
        app: Celeriac | None = None,
        **_ignored: Any,
    ) -> None:
        super().__init__(results, app=app)
        self.id = id
        self.parent = parent

    def __repr__(self) -> str:
        members = ", ".join(str(r.id) for r in self.results)
        return f"<GroupResult: {self.id} [{members}]>"

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self.id)

    def as_tuple(self) -> tuple[Any, ...]:
        """Celery's group tuple: ``((id, parent_tuple_or_None), [member tuples])``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), [r.as_tuple() for r in self.results])

    def save(self, backend: Any = None) -> GroupResult:
        """Store the group (its members' ids) so it can be restored by id."""
        run_sync(self.asave())
        return self

    async def asave(self) -> None:
        if self.id is None:
            raise ValueError("a GroupResult needs an id to be saved")
        backend = await self.app.get_backend()
        ttl = self.app.conf["result_expires"] or None
        meta = {"result": _jsonable(self.as_tuple())}
        await backend.save_group(self.id, meta, float(ttl) if ttl is not None else None)

    def delete(self, backend: Any = None) -> None:
        """Delete the saved group (not its members' results)."""

        async def delete() -> None:
            assert self.id is not None
            await (await self.app.get_backend()).forget_group(self.id)

        run_sync(delete())

    def forget(self) -> None:
        """Delete the saved group and every member's result."""
        super().forget()
        self.delete()

    @classmethod
    def restore(
        cls, id: str, backend: Any = None, app: Celeriac | None = None
    ) -> GroupResult | None:
        """The group saved under ``id`` (by any process), or None."""
        return run_sync(cls.arestore(id, app=app))

    @classmethod
    async def arestore(cls, id: str, app: Celeriac | None = None) -> GroupResult | None:
        if app is None:
            from celeriac.app import current_app  # noqa: PLC0415

            app = current_app()
        meta = await (await app.get_backend()).restore_group(id)
        if meta is None or meta.get("result") is None:
            return None
        result = result_from_tuple(meta["result"], app)
        if not isinstance(result, GroupResult):
            raise ValueError(f"saved group {id} is not a group result: {meta!r}")
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(item) for item in value]
    return value
