"""``ResultSet`` and ``GroupResult``: the results of a group, waited for together.

Import them from :mod:`celeriac.result` (their public home, and their ``__module__``);
this module builds on :class:`~celeriac.result.AsyncResult` and is imported by it. How
a set waits: ``docs/internals/results.md``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._loop import run_sync
from celeriac.exceptions import TimeoutError
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
        **_ignored: Any,
    ) -> list[Any]:
        """Wait for every task; return their values in order. With ``propagate`` the
        first failure (in order) is raised as soon as it is known."""
        return run_sync(self.aget(timeout, propagate, interval))

    join = get
    join_native = get

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> list[Any]:
        """``get`` for asyncio code.

        Waits through ``backend.wait`` (push-based where the backend allows), one id at a
        time: the unfinished task that comes last in order, which tends to finish last,
        so each wake-up is followed by one read of every unfinished task and a few rounds
        settle even a large group.
        """
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
