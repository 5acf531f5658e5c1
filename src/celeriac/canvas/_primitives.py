"""The composite signatures ``chain``, ``group`` and ``chord`` (``chunks``, ``xmap`` and
``xstarmap`` are in ``_maps``), as Celery's signature dicts (``"task": "celery.chain"``,
``"celery.group"``, ``"celery.chord"``, told apart by ``subtask_type``).

How each travels (protocol v2, as Celery: chain steps in the ``chain`` embed, group
members with ``group``/``group_index`` headers, the chord body in every header member's
``chord`` embed): ``docs/internals/canvas.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas._signature import (
    LEAF_OPTIONS,
    Emit,
    Signature,
    maybe_signature,
    new_id,
    plain,
    signature,
)
from celeriac.result import EagerResult, GroupResult, ResultBase

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def _top(result: ResultBase) -> ResultBase:
    """The first result of the workflow ``result`` ends (following ``parent``)."""
    while result.parent is not None:
        result = result.parent
    return result


def _split(options: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: options.pop(k) for k in list(keys) if k in options}


def _partial(
    sig: Signature, args: Iterable[Any], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments a composite hands to its members: its ``kwargs`` field holds its
    structure (tasks, header, body), so only partial positional arguments merge."""
    if sig.immutable:
        return sig.args, {}
    return (*tuple(args), *sig.args), dict(kwargs)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _TaskList(Signature):
    """A signature whose ``kwargs["tasks"]`` holds member signatures (chain, group)."""

    def _adopt(self) -> None:
        self.kwargs["tasks"] = [signature(t, app=self._app) for t in self.kwargs.get("tasks", ())]

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs.setdefault("tasks", [])  # type: ignore[no-any-return]


