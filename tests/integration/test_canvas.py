"""Canvas: signatures, chain, group, chord, chunks, map/starmap, result sets, errbacks.

The wire format is checked without a worker. Behaviour runs on every broker/backend that
can hold results: memory (an in-process ``TestWorker``), SQLite and Redis (a real worker
subprocess each, started once per module). Chord joins are also checked under ``kill -9``
of a prefork child, once mid-task and once between the chord join and the ack.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from celeriac import Celery, chain, chord, chunks, group, signature, xmap, xstarmap
from celeriac.canvas import Signature
from celeriac.canvas._signature import Emit
from celeriac.exceptions import ChordError, IncompleteStream, TaskRevokedError
from celeriac.protocol import decode_task, json_dumps, json_loads
from celeriac.result import AsyncResult, GroupResult, result_from_tuple
from celeriac.testing import TestWorker
from celeriac.transports import broker_class
from celeriac.transports.capabilities import RevocationStore
from servers import POSTGRES_URL, REDIS_URL, drop_schema, require_postgres
from support import WorkerProcess, wait_until, write_module

TASKS = """
import os, pathlib, signal, time
from celeriac import Celery, Middleware
from celeriac.result import GroupResult

DIR = pathlib.Path(os.environ["CANVAS_DIR"])
app = Celery("ctasks", broker=os.environ["CANVAS_URL"])


def note(name, text):
    with (DIR / name).open("a") as f:
        f.write(f"{text}\\n")


@app.task(name="ctasks.add")
def add(x, y=0):
    return x + y

@app.task(name="ctasks.mul")
def mul(x, y):
    return x * y

@app.task(name="ctasks.tsum")
def tsum(values):
    return sum(values)

@app.task(name="ctasks.identity")
def identity(value=None):
    return value

@app.task(name="ctasks.fail")
def fail(*args):
    raise ValueError("bad " + "".join(map(str, args)))

@app.task(name="ctasks.record")
def record(values, key):
    note(key, repr(values))
    return values

@app.task(name="ctasks.on_error")
def on_error(request, exc, traceback, key="errors"):
    note(key, f"{request.id} {exc!r}")

@app.task(name="ctasks.on_error_id")
def on_error_id(task_id):
    note("errors_old", task_id)
    return task_id

@app.task(name="ctasks.restore")
def restore(group_id):
    return GroupResult.restore(group_id, app=app).get(timeout=10, disable_sync_subtasks=False)

@app.task(name="ctasks.spawn")
def spawn():
    return add.delay(20, 22).id

@app.task(name="ctasks.hold")
def hold(name):
    attempts = DIR / f"{name}.attempts"
    first = not attempts.exists()
    note(f"{name}.attempts", str(os.getpid()))
    if first:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.01)
    return f"{name} again"

@app.task(name="ctasks.gate")
def gate(name, flag):
    deadline = time.monotonic() + 30
    while not (DIR / flag).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    return name

@app.task(name="ctasks.die_after_join")
def die_after_join(name):
    note(f"{name}.runs", "run")
    return name + str(len((DIR / f"{name}.runs").read_text().splitlines()))


class _KillAfterJoin(Middleware):
    async def settle(self, app_, outcomes, broker, backend):
        # runs after the canvas settle hook (the chord join), before the ack
        for outcome in outcomes:
            job = outcome.job
            if job is not None and job.call.name == "ctasks.die_after_join":
                died = DIR / "died"
                if not died.exists():
                    died.write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)

app.add_middleware(_KillAfterJoin())
"""


def load_tasks(url: str, directory: Path) -> SimpleNamespace:
    """The tasks module's namespace, made in this process (a client app)."""
    os.environ["CANVAS_URL"], os.environ["CANVAS_DIR"] = url, str(directory)
    namespace: dict[str, Any] = {"__name__": "ctasks_client"}
    exec(compile(TASKS, "ctasks.py", "exec"), namespace)
    return SimpleNamespace(**namespace)


def redis_url_or_skip() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"needs a Redis server at {REDIS_URL} ({exc})")
        pytest.skip(f"needs a Redis server at {REDIS_URL} ({exc})")
    finally:
        client.close()
    return f"{REDIS_URL}?global_keyprefix=canvas-{uuid.uuid4().hex[:12]}:"


def drop_redis_prefix(url: str) -> None:
    import redis

    prefix = url.split("global_keyprefix=", 1)[1]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class Env:
    kind: str
    url: str
    dir: Path
    t: SimpleNamespace
    worker: WorkerProcess | None = None

    @property
    def app(self) -> Celery:
        app: Celery = self.t.app
        return app

    def lines(self, name: str) -> list[str]:
        path = self.dir / name
        return path.read_text().splitlines() if path.exists() else []


