"""Canvas in the worker: what follows a task, and the chord join.

One middleware, installed on every app by :func:`install` (the worker core knows nothing
of canvas), with two hooks:

* :class:`CanvasMiddleware` ``after_task`` runs in the thread that ran the task. On
  success it builds the messages of the callbacks (``link``) and of the next chain step
  and adds them to the outcome's ``follow_ups`` (the consumer publishes them before it
  acks), and lists them in the result's ``children``. On failure it calls the errbacks
  (``errback(request, exc, traceback)`` right here; an errback that takes one argument
  besides those its signature stores, a bound one, a class-based one or one this worker
  does not know gets a task message with the failed id, as Celery decides) and marks the
  rest of the chain failed.
* its ``settle`` hook (:func:`settle`) is awaited by the consumer after a batch's results
  are stored and before its follow-ups are published and it is acked. It records chord
  sizes of chords the batch's tasks started, then joins the chord members of the batch
  through ``backend.chord_join``: one atomic call that dedupes re-run members, counts, and
  hands a complete header to exactly one worker, which sends the body (or, when a header
  task failed, calls the body's errbacks and fails the body, what is chained after it
  and the chords it is a member of with ``ChordError``: :func:`fail_steps`) and then
  marks the chord done. A worker killed anywhere in between leaves its message unacked;
  the re-run counts once (dedupe) and may re-claim its own claim at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas._maps import chunks
from celeriac.canvas._primitives import group
from celeriac.canvas._replace import ACCUMULATE, accumulate
from celeriac.canvas._signature import (
    SENT,
    Emit,
    Signature,
    emitting,
    plain,
    record_child,
    result_ttl,
    signature,
)
from celeriac.exceptions import ChordError, MessageError
from celeriac.middleware import Middleware
from celeriac.protocol import decode_exception, decode_task, encode_exception, result_meta, utcnow
from celeriac.task import Context
from celeriac.transports.backend import ChordClaim, ChordPart

if TYPE_CHECKING:
    from celeriac._outcome import Outcome
    from celeriac.app import Celeriac
    from celeriac.protocol import Message
    from celeriac.task import Task
    from celeriac.transports.backend import ResultBackend
    from celeriac.transports.broker import Broker

logger = logging.getLogger("celeriac.canvas")

#: States a chord member reports to the join.
_FINAL = (states.SUCCESS, states.FAILURE, states.REVOKED)


@dataclass
class _Pending:
    """What ``after_task`` left for the settle hook of an outcome."""

    chord_starts: list[tuple[str, int]] = field(default_factory=list)
    metas: list[tuple[str, dict[str, Any], float | None]] = field(default_factory=list)
    parts: list[tuple[ChordPart, dict[str, Any], str, str | None]] = field(default_factory=list)


_PENDING: weakref.WeakKeyDictionary[Outcome, _Pending] = weakref.WeakKeyDictionary()
#: Chords this process sent the body of (group id, token): a settle hook retried after a
#: backend error must not send it again.
_FIRED: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
_FIRED_MAX = 4096


# -- after the task ran (executing thread) ---------------------------------------
class CanvasMiddleware(Middleware):
    """Callbacks, chain steps, errbacks and children; see the module docstring."""

    def before_publish(self, app: Celeriac, message: Message, queue: str) -> None:
        if not emitting() and message.task_id:
            record_child(((message.task_id, None), None))

    def before_task(self, task: Task[Any, Any], request: Context) -> None:
        if SENT:
            SENT.pop(id(request), None)

    def after_task(self, task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
        sent = SENT.pop(id(request), []) if SENT else []
        if not (sent or request.callbacks or request.chain or request.errbacks):
            return  # a plain task (chord members are counted by the settle hook)
        try:
            if outcome.state == states.SUCCESS:
                _succeeded(task.app, request, outcome, sent)
            elif outcome.state in (states.FAILURE, states.REVOKED):
                _failed(task.app, request, outcome)
        except Exception:
            logger.exception("Canvas: follow-ups of %s[%s] failed", task.name, request.id)

    async def settle(
        self, app: Celeriac, outcomes: list[Outcome], broker: Broker, backend: ResultBackend
    ) -> None:
        await settle(app, outcomes, broker, backend)


def _base_options(request: Context) -> dict[str, Any]:
    return {"parent_id": request.id, "root_id": request.root_id or request.id}


def _succeeded(app: Celeriac, request: Context, outcome: Outcome, sent: list[Any]) -> None:
    emit = Emit(app)
    children: list[Any] = list(sent)
    value = outcome.value
    failed = _Pending()
    for callback in request.callbacks or ():
        sig = signature(callback, app=app).clone()
        built = _follow_up(app, request, emit, failed, [sig], sig._build, (value,), {})
        if built is not None:
            children.append(plain(built.as_tuple()))
    if request.chain:
        steps = list(request.chain)
        step = signature(steps.pop(), app=app).clone()
        options = {"chain": steps}
        built = _follow_up(
            app, request, emit, failed, request.chain, step._build, (value,), options
        )
        if built is not None:
            children.append(plain(built.as_tuple()))
    outcome.follow_ups.extend(emit.items)
    if emit.chord_starts or failed.metas or failed.parts:
        slot = _PENDING.setdefault(outcome, _Pending())
        slot.chord_starts.extend(emit.chord_starts)
        slot.metas.extend(failed.metas)
        slot.parts.extend(failed.parts)
    if children and outcome.meta is not None:
        outcome.meta["children"] = children


def _follow_up(
    app: Celeriac,
    request: Context,
    emit: Emit,
    failed: _Pending,
    steps: Any,
    build: Callable[..., Any],
    args: tuple[Any, ...],
    options: dict[str, Any],
) -> Any:
    """Build one follow-up of a finished task into ``emit``; its result, or None when it
    could not be built (a bad option, an argument its serializer refuses ...): then the
    error is logged and stored as the FAILURE of the follow-up's ``steps`` that have an
    id (so a caller waiting on them gets it), the task's own result staying as it is,
    and the other follow-ups are sent. (Celery's worker fails the task itself then.)"""
    own = Emit(app)
    try:
        result = build(own, args, {}, {**_base_options(request), **options})
    except Exception as exc:
        logger.exception("Canvas: a follow-up of %s could not be sent", request.id)
        trace = "".join(traceback.format_exception(exc))
        found = fail_steps(
            app, steps, states.FAILURE, encode_exception(exc), trace, request.root_id
        )
        failed.metas.extend(found.metas)
        failed.parts.extend(found.parts)
        return None
    emit.items.extend(own.items)
    emit.chord_starts.extend(own.chord_starts)
    return result


def _failed(app: Celeriac, request: Context, outcome: Outcome) -> None:
    exc = outcome.exc if outcome.exc is not None else Exception(outcome.state)
    trace = outcome.traceback
    emit = Emit(app)
    if outcome.state == states.FAILURE:
        for call in plan_errbacks(app, request.errbacks, request, exc, trace, emit):
            try:
                call()
            except Exception:
                logger.exception("Errback of %s raised", request.id)
    pending = _chain_failed(app, request, outcome, exc)
    outcome.follow_ups.extend(emit.items)
    if pending.metas or pending.parts:
        slot = _PENDING.setdefault(outcome, _Pending())
        slot.metas.extend(pending.metas)
        slot.parts.extend(pending.parts)


def _chain_failed(
    app: Celeriac, request: Context, outcome: Outcome, exc: BaseException
) -> _Pending:
    """The rest of a failed chain will not run: store the failure for each step (so a
    caller waiting on the last one gets it) and count steps that are chord members."""
    encoded = outcome.meta["result"] if outcome.meta else encode_exception(exc)
    state = outcome.state or states.FAILURE
    return fail_steps(app, request.chain, state, encoded, outcome.traceback, request.root_id)


def fail_steps(
    app: Celeriac,
    steps: Any,
    state: str,
    encoded: Any,
    traceback: str | None,
    root_id: str | None,
) -> _Pending:
    """What failing ``steps`` (signature dicts that will not run now) takes, as Celery's
    ``_fail_chain``: a stored failure for each one's id and the results its callers wait
    on, a chord part for each chord member; a chord step's body, the steps of a chain
    and the steps chained after each one fail with it (so nothing waits forever)."""
    pending = _Pending()
    ttl = result_ttl(app)
    todo = collections.deque(steps if isinstance(steps, (list, tuple)) else ())
    seen: set[str] = set()
    while todo:
        step = signature(todo.popleft(), app=app)
        opts = step.options
        for task_id in dict.fromkeys([*([step.id] if step.id else []), *step.result_ids()]):
            if task_id in seen:
                continue
            seen.add(task_id)
            meta = result_meta(task_id, state, encoded, traceback=traceback, date_done=utcnow())
            pending.metas.append((task_id, meta, ttl))
        where = (opts.get("chord"), opts.get("group_id"), opts.get("group_index"))
        part = _part(*where, step.id, state, encoded)
        if part is not None:
            pending.parts.append((*part, root_id))
        if step.subtask_type == "chord":
            todo.append(step.kwargs.get("body"))
        elif step.subtask_type == "chain":
            todo.extend(step.kwargs.get("tasks") or ())
        todo.extend(opts.get("chain") or ())
    return pending


def plan_errbacks(
    app: Celeriac,
    errbacks: Any,
    request: Context,
    exc: BaseException,
    trace: str | None,
    emit: Emit,
) -> list[Callable[[], Any]]:
    """Errbacks that take ``(request, exc, traceback)`` become calls to make here; the
    others (Celery's old form: the failed task's id) become task messages in ``emit``."""
    calls: list[Callable[[], Any]] = []
    for item in errbacks or ():
        errback = signature(item, app=app)
        task = app.tasks.get(errback.task)
        if task is not None and _takes_request(task, errback):
            calls.append(partial(errback, request, exc, trace))
            continue
        own = Emit(app)
        try:  # each on its own: one that cannot be sent does not stop the others
            errback.clone()._build(own, (request.id,), {}, _base_options(request))
        except Exception:
            logger.exception("Canvas: an errback of %s could not be sent", request.id)
            continue
        emit.items.extend(own.items)
        emit.chord_starts.extend(own.chord_starts)
    return calls


def _takes_request(task: Task[Any, Any], errback: Signature) -> bool:
    """Celery's test: the function takes more than one positional argument besides the
    ones the signature stores (bound tasks and class-based tasks always get the id)."""
    fn = inspect.getattr_static(type(task), "_fn", None)
    if task.bind or not isinstance(fn, staticmethod):
        return False
    fn = fn.__func__
    try:
        found = inspect.signature(fn)
        if not errback.immutable and (errback.args or errback.kwargs):
            # arguments the function cannot take: judged by the function alone
            with contextlib.suppress(TypeError, ValueError):
                found = inspect.signature(partial(fn, *errback.args, **errback.kwargs))
    except (TypeError, ValueError):
        return False
    positional = 0
    for param in found.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if param.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional > 1


# -- chord members ------------------------------------------------------------------
def _part(
    body: Any, group_id: Any, index: Any, task_id: Any, state: str, result: Any
) -> tuple[ChordPart, dict[str, Any], str] | None:
    if not isinstance(body, dict) or not group_id or not task_id:
        return None
    if not isinstance(index, int):
        logger.warning("Chord member %s of %s has no group_index; not counted", task_id, group_id)
        return None
    size = body.get("chord_size")
    part = ChordPart(
        str(group_id), str(task_id), index, state, result, size if isinstance(size, int) else None
    )
    return part, body, str(task_id)


def _outcome_part(
    app: Celeriac, outcome: Outcome
) -> tuple[ChordPart, dict[str, Any], str, str | None] | None:
    """The chord member an outcome finished, if it is one."""
    state = outcome.state
    if outcome.job is not None:
        request = outcome.job.request
        if state not in _FINAL or not request.chord or not request.group:
            return None
        if state == states.SUCCESS:
            value = outcome.value
        elif outcome.meta is not None:
            value = outcome.meta.get("result")
        else:
            value = encode_exception(outcome.exc or Exception(state))
        found = _part(request.chord, request.group, request.group_index, request.id, state, value)
        return None if found is None else (*found, request.root_id)
    # not run: revoked, expired, dead-lettered (poison, unknown task): still counted
    meta, message = outcome.meta, outcome.delivery.message
    if (
        meta is None
        or message is None
        or meta.get("status") not in (states.FAILURE, states.REVOKED)
    ):
        return None
    try:
        call = decode_task(message, frozenset(app.conf["accept_content"] or ["json"]))
    except MessageError:
        return None
    found = _part(
        call.embed.get("chord"),
        call.group,
        call.group_index,
        call.id,
        str(meta["status"]),
        meta.get("result"),
    )
    return None if found is None else (*found, call.root_id)


async def settle(
    app: Celeriac, outcomes: list[Outcome], broker: Broker, backend: ResultBackend
) -> None:
    """The settle hook of :class:`CanvasMiddleware`: chord sizes, failed chain steps,
    chord joins (module docstring)."""
    pending = [_PENDING[o] for o in outcomes if o in _PENDING] if _PENDING else []
    parts = [p for slot in pending for p in slot.parts]
    for outcome in outcomes:
        if outcome.job is not None and not outcome.job.request.chord:
            continue
        found = _outcome_part(app, outcome)
        if found is not None:
            parts.append(found)
    if not pending and not parts:
        return
    ttl = result_ttl(app)
    metas = [m for slot in pending for m in slot.metas]
    if metas:
        await backend.store_many(metas)
    for group_id, size in (s for slot in pending for s in slot.chord_starts):
        await backend.chord_start(group_id, size, ttl)
    if parts:
        members = {(p.group_id, p.task_id): (body, root) for p, body, _, root in parts}
        claims = await backend.chord_join([p for p, _, _, _ in parts], ttl)
        for claim in claims:
            body, root_id = members[(claim.group_id, claim.token)]
            await _fire(app, claim, body, root_id, broker, backend)
    if pending:
        for outcome in outcomes:
            _PENDING.pop(outcome, None)


async def _fire(
    app: Celeriac,
    claim: ChordClaim,
    body_dict: dict[str, Any],
    root_id: str | None,
    broker: Broker,
    backend: ResultBackend,
) -> None:
    """Send the body of a claimed chord (or fail it), then mark the chord done."""
    key = (claim.group_id, claim.token)
    if key not in _FIRED:
        body = signature(body_dict, app=app).clone()
        failed = next((r for r in claim.results if r[1] in states.PROPAGATE_STATES), None)
        if failed is None:
            emit = Emit(app)
            values = await _header_values(claim, backend)
            options = {"parent_id": claim.token, "root_id": root_id or claim.token}
            body._build(emit, (values,), {}, options)
            await emit.send(broker, backend)
            logger.info("Chord %s complete: sent %s", claim.group_id, body.task)
        else:
            await _chord_failed(app, body, failed, root_id, broker, backend)
        _FIRED[key] = None
        while len(_FIRED) > _FIRED_MAX:
            _FIRED.popitem(last=False)
    await backend.chord_done(claim.group_id, claim.token)
    # done: the backend ignores late duplicates now, and the same chord sent again (a
    # re-applied frozen chord: same ids) is a new run that must fire again
    _FIRED.pop(key, None)


async def _header_values(claim: ChordClaim, backend: ResultBackend) -> list[Any]:
    """The values a chord body gets: the header's results in order, or, when the
    producer saved the header's shape (Celery's client does for a header with a group
    inside, as a chain ending in one), nested as that shape."""
    values = [value for _, _, value in claim.results]
    try:
        saved = await backend.restore_group(claim.group_id)
    except NotImplementedError:
        return values
    tree = saved.get("result") if saved else None
    if not isinstance(tree, list) or len(tree) != 2 or not isinstance(tree[1], list):
        return values
    by_id = {task_id: value for task_id, _, value in claim.results}
    try:
        return [_shaped(node, by_id) for node in tree[1]]
    except (KeyError, TypeError, ValueError, IndexError):
        logger.warning("Chord %s: its saved header does not match its parts", claim.group_id)
        return values


def _shaped(node: Any, by_id: dict[str, Any]) -> Any:
    """One node of a saved result tuple (``[[id, parent], members-or-None]``) as values."""
    (task_id, _), members = node
    if members is None:
        return by_id[task_id]
    return [_shaped(member, by_id) for member in members]


async def _chord_failed(
    app: Celeriac,
    body: Signature,
    failed: tuple[str, str, Any],
    root_id: str | None,
    broker: Broker,
    backend: ResultBackend,
) -> None:
    task_id, _, value = failed
    cause = decode_exception(value) if isinstance(value, dict) else Exception(value)
    error = ChordError(f"Dependency {task_id} raised {cause!r}")
    logger.error("Chord %s failed: %s", body.options.get("group_id"), error)
    emit = Emit(app)
    if isinstance(body, group):
        calls, pending = _group_body_failed(app, body, cause, error, root_id, emit)
    else:
        ids = body.result_ids()
        request = Context(
            id=ids[-1] if ids else None,
            args=list(body.args),
            kwargs=dict(body.kwargs),
            errbacks=body.options.get("link_error"),
            called_directly=False,
            group=body.options.get("group_id"),
            root_id=body.options.get("root_id"),
        )
        calls = plan_errbacks(app, body.options.get("link_error"), request, error, None, emit)
        # the body, what is chained after it and the chords it is a member of fail too
        encoded = encode_exception(error)
        pending = fail_steps(app, [plain(body)], states.FAILURE, encoded, None, root_id)
    # as Celery: the errbacks first, then the FAILURE of the body
    for call in calls:
        try:
            await asyncio.to_thread(call)
        except Exception:
            logger.exception("Errback of the body of chord %s raised", body.options.get("group_id"))
    await emit.send(broker, backend)
    if pending.metas:
        await backend.store_many(pending.metas)
    if pending.parts:
        members = {(p.group_id, p.task_id): (b, root) for p, b, _, root in pending.parts}
        claims = await backend.chord_join([p for p, _, _, _ in pending.parts], result_ttl(app))
        for claim in claims:
            outer, outer_root = members[(claim.group_id, claim.token)]
            await _fire(app, claim, outer, outer_root, broker, backend)


def _group_body_failed(
    app: Celeriac,
    body: group,
    cause: BaseException,
    error: ChordError,
    root_id: str | None,
    emit: Emit,
) -> tuple[list[Callable[[], Any]], _Pending]:
    """A group body of a failed chord fails member by member, as Celery's: each member's
    errbacks (its own and the group's) are called with the failed header task's
    exception, which each member and the group store as their FAILURE."""
    calls: list[Callable[[], Any]] = []
    own = _listed(body.options.get("link_error"))
    encoded = encode_exception(cause)
    ids: list[str] = []
    for member in body.tasks:
        task_id, errbacks = _result_errbacks(app, member)
        if not task_id:
            continue
        ids.append(task_id)
        chosen: list[Any] = []
        for errback in (*errbacks, *own):
            if errback not in chosen:
                chosen.append(errback)
        request = Context(id=task_id, errbacks=chosen, called_directly=False, root_id=root_id)
        calls.extend(plan_errbacks(app, chosen, request, cause, None, emit))
    if body.id:
        ids.append(body.id)
    pending = fail_steps(
        app, body.options.get("chain"), states.FAILURE, encode_exception(error), None, root_id
    )
    ttl = result_ttl(app)
    for task_id in ids:
        meta = result_meta(task_id, states.FAILURE, encoded, date_done=utcnow())
        pending.metas.append((task_id, meta, ttl))
    return calls, pending


def _result_errbacks(app: Celeriac, sig: Any) -> tuple[str | None, list[Any]]:
    """The id of ``sig``'s result and the errbacks linked to it (a chord's: its body's
    and its own; a group's: its own and its members')."""
    sig = signature(sig, app=app)
    errbacks: list[Any] = []
    while sig.subtask_type == "chord" and sig.kwargs.get("body") is not None:
        errbacks.extend(_listed(sig.options.get("link_error")))
        sig = signature(sig.kwargs["body"], app=app)
    errbacks.extend(_listed(sig.options.get("link_error")))
    if sig.subtask_type == "group":
        for task in sig.kwargs.get("tasks") or ():
            errbacks.extend(_result_errbacks(app, task)[1])
    return sig.id, errbacks


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# -- built-in tasks ------------------------------------------------------------------
def _builtins(app: Celeriac) -> None:
    """``celery.map``, ``celery.starmap``, ``celery.chunks`` (messages Celery sends)."""

    def local(task: Any) -> Task[Any, Any]:
        return signature(task, app=app).type

    def map_task(task: Any, it: Any) -> list[Any]:
        run = local(task)
        return [run(item) for item in it]

    def starmap_task(task: Any, it: Any) -> list[Any]:
        run = local(task)
        return [run(*item) for item in it]

    def chunks_task(task: Any, it: Any, n: int) -> Any:
        return plain(chunks(task, it, n, app=app).apply_async().as_tuple())

    for name, fn in (
        (ACCUMULATE, accumulate),
        ("celery.map", map_task),
        ("celery.starmap", starmap_task),
        ("celery.chunks", chunks_task),
    ):
        if name not in app.tasks:
            app._register(fn, {"name": name, "bind": False})


def install(app: Celeriac) -> None:
    """Canvas support for ``app``: its middleware and built-in tasks."""
    app.middleware.append(CanvasMiddleware())
    _builtins(app)


__all__ = ["CanvasMiddleware", "fail_steps", "install", "plan_errbacks", "settle"]
