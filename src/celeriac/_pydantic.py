"""``@app.task(pydantic=True)``: arguments validated into the annotated pydantic models,
model results dumped, as Celery 5.5+ does.

- On the worker (and for a direct or eager call), each argument whose parameter is
  annotated with a pydantic model (or ``Optional[Model]`` with a value that is not None)
  is rebuilt with ``Model.model_validate(value, strict=pydantic_strict,
  context={**pydantic_context, "celery_app": app, "celery_task_name": name})``: the task
  gets the model, not the dict the message carried. Bad data fails the task with
  pydantic's ``ValidationError``.
- A returned model that is an instance of the return annotation (or of ``X`` in
  ``Optional[X]``) is stored as ``model.model_dump(mode="json", **pydantic_dump_kwargs)``.
- On the caller, a model passed for a model-annotated parameter is sent as its dump,
  when validating that dump gives an equal model back (other serializers than pickle:
  pickle sends the model as it is). Anything else is left for the serializer to refuse.

pydantic is optional (``pip install celeriac[pydantic]``): without it ``pydantic=True``
fails when the task is defined.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app import Celeriac

#: the task options this module reads (``@app.task(pydantic=True, pydantic_strict=...)``)
OPTIONS = ("pydantic", "pydantic_strict", "pydantic_context", "pydantic_dump_kwargs")

_SKIPPED_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _optional_of(annotation: Any) -> Any:
    """``X`` for ``Optional[X]`` / ``X | None``; None for any other annotation."""
    origin = typing.get_origin(annotation)
    if origin is not typing.Union and origin is not types.UnionType:
        return None
    members = typing.get_args(annotation)
    others = [member for member in members if member is not type(None)]
    if len(members) != 2 or len(others) != 1:
        return None
    return others[0]


def _is_class(annotation: Any) -> bool:
    return isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias)


class PydanticTask:
    """The models of one task function, and the wrapper that applies them."""

    def __init__(
        self, fn: Callable[..., Any], app: Celeriac, name: str, options: Mapping[str, Any]
    ) -> None:
        try:
            import pydantic  # noqa: PLC0415 - optional
        except ModuleNotFoundError as exc:
            raise ImproperlyConfigured(
                f"task {name}: pydantic=True needs pydantic (pip install 'celeriac[pydantic]')"
            ) from exc
        self.base_model: type[Any] = pydantic.BaseModel
        self.fn = fn
        self.app = app
        self.name = name
        self.strict = bool(options.get("pydantic_strict", False))
        self.context = dict(options.get("pydantic_context") or {})
        self.dump_kwargs = {"mode": "json", **dict(options.get("pydantic_dump_kwargs") or {})}
        self.signature = inspect.signature(fn)
        try:
            self.hints: dict[str, Any] = typing.get_type_hints(fn)
        except (NameError, AttributeError, TypeError):  # unresolvable: the raw annotations
            self.hints = {}
        kind = inspect.Parameter
        params = self.signature.parameters.values()
        positional = (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
        keyword = (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)
        self.positional = [p.name for p in params if p.kind in positional]
        self.keywords = {p.name for p in params if p.kind in keyword}

    def _annotation(self, name: str) -> Any:
        if name in self.hints:
            return self.hints[name]
        if name == "return":
            return self.signature.return_annotation
        return self.signature.parameters[name].annotation

    def model_for(self, name: str, value: Any) -> type[Any] | None:
        """The model the parameter ``name`` takes ``value`` as, or None."""
        parameter = self.signature.parameters.get(name)
        if parameter is None or parameter.kind in _SKIPPED_KINDS:
            return None
        annotation = self._annotation(name)
        inner = _optional_of(annotation)
        if inner is not None and value is not None:
            annotation = inner
        if _is_class(annotation) and issubclass(annotation, self.base_model):
            return cast("type[Any]", annotation)
        return None

    def validate(self, model: type[Any], value: Any) -> Any:
        context = {**self.context, "celery_app": self.app, "celery_task_name": self.name}
        return model.model_validate(value, strict=self.strict, context=context)

    # -- the worker's side ------------------------------------------------------------
    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        bound = self.signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            model = self.model_for(name, value)
            if model is not None:
                bound.arguments[name] = self.validate(model, value)
        return bound

    def _dumped(self, value: Any) -> Any:
        annotation = self._annotation("return")
        annotation = _optional_of(annotation) or annotation
        if (
            _is_class(annotation)
            and isinstance(value, self.base_model)
            and isinstance(value, annotation)
        ):
            return value.model_dump(**self.dump_kwargs)
        return value

    def wrapper(self) -> Callable[..., Any]:
        """The function the task runs: validates, calls ``fn``, dumps its result."""
        fn = self.fn
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                bound = self._bind(args, kwargs)
                return self._dumped(await fn(*bound.args, **bound.kwargs))

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = self._bind(args, kwargs)
            return self._dumped(fn(*bound.args, **bound.kwargs))

        return run

    # -- the caller's side ------------------------------------------------------------
    def dump_arguments(
        self, args: list[Any], kwargs: dict[str, Any], bound: bool
    ) -> tuple[list[Any], dict[str, Any]]:
        """``args``/``kwargs`` with each model the worker would rebuild equal dumped."""
        values = [*args, *kwargs.values()]
        if not any(isinstance(value, self.base_model) for value in values):
            return args, kwargs
        try:
            self.signature.bind(*([None] if bound else []), *args, **kwargs)
        except TypeError:
            return args, kwargs  # the send's own argument check says what is wrong
        names = self.positional[1:] if bound else self.positional
        new_args = [
            self._dump_one(names[index] if index < len(names) else None, value)
            for index, value in enumerate(args)
        ]
        new_kwargs = {
            key: self._dump_one(key if key in self.keywords else None, value)
            for key, value in kwargs.items()
        }
        return new_args, new_kwargs

    def _dump_one(self, name: str | None, value: Any) -> Any:
        if name is None or not isinstance(value, self.base_model):
            return value
        model = self.model_for(name, value)
        if model is None:
            return value
        try:
            dumped = value.model_dump(**self.dump_kwargs)
            if self.validate(model, dumped) == value:
                return dumped
        except Exception:
            pass
        return value


def wrap(
    fn: Callable[..., Any], app: Celeriac, name: str, options: Mapping[str, Any]
) -> tuple[Callable[..., Any], PydanticTask | None]:
    """``fn`` as the task runs it, and its models (None without ``pydantic=True``)."""
    extra = [key for key in OPTIONS[1:] if key in options]
    if not options.get("pydantic"):
        if extra:
            raise ImproperlyConfigured(
                f"task {name}: {extra[0]} has no effect without pydantic=True"
            )
        return fn, None
    models = PydanticTask(fn, app, name, options)
    return models.wrapper(), models


def dump_sent(
    task: Any, args: list[Any], kwargs: dict[str, Any], serializer: str | None
) -> tuple[list[Any], dict[str, Any]]:
    """The caller's side of a send: models dumped for a ``pydantic=True`` task."""
    models: PydanticTask | None = getattr(task, "_pydantic_models", None)
    if models is None or serializer == "pickle":
        return args, kwargs
    return models.dump_arguments(args, kwargs, bound=bool(task.bind))


__all__ = ["OPTIONS", "PydanticTask", "dump_sent", "wrap"]
