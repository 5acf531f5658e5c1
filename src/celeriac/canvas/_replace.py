"""``Task.replace`` and ``Task.add_to_chord``: a running task changes its workflow.

* :func:`replacement` builds what ``Task.replace(sig)`` sends: ``sig`` takes the running
  task's place, so it inherits the task's id (a caller waiting on it gets the
  replacement's result), its callbacks and errbacks, its group and chord membership and
  the rest of its chain, with ``replaced_task_nesting`` one deeper. A group is turned
  into a chord whose body (``celery.accumulate``) returns the group's results as one
  value, so there is one result to link to and to count in a chord; a chain ending in
  a group likewise. The task then raises ``Ignore``: nothing is stored for it, its
  message is acked, and the replacement (already sent, before the ack) finishes in its
  name.
* :func:`add_to_chord` adds a signature to the chord the running task is a header
  member of: the chord's size grows by one (``ResultBackend.chord_grow``) before the
  new member is sent, with the same group, index and body.

Both are Celery's behaviour, measured in ``tests/semantics/test_replace_semantics.py``
and ``test_chord_errors_semantics.py``. Notes: ``docs/internals/canvas.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.canvas._primitives import chain, chord, group
from celeriac.canvas._signature import Signature, maybe_signature, signature
from celeriac.exceptions import Ignore, ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Context, Task

#: The built-in task a group replacement's chord ends with.
ACCUMULATE = "celery.accumulate"


def _accumulate(app: Celeriac) -> Signature:
    return Signature(ACCUMULATE, (), {"index": 0}, app=app)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def replacement(task: Task[Any, Any], sig: Any) -> Signature:
    """The signature ``task.replace(sig)`` sends in place of the running task."""
    app = task.app
    request = task.request
    given = maybe_signature(sig, app=app)
    if not isinstance(given, Signature):
        raise TypeError(f"replace() takes a signature, got {sig!r}")
    new: Signature = given.clone()
    if "chord" in new.options:
        raise ImproperlyConfigured("A signature replacing a task must not be part of a chord")
    if isinstance(new, chain) and not new.tasks:
        raise ImproperlyConfigured("Cannot replace with an empty chain")
    if isinstance(new, group):
        new = chord(new, body=_accumulate(app), app=app)
    if isinstance(new, chain) and isinstance(new.tasks[-1], group):
        steps = list(new.tasks)
        steps[-1] = chord(steps[-1], body=_accumulate(app), app=app)
        new.kwargs["tasks"] = steps
    for callback in _listed(request.callbacks):
        new.link(callback)
    for errback in _listed(request.errbacks):
        new.link_error(errback)
    new.freeze(request.id)
    nesting = replaced_nesting(request) + 1
    new.set(replaced_task_nesting=nesting)
    if isinstance(new, chain):
        for step in new.tasks:
            step.set(replaced_task_nesting=nesting)
    rest = [signature(step, app=app).clone() for step in reversed(_listed(request.chain))]
    if rest:
        for step in rest:
            step.set(replaced_task_nesting=nesting)
        new = chain(new, *rest, app=app)
    # its place in the workflow (a chain's leaf options go to its last step), and, as
    # for anything a task sends, the replaced task as its parent
    placed = {
        "chord": request.chord,
        "group_id": request.group,
        "group_index": request.group_index,
        "root_id": request.root_id,
        "parent_id": request.id,
    }
    new.set(**{k: v for k, v in placed.items() if v is not None})
    return new


def replaced() -> Ignore:
    """What ``replace`` raises once the replacement is sent, as Celery."""
    return Ignore("Replaced by new task")


def replaced_nesting(request: Context) -> int:
    """How many replacements deep the running task is (its ``replaced_task_nesting``)."""
    value = request.message_headers.get("replaced_task_nesting")
    return value if isinstance(value, int) else 0


def chord_member(task: Task[Any, Any], sig: Any) -> Signature:
    """``sig`` set up as one more member of the running task's chord."""
    request = task.request
    if not request.chord:
        raise ValueError("Current task is not member of any chord")
    new = maybe_signature(sig, app=task.app)
    if not isinstance(new, Signature):
        raise TypeError(f"add_to_chord() takes a signature, got {sig!r}")
    new.set(
        group_id=request.group,
        group_index=request.group_index,
        chord=request.chord,
        root_id=request.root_id,
    )
    new.freeze()
    return new


async def grow_chord(app: Celeriac, group_id: str) -> None:
    """Count one more header member for chord ``group_id``."""
    backend = await app.get_backend()
    await backend.chord_grow(group_id, 1)


def accumulate(*args: Any, **kwargs: Any) -> Any:
    """``celery.accumulate``: the argument at ``index``, or all of them."""
    index = kwargs.get("index")
    return args[index] if index is not None else args


__all__ = [
    "ACCUMULATE",
    "accumulate",
    "chord_member",
    "grow_chord",
    "replaced",
    "replacement",
]
