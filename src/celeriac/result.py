"""Task results: ``AsyncResult`` (stored by a worker) and ``EagerResult`` (run locally)."""

from __future__ import annotations

import sys
from collections.abc import Generator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from celeriac import states
from celeriac._loop import run_sync
from celeriac.exceptions import TaskRevokedError, TimeoutError
from celeriac.protocol import decode_exception

if TYPE_CHECKING:
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


class AsyncResult(Generic[R]):
    """A handle on a task's result in the result backend."""

    def __init__(
        self,
        id: str,
        backend: Any = None,
        task_name: str | None = None,
        app: Celeriac | None = None,
        parent: AsyncResult[Any] | None = None,
    ) -> None:
        if app is None:
            from celeriac.app import current_app  # noqa: PLC0415

            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        self._meta: dict[str, Any] | None = None

    task_id = property(lambda self: self.id)

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
    def children(self) -> list[Any] | None:
        value = self._get_meta().get("children")
        return value if isinstance(value, list) else None

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
        **_ignored: Any,
    ) -> R:
        """Wait for the result and return it; re-raise the task's exception if it failed."""
        meta = self._meta
        if meta is None:
            found = run_sync(self.app.backend_wait([self.id], timeout, interval))
            meta = found.get(self.id)
            if meta is None:
                raise TimeoutError(f"task {self.id} did not finish within {timeout}s")
            self._set_meta(meta)
        return self._outcome(meta, propagate)

    wait = get

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> R:
        """``get`` for asyncio code (also available as ``await result``)."""
        meta = self._meta
        if meta is None:
            found = await self.app.backend_wait([self.id], timeout, interval)
            meta = found.get(self.id)
            if meta is None:
                raise TimeoutError(f"task {self.id} did not finish within {timeout}s")
            self._set_meta(meta)
        return self._outcome(meta, propagate)

    def __await__(self) -> Generator[Any, None, R]:
        return self.aget().__await__()

    def _outcome(self, meta: dict[str, Any], propagate: bool) -> R:
        if meta.get("status") in states.PROPAGATE_STATES:
            exc = exception_from_meta(meta)
            if propagate:
                raise exc
            return cast(R, exc)
        return cast(R, meta.get("result"))


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
        **_ignored: Any,
    ) -> R:
        if self._state == states.FAILURE and isinstance(self._retval, BaseException):
            if propagate:
                raise self._retval
            return cast(R, self._retval)
        return cast(R, self._retval)

    wait = get


__all__ = ["AsyncResult", "EagerResult"]
