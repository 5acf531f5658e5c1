"""``app.backend``: the result backend's calls that Celery code makes, synchronously.

Celery's ``app.backend`` is the result backend object itself; third-party code calls a
handful of its methods directly (``get_task_meta``, ``store_result``, ``mark_as_*``,
``forget``, ``get``/``set``/``delete``, ``client``, ``ensure_chords_allowed``, saved
groups). :class:`BackendAPI` gives those calls over celeriac's async backend contract
(:mod:`celeriac.transports.backend`), with the behaviour measured on Celery 5.7's Redis
backend:

* metas are Celery's (``status``, ``result``, ``traceback``, ``children``, ``date_done``,
  ``task_id``; ``result_extended`` adds the request's fields); ``get_task_meta`` of an
  unknown id is ``{"status": "PENDING", "result": None}`` and gives exceptions back as
  exception instances;
* a stored SUCCESS is never replaced (Celery's key-value backends keep it);
* ``mark_as_started`` returns its meta, ``mark_as_retry`` the stored exception's dict,
  ``store_result`` its result, the other ``mark_as_*`` None;
* ``get``/``set``/``delete`` keep raw bytes under the caller's key (``set`` with the
  ``result_expires`` expiry), needing the backend's "key values" part.

Over ``rpc://`` a state goes to the caller's reply queue, so ``store_result`` and the
``mark_as_*`` calls need a ``request`` with ``reply_to``, as in Celery.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._loop import run_sync
from celeriac.exceptions import TimeoutError
from celeriac.protocol import decode_exception, encode_exception, json_dumps, json_loads
from celeriac.protocol import result_meta as _result_meta
from celeriac.transports.backend import ResultBackend
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import AsyncResult, GroupResult


def _field(request: Any, name: str, default: Any = None) -> Any:
    if isinstance(request, Mapping):
        return request.get(name, default)
    return getattr(request, name, default)


def _revoked_error(reason: str) -> dict[str, Any]:
    return {
        "exc_type": "TaskRevokedError",
        "exc_message": [reason],
        "exc_module": "celery.exceptions",
    }


class BackendAPI:
    """``app.backend``; see the module docstring."""

    persistent = True
    supports_native_join = True
    supports_autoexpire = True

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<celeriac backend {self.as_uri()}>"

    @property
    def url(self) -> str:
        return self.app.backend_url

    def as_uri(self, include_password: bool = False) -> str:
        return self.url if include_password else mask_url(self.url)

    @property
    def expires(self) -> float | None:
        """``result_expires`` in seconds (None: results never expire)."""
        value = self.app.conf["result_expires"]
        return float(value) if value else None

    def _run(self, what: str, *args: Any) -> Any:
        async def call() -> Any:
            backend = await self.app.get_backend()
            return await getattr(backend, what)(*args)

        return run_sync(call())

    def _backend_class(self) -> type[ResultBackend]:
        from celeriac.transports import backend_class  # noqa: PLC0415

        return backend_class(self.url)

    # -- reading -------------------------------------------------------------
    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        """The stored meta (exceptions as exception instances), or
        ``{"status": "PENDING", "result": None}``."""
        meta = self._run("get", task_id)
        if meta is None:
            return {"status": states.PENDING, "result": None}
        if meta.get("status") in states.EXCEPTION_STATES and isinstance(meta.get("result"), dict):
            meta["result"] = decode_exception(meta["result"])
        return dict(meta)

    def get_state(self, task_id: str) -> str:
        return str(self.get_task_meta(task_id)["status"])

    get_status = get_state

    def get_result(self, task_id: str) -> Any:
        return self.get_task_meta(task_id).get("result")

    def get_traceback(self, task_id: str) -> str | None:
        return self.get_task_meta(task_id).get("traceback")

    def get_children(self, task_id: str) -> Any:
        return self.get_task_meta(task_id).get("children")

    # -- storing -------------------------------------------------------------
    def _meta(
        self, task_id: str, result: Any, state: str, traceback: str | None, request: Any
    ) -> dict[str, Any]:
        if state in states.EXCEPTION_STATES and isinstance(result, BaseException):
            result = encode_exception(result)
        done = datetime.now(timezone.utc) if state in states.READY_STATES else None
        extended: dict[str, Any] = {}
        if request is not None:
            if _field(request, "group"):
                extended["group_id"] = _field(request, "group")
            if _field(request, "parent_id"):
                extended["parent_id"] = _field(request, "parent_id")
            if self.app.conf["result_extended"]:
                info = _field(request, "delivery_info") or {}
                extended.update(
                    name=_field(request, "task"),
                    args=list(_field(request, "args") or ()),
                    kwargs=dict(_field(request, "kwargs") or {}),
                    worker=_field(request, "hostname"),
                    retries=_field(request, "retries"),
                    queue=info.get("routing_key") if isinstance(info, Mapping) else None,
                )
        meta = _result_meta(
            task_id, state, result, traceback=traceback, date_done=done, extended=extended
        )
        children = _field(request, "children") if request is not None else None
        meta["children"] = [_tuple(c) for c in children] if children is not None else None
        return meta

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Store ``state`` with ``result`` for ``task_id`` (a stored SUCCESS stays);
        returns ``result`` (an exception in its stored dict form)."""
        meta = self._meta(task_id, result, state, traceback, request)
        if self._backend_class().needs_reply_to:
            reply_to = _field(request, "reply_to") if request is not None else None
            if not reply_to:
                raise RuntimeError(f"RPC backend missing task request for {task_id!r}")
            run_sync(self.app.backend_store(task_id, meta, str(reply_to)))
            return _returned(meta["result"])

        async def store() -> None:
            backend = await self.app.get_backend()
            current = await backend.get(task_id)
            if current is not None and current.get("status") == states.SUCCESS:
                return  # as Celery's key-value backends: a success is final
            await backend.store(task_id, meta, self.expires)

        run_sync(store())
        return _returned(meta["result"])

    def _check_request(self, request: Any, call_errbacks: bool, what: str) -> None:
        if request is None:
            return
        if _field(request, "chord"):
            raise NotImplementedError(
                f"app.backend.{what} with a chord member's request: celeriac's worker "
                f"joins chords itself; store the state without the request"
            )
        if call_errbacks and _field(request, "errbacks"):
            raise NotImplementedError(
                f"app.backend.{what} does not call a request's errbacks: send them "
                f"yourself and pass call_errbacks=False"
            )

    def mark_as_started(self, task_id: str, **meta: Any) -> Any:
        return self.store_result(task_id, meta, states.STARTED)

    def mark_as_done(
        self,
        task_id: str,
        result: Any,
        request: Any = None,
        store_result: bool = True,
        state: str = states.SUCCESS,
    ) -> None:
        self._check_request(request, False, "mark_as_done")
        if store_result and not _field(request, "ignore_result", False):
            self.store_result(task_id, result, state, request=request)

    def mark_as_failure(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        call_errbacks: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        self._check_request(request, call_errbacks, "mark_as_failure")
        if store_result:
            self.store_result(task_id, exc, state, traceback=traceback, request=request)

    def mark_as_retry(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        state: str = states.RETRY,
    ) -> Any:
        self._check_request(request, False, "mark_as_retry")
        return self.store_result(task_id, exc, state, traceback=traceback, request=request)

    def mark_as_revoked(
        self,
        task_id: str,
        reason: str = "",
        request: Any = None,
        store_result: bool = True,
        state: str = states.REVOKED,
    ) -> None:
        self._check_request(request, False, "mark_as_revoked")
        if store_result:
            self.store_result(task_id, _revoked_error(reason), state, request=request)

    def forget(self, task_id: str) -> None:
        self._run("forget", task_id)

    # -- waiting -------------------------------------------------------------
    def wait_for_pending(
        self,
        result: AsyncResult[Any],
        timeout: float | None = None,
        interval: float = 0.5,
        propagate: bool = True,
        **_ignored: Any,
    ) -> Any:
        """``result.get(...)``: its value once ready (:class:`TimeoutError` after
        ``timeout`` seconds)."""
        return result.get(timeout=timeout, interval=interval, propagate=propagate)

    def get_many(
        self, task_ids: Sequence[str], timeout: float | None = None, interval: float = 0.5, **_: Any
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(task_id, meta)`` for each id as it becomes ready (in the order they do)."""
        import time  # noqa: PLC0415

        pending = list(dict.fromkeys(task_ids))
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(pending)} task(s) did not finish within {timeout}s")
            found = run_sync(self.app.backend_wait(pending, left, interval))
            if not found:
                raise TimeoutError(f"{len(pending)} task(s) did not finish within {timeout}s")
            for task_id in [t for t in pending if t in found]:
                pending.remove(task_id)
                yield task_id, found[task_id]

    # -- chords and groups ---------------------------------------------------
    def ensure_chords_allowed(self) -> None:
        """Raise :class:`NotImplementedError` when this backend cannot join chords."""
        cls = self._backend_class()
        if cls.chord_join is ResultBackend.chord_join:
            raise NotImplementedError(
                f"The {cls.__name__} result backend cannot join chords: use a backend "
                f"that stores results (Redis, SQLite, PostgreSQL)"
            )

    def save_group(self, group_id: str, result: GroupResult) -> GroupResult:
        result.id = group_id
        return result.save()

    def restore_group(self, group_id: str, cache: bool = True) -> GroupResult | None:
        from celeriac.result import GroupResult  # noqa: PLC0415

        return GroupResult.restore(group_id, app=self.app)

    def delete_group(self, group_id: str) -> None:
        self._run("forget_group", group_id)

    # -- raw key values (Celery's key-value backend calls) --------------------
    def get(self, key: str | bytes) -> bytes | None:
        """The bytes :meth:`set` stored under ``key``, or None."""
        value: bytes | None = self._run("kv_get", _key(key))
        return value

    def mget(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def set(self, key: str | bytes, value: str | bytes | int | float) -> None:
        """Store ``value`` (text is UTF-8) under ``key`` for ``result_expires``."""
        self._run("kv_set", _key(key), _bytes(value), self.expires)

    def delete(self, key: str | bytes) -> None:
        self._run("kv_delete", _key(key))

    @property
    def client(self) -> Any:
        """The store's own client (redis-py's ``Redis`` on Redis), as Celery's."""
        if self._client is None:
            cls = self._backend_class()
            self._client = cls(self.url, options=self.app.backend_options()).client()
        return self._client

    # -- serialisation ---------------------------------------------------------
    def encode(self, data: Any) -> str:
        return json_dumps(data)

    def decode(self, payload: str | bytes) -> Any:
        return json_loads(payload)

    def cleanup(self) -> None:
        """Nothing to do: expired results go by themselves (as on Celery's Redis)."""


def _returned(result: Any) -> Any:
    """What ``store_result`` gives back: an exception's dict has its arguments as a
    tuple, as Celery's (the stored JSON has a list)."""
    if isinstance(result, dict) and isinstance(result.get("exc_message"), list):
        return {**result, "exc_message": tuple(result["exc_message"])}
    return result


def _key(key: str | bytes) -> str:
    return key.decode("utf-8") if isinstance(key, bytes) else str(key)


def _bytes(value: str | bytes | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"app.backend.set takes text, bytes or a number, not {type(value).__name__}")


def _tuple(child: Any) -> Any:
    as_tuple = getattr(child, "as_tuple", None)
    return _lists(as_tuple()) if as_tuple is not None else child


def _lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_lists(item) for item in value]
    return value


__all__ = ["BackendAPI"]