@Signature.register_type("chain")
class chain(_TaskList):
    """Tasks run one after the other, each given its parent's result:
    ``chain(add.s(2, 2), mul.s(4))`` or ``add.s(2, 2) | mul.s(4)``."""

    def __init__(self, *tasks: Any, app: Celeriac | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        steps: list[Signature] = []
        for task in tasks:
            sig = maybe_signature(task, app=app)
            steps.extend(sig.tasks if isinstance(sig, chain) else [sig])
        if app is None:
            app = next((s._app for s in steps if s._app is not None), None)
        super().__init__(
            "celery.chain", (), {"tasks": steps}, options, subtask_type="chain", app=app
        )

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks, app=self._app, **self.options)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app, **self.options)
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"

    def link(self, callback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        """A callback of the chain is a callback of its last step."""
        return self.tasks[-1].link(callback)

    def link_error(self, errback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        """An errback of the chain is an errback of every step."""
        for step in self.tasks:
            step.link_error(errback)
        return errback

    def _normalise(self) -> None:
        """Flatten nested chains and turn ``group, next`` into ``chord(group, next)``
        (in place)."""
        flat: list[Signature] = []
        for step in self.tasks:
            flat.extend(step.tasks if isinstance(step, chain) else [step])
        steps: list[Signature] = []
        i = 0
        while i < len(flat):
            step = flat[i]
            if isinstance(step, group) and i + 1 < len(flat):
                step = chord(step, body=flat[i + 1], app=self._app)
                i += 1
            steps.append(step)
            i += 1
        self.kwargs["tasks"] = steps

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultBase:
        self._normalise()
        if not self.tasks:
            raise ValueError("an empty chain cannot be sent")
        leaf = {
            k: v
            for k, v in (("group_id", group_id), ("chord", chord), ("group_index", group_index))
            if v is not None
        }
        if leaf.get("chord") is not None and isinstance(self.tasks[-1], group):
            # a chain ending in a group, in a chord header: the group's results are one
            # member's value (as Celery's), through a chord of their own
            accumulate = Signature("celery.accumulate", (), {"index": 0}, app=self._app)
            self.tasks[-1] = _chord(self.tasks[-1], body=accumulate, app=self._app)
        if leaf:
            self.tasks[-1].set_leaf(plain(leaf))
        previous: ResultBase | None = None
        result: ResultBase | None = None
        last = len(self.tasks) - 1
        for i, step in enumerate(self.tasks):
            result = step.freeze(_id if i == last else None, root_id=root_id)
            _top(result).parent = previous
            previous = result
        assert result is not None
        return result

    def set_leaf(self, options: dict[str, Any]) -> None:
        self._normalise()
        self.tasks[-1].set_leaf(options)

    def attach_chain(self, steps: list[Any]) -> None:
        self.tasks[-1].attach_chain(steps)

    def result_ids(self) -> list[str]:
        return self.tasks[-1].result_ids() if self.tasks else []

    def _build(
        self, emit: Emit, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultBase:
        args, kwargs = _partial(self, args, kwargs)
        opts = {**self.options, **options}
        leaf = _split(opts, LEAF_OPTIONS)
        outer = opts.pop("chain", None) or []
        links, errbacks = _as_list(opts.pop("link", None)), _as_list(opts.pop("link_error", None))
        result = self.freeze(opts.pop("task_id", None), root_id=None, **leaf)
        for callback in links:
            self.tasks[-1].link(callback)
        for errback in errbacks:
            self.link_error(errback)
        first, rest = self.tasks[0], self.tasks[1:]
        embed = [*outer, *(plain(step) for step in reversed(rest))]
        if embed:
            opts["chain"] = embed
        first._build(emit, args, kwargs, opts)
        return result

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        self._normalise()
        value_args: tuple[Any, ...] = tuple(args or ())
        call_kwargs = dict(kwargs or {})
        result: Any = None
        for step in self.tasks:
            previous = result
            result = step.apply(value_args, call_kwargs)
            result.parent = previous
            if result.failed() if isinstance(result, GroupResult) else not result.successful():
                return result
            value_args, call_kwargs = (result.get(),), {}
        return result


@Signature.register_type("group")
class group(_TaskList):
    """Tasks run in parallel: ``group(add.s(i, i) for i in range(10))()`` returns a
    :class:`GroupResult`."""

    def __init__(self, *tasks: Any, app: Celeriac | None = None, **options: Any) -> None:
        if len(tasks) == 1:
            only = tasks[0]
            if isinstance(only, group):
                tasks = tuple(only.tasks)
            elif not isinstance(only, dict):
                tasks = tuple(only)
        members = [maybe_signature(t, app=app) for t in tasks]
        if app is None:
            app = next((s._app for s in members if s._app is not None), None)
        super().__init__(
            "celery.group", (), {"tasks": members}, options, subtask_type="group", app=app
        )

    def __len__(self) -> int:  # Celery's len(group) is its number of tasks
        return len(self.tasks)

    def __iter__(self) -> Iterator[Signature]:  # type: ignore[override]
        return iter(self.tasks)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature) and not isinstance(other, (group, chain)):
            return chord(self, body=other, app=self._app)
        return super().__or__(other)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def link(self, callback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        """As Celery: the callback runs after the *first* task, with no argument."""
        sig = maybe_signature(callback, app=self._app).clone().set(immutable=True)
        return self.tasks[0].link(sig)

    def link_error(self, errback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        for task in self.tasks:
            task.link_error(errback)
        return errback

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultBase:
        gid = _id or self.options.get("task_id") or new_id()
        self.options["task_id"] = gid
        self.kwargs["tasks"] = _flat(self.tasks)
        results = [
            task.freeze(group_id=gid, group_index=i, root_id=root_id)
            for i, task in enumerate(self.tasks)
        ]
        return GroupResult(gid, results, app=self.app)

    def set_leaf(self, options: dict[str, Any]) -> None:
        if options.get("chord") is not None:
            raise TypeError(
                "a group cannot end a member of a chord header; put its tasks in the header"
            )

    def attach_chain(self, steps: list[Any]) -> None:
        self.options["chain"] = [*steps, *(self.options.get("chain") or [])]

    def result_ids(self) -> list[str]:
        return [i for task in self.tasks for i in task.result_ids()]

    def _build(
        self, emit: Emit, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultBase:
        args, kwargs = _partial(self, args, kwargs)
        opts = {**self.options, **options}
        rest = opts.pop("chain", None)
        if rest:  # a group followed by more steps is a chord
            steps = [signature(d, app=self._app) for d in reversed(rest)]
            body = steps[0] if len(steps) == 1 else chain(*steps, app=self._app)
            header = group(*self.tasks, app=self._app, **opts)
            return chord(header, body=body, app=self._app)._build(emit, args, kwargs, {})
        _split(opts, LEAF_OPTIONS)
        links, errbacks = _as_list(opts.pop("link", None)), _as_list(opts.pop("link_error", None))
        for callback in links:
            self.link(callback)
        for errback in errbacks:
            self.link_error(errback)
        gid = opts.pop("task_id", None) or new_id()
        self.kwargs["tasks"] = _flat(self.tasks)
        results = [
            task._build(emit, args, kwargs, {**opts, **_place(task, gid, i)})
            for i, task in enumerate(self.tasks)
        ]
        return GroupResult(gid, results, app=emit.app)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        gid = options.get("task_id") or self.options.get("task_id") or new_id()
        partial_args, partial_kwargs = _partial(self, args or (), kwargs or {})
        results = [task.apply(partial_args, partial_kwargs) for task in _flat(self.tasks)]
        return GroupResult(gid, results, app=self.app)


def _flat(tasks: list[Signature]) -> list[Signature]:
    """A group's members with nested groups' members in their place (as Celery: the
    tasks of a group in a group run as members of the outer one)."""
    members: list[Signature] = []
    for task in tasks:
        members.extend(_flat(task.tasks) if isinstance(task, group) else [task])
    return members


def _place(task: Signature, group_id: str, index: int) -> dict[str, Any]:
    """A group member's group id and index. A member frozen into a chord of its own
    keeps its place (as Celery's immutable ``group_id``): Celery's client sends a chain
    that ends in a group, in a chord header, as that group's members counted in the
    outer chord."""
    own = task.options
    if own.get("chord") is not None and own.get("group_id"):
        return {"group_id": own["group_id"], "group_index": own.get("group_index", index)}
    return {"group_id": group_id, "group_index": index}


def _header_members(header: Signature) -> list[Signature]:
    """The header's tasks, nested groups (and chunks) flattened: each member is one
    result of the chord."""
    members: list[Signature] = []
    for task in header.tasks if isinstance(header, group) else [header]:
        member = getattr(task, "group")() if task.subtask_type == "chunks" else task  # noqa: B009
        if isinstance(member, group):
            members.extend(_header_members(member))
        else:
            members.append(member)
    return members


@Signature.register_type("chord")
class chord(Signature):
    """A group whose results go, in order, to a body when all are done:
    ``chord(add.s(i, i) for i in range(10))(xsum.s())``."""

    def __init__(
        self,
        header: Any = (),
        body: Any = None,
        task: str = "celery.chord",
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        app: Celeriac | None = None,
        **options: Any,
    ) -> None:
        head: Signature | None = header if isinstance(header, group) else None
        if not isinstance(head, group):
            if isinstance(header, dict):
                head = signature(header, app=app)
                if not isinstance(head, group):
                    head = group(head, app=app)
            else:
                head = group(*header, app=app)
        app = app or head._app or getattr(body, "_app", None)
        super().__init__(
            task,
            args,
            {
                **(kwargs or {}),
                "header": head,
                "body": maybe_signature(body, app=app),
                "kwargs": (kwargs or {}).get("kwargs", {}),
            },
            options,
            subtask_type="chord",
            app=app,
        )

    def _adopt(self) -> None:
        header = self.kwargs.get("header") or []
        head = signature(header, app=self._app) if isinstance(header, dict) else None
        if not isinstance(head, group):
            head = group(*([head] if head is not None else header), app=self._app)
        # Celery keeps the header group's id in the chord's own task_id option
        if not head.options.get("task_id") and self.options.get("task_id"):
            head.options["task_id"] = self.options["task_id"]
        self.kwargs["header"] = head
        self.kwargs["body"] = maybe_signature(self.kwargs.get("body"), app=self._app)
        self.kwargs.setdefault("kwargs", {})

    @property
    def header(self) -> group:
        return self.kwargs["header"]  # type: ignore[no-any-return]

    @property
    def tasks(self) -> list[Signature]:
        return self.header.tasks

    @property
    def body(self) -> Signature:
        return self.kwargs["body"]  # type: ignore[no-any-return]

    @body.setter
    def body(self, value: Any) -> None:
        self.kwargs["body"] = maybe_signature(value, app=self._app)

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(body)``: send the chord with this body."""
        sig: chord = self
        if body is not None:
            sig = self.clone()  # type: ignore[assignment]
            sig.body = body
        return sig.apply_async((), {}, **options)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature) and self.body is not None:
            sig: chord = self.clone()  # type: ignore[assignment]
            sig.body = sig.body | other
            return sig
        return super().__or__(other)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, body={self.body!r})"

    def link(self, callback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        return self.body.link(callback)

    def link_error(self, errback: Signature | dict[str, Any]) -> Signature | dict[str, Any]:
        return self.body.link_error(errback)

    def _prepare(self) -> tuple[str, list[Signature]]:
        """Flatten the header (in place) and give it an id, kept (as Celery does) in the
        header group's and the chord's ``task_id`` options."""
        if self.body is None:
            raise ValueError("a chord needs a body: chord(header)(body) or chord(header, body)")
        members = _header_members(self.header)
        self.header.kwargs["tasks"] = members
        gid = self.header.options.get("task_id") or self.options.get("task_id") or new_id()
        self.header.options["task_id"] = self.options["task_id"] = gid
        if type(self.body) is Signature:
            self.body.options.setdefault("group_id", gid)
        return gid, members

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultBase:
        """Assign the ids (header group, members, body; ``_id`` is the body's unless it
        has one) and return the body's result, whose parent is the header's."""
        leaf = {
            k: v
            for k, v in (("group_id", group_id), ("chord", chord), ("group_index", group_index))
            if v is not None
        }
        if leaf:
            self.body.set_leaf(plain(leaf))
        gid, members = self._prepare()
        body_result = self.body.freeze(None if self.body.result_ids() else _id, root_id=root_id)
        results = [m.freeze(group_id=gid, group_index=i) for i, m in enumerate(members)]
        _top(body_result).parent = GroupResult(gid, results, app=self.app)
        return body_result

    def set_leaf(self, options: dict[str, Any]) -> None:
        self.body.set_leaf(options)

    def attach_chain(self, steps: list[Any]) -> None:
        self.body.attach_chain(steps)

    def result_ids(self) -> list[str]:
        return self.body.result_ids()

    def _build(
        self, emit: Emit, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultBase:
        args, kwargs = _partial(self, args, kwargs)
        body_id = options.get("task_id")
        opts = {**self.options, **options}
        opts.pop("task_id", None)
        outer = opts.pop("chain", None)
        if outer:
            self.body.attach_chain(list(outer))
        for callback in _as_list(opts.pop("link", None)):
            self.body.link(callback)
        for errback in _as_list(opts.pop("link_error", None)):
            self.body.link_error(errback)
        body_result = self.freeze(body_id, **_split(opts, LEAF_OPTIONS))
        header_result = _top(body_result)
        assert isinstance(header_result, GroupResult) and header_result.id is not None
        gid, members = header_result.id, self.header.tasks
        body = plain(self.body)
        body["chord_size"] = len(members)
        header_opts = {**self.header.options, **opts}
        header_opts.pop("task_id", None)
        if not members:  # nothing to wait for: the body runs now, with no results
            self.body._build(emit, ([],), {}, opts)
        else:
            emit.chord_start(gid, len(members))
        for i, member in enumerate(members):
            member._build(
                emit,
                args,
                kwargs,
                {**header_opts, "group_id": gid, "group_index": i, "chord": body},
            )
        return body_result

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        header = group(*_header_members(self.header), app=self._app)
        header_result = header.apply(args, kwargs)
        values = header_result.get(propagate=False)
        failure = next((v for v in values if isinstance(v, BaseException)), None)
        if failure is not None:
            from celeriac.exceptions import ChordError  # noqa: PLC0415

            error = ChordError(f"Dependency raised {failure!r}")
            result: Any = EagerResult(new_id(), error, states.FAILURE, app=self.app)
        else:
            result = self.body.apply((values,))
        _top(result).parent = header_result
        return result


_chord = chord  # for the methods whose ``chord`` argument hides the class

__all__ = ["chain", "chord", "group"]
