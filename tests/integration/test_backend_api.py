"""``app.backend``: the result-backend calls Celery code makes (``get_task_meta``,
``store_result``, ``mark_as_*``, ``forget``, ``get``/``set``/``delete``, ``client``,
``ensure_chords_allowed``, saved groups), on every celeriac backend, and compared with
the real Celery's Redis backend in the same test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.exceptions import TaskRevokedError
from support import close_celery_app

Backend = Any  # Celery's or celeriac's app.backend


def _new_id() -> str:
    return str(uuid.uuid4())


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """A meta without what differs between runs (ids, times), exceptions as text."""
    out = {k: v for k, v in meta.items() if k not in ("task_id", "date_done")}
    if isinstance(out.get("result"), BaseException):
        exc = out["result"]
        out["result"] = (type(exc).__name__, exc.args)
    out["dated"] = meta.get("date_done") is not None
    return out


def _scenario(backend: Backend, app: Any) -> list[Any]:
    """The same calls on either package's ``app.backend``; what each returned."""
    seen: list[Any] = []
    a, b, c, d = _new_id(), _new_id(), _new_id(), _new_id()
    seen.append(("pending", backend.get_task_meta(a)))
    seen.append(("store_result", backend.store_result(a, {"done": 1}, "PROGRESS")))
    seen.append(("progress", _plain(backend.get_task_meta(a))))
    seen.append(("state", backend.get_state(a), backend.get_result(a)))
    seen.append(("started", backend.mark_as_started(a, pid=5, hostname="h")))
    seen.append(("started meta", _plain(backend.get_task_meta(a))))
    seen.append(("done", backend.mark_as_done(a, 42)))
    seen.append(("done meta", _plain(backend.get_task_meta(a))))
    seen.append(("get", app.AsyncResult(a).get(timeout=5)))
    error = ValueError("bad")
    seen.append(("failure after done", backend.mark_as_failure(a, error)))
    seen.append(("still done", backend.get_state(a)))
    seen.append(("failure", backend.mark_as_failure(b, error, traceback="TB")))
    seen.append(("failure meta", _plain(backend.get_task_meta(b))))
    failed = app.AsyncResult(b)
    seen.append(("failed result", failed.state, repr(failed.result), failed.traceback))
    seen.append(("retry", backend.mark_as_retry(c, error, traceback="TB2")))
    seen.append(("retry meta", _plain(backend.get_task_meta(c))))
    seen.append(("revoked", backend.mark_as_revoked(d, reason="because")))
    seen.append(("revoked meta", _plain(backend.get_task_meta(d))))
    seen.append(("revoked state", app.AsyncResult(d).state))
    seen.append(("forget", backend.forget(d), backend.get_task_meta(d)))
    seen.append(("chords", backend.ensure_chords_allowed()))
    key = f"kv-{_new_id()}"
    seen.append(("kv missing", backend.get(key)))
    seen.append(("set", backend.set(key, "v1"), backend.get(key)))
    seen.append(("set bytes", backend.set(key.encode(), b"\x00v2"), backend.get(key)))
    seen.append(("mget", backend.mget([key, key + "-none"])))
    seen.append(("delete", backend.delete(key), backend.get(key)))
    seen.append(("encode", backend.decode(backend.encode({"a": [1, 2]}))))
    seen.append(("expires", backend.expires))
    return seen


@pytest.fixture
def redis_pair(prefixed_url: str) -> Iterator[tuple[Any, Celery]]:
    import celery

    url, _, query = prefixed_url.partition("?")
    prefix = query.split("=", 1)[1]
    options = {"global_keyprefix": prefix}
    theirs = celery.Celery(
        "bapi", broker="memory://", backend=url, result_backend_transport_options=options
    )
    ours = Celery("bapi", broker="memory://", backend=prefixed_url)
    try:
        yield theirs, ours
    finally:
        close_celery_app(theirs)
        ours.close()


def test_backend_calls_as_celerys_redis_backend(redis_pair: tuple[Any, Celery]) -> None:
    theirs, ours = redis_pair
    expected = _scenario(theirs.backend, theirs)
    assert _scenario(ours.backend, ours) == expected
    # what Celery measured, spelled out for the reader
    assert dict((item[0], item[1:]) for item in expected)["done"] == (None,)
    assert expected[0] == ("pending", {"status": "PENDING", "result": None})


def test_each_reads_what_the_other_stored(redis_pair: tuple[Any, Celery]) -> None:
    theirs, ours = redis_pair
    mine, other = _new_id(), _new_id()
    ours.backend.mark_as_done(mine, [1, 2])
    theirs.backend.mark_as_failure(other, KeyError("k"), traceback="TB")
    assert theirs.AsyncResult(mine).get(timeout=5) == [1, 2]
    assert _plain(ours.backend.get_task_meta(other)) == _plain(theirs.backend.get_task_meta(other))
    with pytest.raises(KeyError):
        ours.AsyncResult(other).get(timeout=5)
    key = f"kv-{_new_id()}"
    theirs.backend.set(key, "from celery")
    assert ours.backend.get(key) == b"from celery"
    ours.backend.delete(key)
    assert theirs.backend.get(key) is None