def _url(kind: str, directory: Path) -> str:
    if kind == "memory":
        return f"memory://canvas-{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        return f"sqlite:///{directory / 'broker.db'}"
    if kind == "postgres":
        require_postgres()
        return f"{POSTGRES_URL}?schema=canvas_{uuid.uuid4().hex[:12]}"
    return redis_url_or_skip()


def drop_namespace(kind: str, url: str) -> None:
    """The Redis keys or the PostgreSQL schema of ``url`` go."""
    if kind == "redis":
        drop_redis_prefix(url)
    elif kind == "postgres":
        drop_schema(url.rsplit("schema=", 1)[1])


def _worker(env: Env, *args: str) -> WorkerProcess:
    write_module(env.dir, "ctasks", TASKS)
    wenv = {"CANVAS_URL": env.url, "CANVAS_DIR": str(env.dir)}
    return WorkerProcess(env.dir, "ctasks", "-l", "info", *args, env=wenv)


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A client app and a running worker on one broker/backend (shared by the module)."""
    kind = request.param
    directory = tmp_path_factory.mktemp(f"canvas-{kind}")
    url = _url(kind, directory)
    env = Env(kind, url, directory, load_tasks(url, directory))
    try:
        if kind == "memory":
            with TestWorker(env.app, concurrency=4):
                yield env
        else:
            with _worker(env, "-P", "threads", "-c", "4") as env.worker:
                yield env
    finally:
        env.app.close()
        drop_namespace(kind, url)


# -- the wire format ------------------------------------------------------------
@pytest.fixture
def app() -> Celery:
    return Celery("wire", broker="memory://wire", set_as_current=False)


def test_signature_is_celerys_dict_and_survives_json(app: Celery) -> None:
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    sig = add.s(2, countdown=None).set(queue="q")
    assert isinstance(sig, dict) and isinstance(sig, Signature)
    assert dict(sig) == {
        "task": "tasks.add",
        "args": (2,),
        "kwargs": {"countdown": None},
        "options": {"queue": "q"},
        "subtask_type": None,
        "immutable": False,
    }
    assert json.loads(json.dumps(sig))["args"] == [2]
    back = signature(json_loads(json_dumps(sig)), app=app)
    assert back == {**sig, "args": [2]} and back.task == "tasks.add" and back.args == (2,)
    assert add.si(1, 2).immutable and not add.s(1).immutable
    clone = sig.clone((1,), {"y": 3}, priority=5)
    assert clone.args == (1, 2) and clone.kwargs == {"countdown": None, "y": 3}
    assert clone.options == {"queue": "q", "priority": 5} and sig.options == {"queue": "q"}
    assert add.si(1, 2).clone((9,)).args == (1, 2)  # immutable: no partial args
    assert signature("tasks.add", (1, 2), {}, countdown=3, app=app).options == {"countdown": 3}
    assert repr(add.s(1, y=2)) == "tasks.add(1, y=2)"
    assert add.s(4, 4)() == 8  # calling a signature calls the function here


def test_composites_round_trip_as_their_own_classes(app: Celery) -> None:
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    xsum = app.task(name="tasks.xsum")(sum)
    workflow = chain(add.s(1, 2), group(add.s(1), add.s(2)), chord([add.s(3, 3)], xsum.s()))
    back = signature(json_loads(json_dumps(workflow)), app=app)
    assert isinstance(back, chain) and back.subtask_type == "chain"
    assert [type(t) for t in back.tasks] == [Signature, group, chord]
    third = back.tasks[2]
    assert isinstance(third, chord) and isinstance(third.body, Signature)
    assert third.body.task == "tasks.xsum"
    assert back.tasks[2]["kwargs"]["header"]["subtask_type"] == "group"
    assert isinstance(signature(json_loads(json_dumps(add.chunks([(1, 1)], 1)))), chunks)
    assert isinstance(signature(json_loads(json_dumps(add.map([1])))), xmap)
    assert isinstance(signature(json_loads(json_dumps(add.starmap([(1, 1)])))), xstarmap)
    # composition with |
    assert isinstance(add.s(1, 1) | add.s(2), chain)
    three = add.s(1, 1) | add.s(2) | add.s(3)
    assert isinstance(three, chain) and len(three.tasks) == 3
    assert isinstance(group(add.s(1, 1), add.s(2, 2)) | xsum.s(), chord)
    upgraded = chord([add.s(1, 1)], xsum.s()) | add.s(10)
    assert isinstance(upgraded, chord) and isinstance(upgraded.body, chain)


def _messages(app: Celery, sig: Signature) -> tuple[Any, list[Any]]:
    emit = Emit(app)
    result = sig.clone()._build(emit, (), {}, {})
    accept = frozenset({"json"})
    return result, [(q, decode_task(m, accept)) for q, m, _, _ in emit.items]


def test_chain_message_embeds_the_rest_reversed_with_ids(app: Celery) -> None:
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    mul = app.task(name="tasks.mul")(lambda x, y: x * y)
    result, messages = _messages(app, chain(add.s(1, 2), mul.s(3), mul.s(4)))
    assert len(messages) == 1
    _, call = messages[0]
    assert call.name == "tasks.add" and call.args == [1, 2]
    rest = call.embed["chain"]
    assert [step["args"] for step in rest] == [[4], [3]]  # next step last
    assert rest[0]["options"]["task_id"] == result.id
    assert rest[1]["options"]["task_id"] == result.parent.id
    assert result.parent.parent.id == call.id and result.parent.parent.parent is None


def test_group_and_chord_messages(app: Celery) -> None:
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    xsum = app.task(name="tasks.xsum")(sum)
    result, messages = _messages(app, group(add.s(i, i) for i in range(3)))
    assert isinstance(result, GroupResult) and len(messages) == 3
    assert [c.group for _, c in messages] == [result.id] * 3
    assert [c.group_index for _, c in messages] == [0, 1, 2]
    assert [c.id for _, c in messages] == [r.id for r in result.results]

    emit = Emit(app)
    body_result = chord([add.s(1, 1), add.s(2, 2)], xsum.s())._build(emit, (), {}, {})
    header = body_result.parent
    assert isinstance(header, GroupResult) and emit.chord_starts == [(header.id, 2)]
    calls = [decode_task(m, frozenset({"json"})) for _, m, _, _ in emit.items]
    body = calls[0].embed["chord"]
    assert body["task"] == "tasks.xsum" and body["options"]["task_id"] == body_result.id
    assert body["options"]["group_id"] == header.id and body["chord_size"] == 2
    assert all(c.embed["chord"] == body and c.group == header.id for c in calls)


def test_group_in_a_chain_becomes_a_chord(app: Celery) -> None:
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    xsum = app.task(name="tasks.xsum")(sum)
    # mypy reads `sig | group` as dict's union (group is a dict subclass); it is a chain
    flow = cast(Signature, add.s(1, 1) | group(add.s(1), add.s(2))) | xsum.s()
    result, messages = _messages(app, flow)
    ((_, first),) = messages
    (step,) = first.embed["chain"]
    assert step["subtask_type"] == "chord" and step["kwargs"]["body"]["task"] == "tasks.xsum"
    assert isinstance(result.parent, GroupResult) and result.parent.parent is not None
    assert result.parent.parent.id == first.id


def test_result_tuples(app: Celery) -> None:
    group_result = GroupResult("g", [AsyncResult("a", app=app), AsyncResult("b", app=app)], app=app)
    as_json = json_loads(json_dumps(group_result.as_tuple()))
    assert as_json == [["g", None], [[["a", None], None], [["b", None], None]]]
    back = result_from_tuple(as_json, app)
    assert isinstance(back, GroupResult) and back == group_result
    child = result_from_tuple([["c", [["p", None], None]], None], app)
    assert isinstance(child, AsyncResult) and child.parent is not None
    assert child.parent.id == "p"


def test_eager_mode_runs_workflows_locally(app: Celery) -> None:
    app.conf.task_always_eager = True
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    xsum = app.task(name="tasks.xsum")(sum)
    assert (add.s(1, 2) | add.s(3)).apply_async().get() == 6
    assert group(add.s(i, i) for i in range(3)).apply_async().get() == [0, 2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], xsum.s()).apply_async().get() == 6


# -- behaviour on every backend ------------------------------------------------
def test_chain_passes_each_result_on_and_links_parents(env: Env) -> None:
    t = env.t
    result = chain(t.add.s(1, 2), t.mul.s(3), t.mul.s(4))()
    assert result.get(timeout=10) == 36
    assert result.parent.get(timeout=10) == 9
    assert result.parent.parent.get(timeout=10) == 3
    # immutable steps ignore the parent's result; kwargs are merged
    assert (t.add.s(1, 1) | t.add.si(5, 5) | t.add.s(y=1)).delay().get(timeout=10) == 11
    # the parent's children are the steps it sent
    assert [c.id for c in result.parent.children] == [result.id]
    assert [v for _, v in result.parent.parent.collect()] == [3, 9, 36]


def test_group_result_api(env: Env) -> None:
    t = env.t
    result = group(t.add.s(i, i) for i in range(10)).apply_async()
    assert result.get(timeout=10) == [i * 2 for i in range(10)]
    assert result.join(timeout=10) == [i * 2 for i in range(10)]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 10 and len(result) == 10

    mixed = group(t.add.s(1, 1), t.fail.s("x"), t.add.s(2, 2))()
    with pytest.raises(ValueError, match="bad x"):
        mixed.get(timeout=10)
    values = mixed.get(timeout=10, propagate=False)
    assert values[0] == 2 and isinstance(values[1], ValueError) and values[2] == 4
    assert mixed.failed() and not mixed.successful() and mixed.completed_count() == 2

    result.save()
    restored = GroupResult.restore(result.id, app=env.app)
    assert restored is not None and restored == result
    assert restored.get(timeout=10) == [i * 2 for i in range(10)]
    # restored by id in the worker's process
    assert t.restore.delay(result.id).get(timeout=10) == [i * 2 for i in range(10)]
    restored.delete()
    assert GroupResult.restore(result.id, app=env.app) is None


def test_chord_body_runs_once_with_results_in_order(env: Env) -> None:
    t = env.t
    key = f"body-{uuid.uuid4().hex[:6]}"
    result = chord(t.add.s(i, i) for i in range(12))(t.record.s(key))
    assert result.get(timeout=15) == [i * 2 for i in range(12)]
    assert env.lines(key) == [repr([i * 2 for i in range(12)])]
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get(timeout=10) == [i * 2 for i in range(12)]
    # an empty header runs the body at once, with no results
    assert chord([], t.tsum.s())().get(timeout=10) == 0
    # a chain as the body, and a chord as a chain step with more steps after it
    assert chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s() | t.mul.s(10))().get(timeout=10) == 60
    workflow = t.add.s(1, 1) | group(t.mul.s(2), t.mul.s(3)) | t.tsum.s() | t.add.s(100)
    assert workflow().get(timeout=10) == 110


def test_chord_header_failure_fails_the_body_and_calls_its_errbacks(env: Env) -> None:
    t = env.t
    body = t.tsum.s()
    body.link_error(t.on_error.s(key="chord_errors"))
    body.link_error(t.on_error_id.s())
    result = chord([t.add.s(1, 1), t.fail.s("h"), t.add.s(3, 3)], body)()
    failed_id = result.parent.results[1].id
    with pytest.raises(ChordError, match=f"Dependency {failed_id} raised ValueError"):
        result.get(timeout=10)
    assert result.state == "FAILURE"
    wait_until(lambda: env.lines("chord_errors"), what="the chord errback")
    (line,) = env.lines("chord_errors")
    assert line.startswith(f"{result.id} ChordError(")
    wait_until(lambda: result.id in env.lines("errors_old"), what="the old-style errback")


def test_a_revoked_header_task_fails_the_chord(env: Env) -> None:
    if not issubclass(broker_class(env.url), RevocationStore):
        pytest.skip(f"the {env.kind} broker does not store revocations (yet)")
    t = env.t
    late = t.add.s(2, 2).set(countdown=0.3)
    result = chord([t.add.s(1, 1), late], t.tsum.s())()
    env.app.control.revoke(result.parent.results[1].id)
    with pytest.raises(ChordError, match=r"raised TaskRevokedError"):
        result.get(timeout=10)
    later = group(t.add.s(i, i).set(countdown=0.3) for i in range(3))()
    later.revoke()
    values = later.get(timeout=10, propagate=False)
    assert all(isinstance(v, TaskRevokedError) for v in values), values
    assert later.ready() and not later.successful() and later.completed_count() == 0


def test_link_and_link_error(env: Env) -> None:
    t = env.t
    result = t.add.apply_async((2, 2), link=[t.mul.s(10), t.add.s(1)])
    assert result.get(timeout=10) == 4
    children = result.children
    assert children is not None and sorted(c.get(timeout=10) for c in children) == [5, 40]

    failing = t.fail.apply_async(("e",), link_error=[t.on_error.s(), t.on_error_id.s()])
    with pytest.raises(ValueError, match="bad e"):
        failing.get(timeout=10)
    wait_until(lambda: any(failing.id in line for line in env.lines("errors")), what="errback")
    (line,) = [line for line in env.lines("errors") if failing.id in line]
    assert line == f"{failing.id} ValueError('bad e')"
    wait_until(lambda: failing.id in env.lines("errors_old"), what="the old-style errback")


def test_a_failed_step_fails_the_rest_of_its_chain(env: Env) -> None:
    t = env.t
    result = (t.add.s(1, 1) | t.fail.s() | t.add.s(1) | t.add.s(2))()
    with pytest.raises(ValueError, match="bad 2"):
        result.get(timeout=10)
    with pytest.raises(ValueError, match="bad 2"):
        result.parent.get(timeout=10)
    assert result.parent.parent.parent.get(timeout=10) == 2


def test_chains_in_a_group_and_groups_in_a_chain(env: Env) -> None:
    t = env.t
    result = group(t.add.s(1, 1) | t.mul.s(10), t.add.s(2, 2) | t.mul.s(100))()
    assert result.get(timeout=10) == [20, 400]
    ends = (t.add.s(1, 1) | group(t.mul.s(2), t.mul.s(3)))()
    assert isinstance(ends, GroupResult) and ends.get(timeout=10) == [4, 6]
    headers = chord([t.add.s(1, 1) | t.mul.s(2), t.add.s(2, 2)], t.tsum.s())()
    assert headers.get(timeout=10) == 8


def test_map_starmap_and_chunks(env: Env) -> None:
    t = env.t
    assert t.identity.map([1, 2, 3]).delay().get(timeout=10) == [1, 2, 3]
    assert t.add.starmap([(1, 2), (3, 4)]).delay().get(timeout=10) == [3, 7]
    parts = t.add.chunks([(i, i) for i in range(7)], 3)()
    assert isinstance(parts, GroupResult)
    assert parts.get(timeout=10) == [[0, 2, 4], [6, 8, 10], [12]]
    summed = chord(t.add.chunks([(i, i) for i in range(4)], 2), t.identity.s())()
    assert summed.get(timeout=10) == [[0, 2], [4, 6]]
    # the chunks built-in (a Celery producer may send it as a message)
    sent = env.app.send_task("celery.chunks", (), {"task": t.add.s(), "it": [(1, 1)], "n": 1})
    (((gid, _), members),) = [sent.get(timeout=10)]
    assert GroupResult(gid, [result_from_tuple(m, env.app) for m in members], app=env.app).get(
        timeout=10
    ) == [[2]]


def test_children_and_collect(env: Env) -> None:
    t = env.t
    spawned = t.spawn.delay()
    child_id = spawned.get(timeout=10)
    assert [c.id for c in spawned.children] == [child_id]
    assert [v for _, v in spawned.collect()] == [child_id, 42]
    with pytest.raises(IncompleteStream):
        list(AsyncResult(f"never-sent-{uuid.uuid4()}", app=env.app).iterdeps())


# -- kill -9 in the middle of a chord -----------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_kill_9_of_a_header_task_counts_it_once(kind: str, tmp_path: Path) -> None:
    url = _url(kind, tmp_path)
    env = Env(kind, url, tmp_path, load_tasks(url, tmp_path))
    t = env.t
    try:
        with _worker(env, "-P", "prefork", "-c", "2") as worker:
            # (1) killed while running: the message comes back and runs again
            first = chord([t.hold.s("k"), t.add.s(1, 1), t.add.s(2, 2)])(t.record.s("body1"))
            pid = wait_until(lambda: env.lines("k.attempts"), what="the header task to start")
            os.kill(int(pid[0]), signal.SIGKILL)
            assert first.get(timeout=30) == ["k again", 2, 4]
            assert env.lines("body1") == [repr(["k again", 2, 4])]
            worker.wait_for(r"exited with signal 9")
            # (2) killed after its result ("a1") was counted in the chord, before the ack:
            # the re-run ("a2") must not count again (else the body would fire early)
            second = chord([t.die_after_join.s("a"), t.gate.s("b", "died"), t.gate.s("c", "died")])(
                t.record.s("body2")
            )
            assert second.get(timeout=30) == ["a1", "b", "c"]
            assert env.lines("body2") == [repr(["a1", "b", "c"])]
            assert env.lines("a.runs") == ["run", "run"]
            worker.wait_for(r"exited with signal 9", count=2)
    finally:
        env.app.close()
        drop_namespace(kind, url)
