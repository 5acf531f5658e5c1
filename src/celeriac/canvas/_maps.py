"""``chunks``, ``xmap`` and ``xstarmap``: a task applied to many argument lists.

``xmap``/``xstarmap`` are one message (``celery.map``/``celery.starmap``, built-in tasks
that call the task function for each item); ``chunks`` splits the items into parts of
``n`` and sends one ``celery.starmap`` message per part, as a group. Their dicts are
Celery's (``{"task": "celery.chunks", "kwargs": {"task": <sig>, "it": [...], "n": 10},
"subtask_type": "chunks", "immutable": true, ...}``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from celeriac.canvas._primitives import group
from celeriac.canvas._signature import Emit, Signature, maybe_signature
from celeriac.result import ResultBase

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class _MapSignature(Signature):
    """A task applied to every item of a list, in one task message."""

    task_name = ""
    kind = ""

    def __init__(
        self, task: Any, it: Iterable[Any], app: Celeriac | None = None, **options: Any
    ) -> None:
        sig = maybe_signature(task, app=app)
        app = app or getattr(sig, "_app", None)
        super().__init__(
            self.task_name,
            (),
            {"task": sig, "it": list(it)},
            options,
            subtask_type=self.kind,
            immutable=True,
            app=app,
        )

    def _adopt(self) -> None:
        self.kwargs["task"] = maybe_signature(self.kwargs.get("task"), app=self._app)


@Signature.register_type("xmap")
class xmap(_MapSignature):
    """``celery.map``: ``[task(item) for item in it]`` in one message (``task.map(it)``)."""

    task_name = "celery.map"
    kind = "xmap"


@Signature.register_type("xstarmap")
class xstarmap(_MapSignature):
    """``celery.starmap``: ``[task(*item) for item in it]`` (``task.starmap(it)``)."""

    task_name = "celery.starmap"
    kind = "xstarmap"


@Signature.register_type("chunks")
class chunks(Signature):
    """``it`` split into parts of ``n`` items, each part one ``celery.starmap`` message
    (``task.chunks(it, n)``); sending it sends a group."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Celeriac | None = None, **options: Any
    ) -> None:
        sig = maybe_signature(task, app=app)
        app = app or getattr(sig, "_app", None)
        super().__init__(
            "celery.chunks",
            (),
            {"task": sig, "it": list(it), "n": int(n)},
            options,
            subtask_type="chunks",
            immutable=True,
            app=app,
        )

    def _adopt(self) -> None:
        self.kwargs["task"] = maybe_signature(self.kwargs.get("task"), app=self._app)

    def group(self) -> group:
        """The group of ``celery.starmap`` signatures, one per part."""
        task, items, n = self.kwargs["task"], list(self.kwargs["it"]), int(self.kwargs["n"])
        parts = (list(p) for p in _batched(items, n))
        return group(
            *(xstarmap(task, part, app=self._app) for part in parts), app=self._app, **self.options
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> ResultBase:
        raise TypeError("chunks cannot be frozen; use chunks(...).group()")

    def _build(
        self, emit: Emit, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultBase:
        return self.group()._build(emit, args, kwargs, options)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        return self.group().apply(args, kwargs, **options)


def _batched(items: list[Any], n: int) -> Iterator[tuple[Any, ...]]:
    if n < 1:
        raise ValueError(f"chunks: n must be at least 1, got {n}")
    it = iter(items)
    while part := tuple(itertools.islice(it, n)):
        yield part


__all__ = ["chunks", "xmap", "xstarmap"]