def test_request_fields_and_result_extended(redis_pair: tuple[Any, Celery]) -> None:
    theirs, ours = redis_pair

    class Request:
        def __init__(self, task_id: str) -> None:
            self.id = task_id
            self.task = "x.y"
            self.args = (1,)
            self.kwargs = {"k": 2}
            self.hostname = "worker@h"
            self.retries = 2
            self.delivery_info = {"routing_key": "q"}
            self.ignore_result = False
            self.group = None
            self.parent_id = None
            self.root_id = None
            self.chord = None
            self.children: list[Any] = []
            self.properties: dict[str, Any] = {}

    def stored(app: Any) -> dict[str, Any]:
        task_id = _new_id()
        app.backend.mark_as_done(task_id, 5, request=Request(task_id))
        return _plain(app.backend.get_task_meta(task_id))

    assert stored(ours) == stored(theirs)
    theirs.conf.result_extended = True
    ours.conf.result_extended = True
    extended = stored(theirs)
    assert extended["name"] == "x.y" and extended["queue"] == "q"
    assert stored(ours) == extended


def test_client_is_the_redis_client(redis_pair: tuple[Any, Celery]) -> None:
    import redis

    _, ours = redis_pair
    client = ours.backend.client
    assert isinstance(client, redis.Redis)
    assert client.ping() is True
    assert ours.backend.client is client
    client.close()


def test_saved_groups_through_the_backend(redis_pair: tuple[Any, Celery]) -> None:
    theirs, ours = redis_pair
    from celeriac.result import GroupResult

    members = [ours.AsyncResult(_new_id()), ours.AsyncResult(_new_id())]
    group_id = _new_id()
    saved = ours.backend.save_group(group_id, GroupResult(group_id, members, app=ours))
    assert saved.id == group_id
    restored = theirs.backend.restore_group(group_id)
    assert [r.id for r in restored.results] == [m.id for m in members]
    ours.backend.delete_group(group_id)
    assert theirs.backend.restore_group(group_id) is None
    assert ours.backend.restore_group(group_id) is None


@pytest.fixture(params=["memory", "sqlite"])
def local_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://bapi-{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path / 'results.sqlite3'}"


def test_every_local_backend_gives_the_same_calls(
    redis_pair: tuple[Any, Celery], local_url: str
) -> None:
    """SQLite and memory answer as Celery's Redis backend does (``client`` aside)."""
    theirs, _ = redis_pair
    expected = _scenario(theirs.backend, theirs)
    app = Celery("bapi", broker="memory://", backend=local_url)
    try:
        assert _scenario(app.backend, app) == expected
        with pytest.raises(NotImplementedError, match="client"):
            app.backend.client  # noqa: B018 - the property is the call
    finally:
        app.close()


def test_rpc_backend_needs_a_request_and_has_no_key_values(rabbit: str) -> None:
    """Over ``rpc://`` a state goes to the caller's reply queue (a request with
    ``reply_to``); there is no key-value store and no chord join."""
    app = Celery("bapi", broker=rabbit, backend="rpc://")
    try:
        with pytest.raises(RuntimeError, match="RPC backend missing task request"):
            app.backend.mark_as_done(_new_id(), 1)
        task_id = _new_id()
        request = {"id": task_id, "reply_to": app.reply_to}
        app.backend.mark_as_revoked(task_id, "gone", request=request)
        with pytest.raises(TaskRevokedError):
            app.AsyncResult(task_id).get(timeout=5)
        with pytest.raises(NotImplementedError, match="key values"):
            app.backend.set("k", "v")
        with pytest.raises(NotImplementedError, match="cannot join chords"):
            app.backend.ensure_chords_allowed()
    finally:
        app.close()


def test_requests_it_cannot_honour_are_refused(tmp_path: Path) -> None:
    app = Celery("bapi", broker="memory://", backend=f"memory://bapi-{uuid.uuid4().hex}")
    call: Callable[..., Any] = app.backend.mark_as_failure
    with pytest.raises(NotImplementedError, match="errbacks"):
        call(_new_id(), ValueError("x"), request={"errbacks": [{"task": "t"}]})
    with pytest.raises(NotImplementedError, match="chord"):
        app.backend.mark_as_done(_new_id(), 1, request={"chord": {"task": "t"}})
    with pytest.raises(TypeError, match="text, bytes or a number"):
        app.backend.set("k", object())  # type: ignore[arg-type]
    app.close()


def test_task_and_result_reach_the_app_backend(redis_pair: tuple[Any, Celery]) -> None:
    """``task.backend`` and ``result.backend`` are ``app.backend`` (as in Celery)."""
    for app in redis_pair:

        @app.task(name="bapi.noop", shared=False)  # type: ignore[untyped-decorator]
        def noop() -> None:
            return None

        task_id = _new_id()
        noop.backend.mark_as_done(task_id, "via task")
        assert noop.backend is app.backend
        assert app.AsyncResult(task_id).backend is app.backend
        assert app.AsyncResult(task_id).get(timeout=5) == "via task"
