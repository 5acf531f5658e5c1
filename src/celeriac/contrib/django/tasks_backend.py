"""A backend for Django's task framework that runs the tasks on celeriac workers.

Django 6's ``django.tasks`` (before Django 6: the ``django-tasks`` package, module
``django_tasks``, with the same API). In ``settings.py``::

    TASKS = {
        "default": {
            "BACKEND": "celeriac.contrib.django.TasksBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"APP": "proj.celery:app"},  # default: the current celeriac app
        }
    }

A Django ``@task`` becomes a celeriac task named after the function's dotted path
(``demoapp.tasks.calculate``), registered when its module is imported, so a celeriac
worker of the project runs it beside Celery-style tasks, from the same queues:

* Django's queue ``"default"`` is the app's ``task_default_queue`` (``celery``); other
  queue names are the broker's queues of that name;
* Django's priorities (-100 to 100, higher first) map onto the broker's 0-9 (higher
  first): ``(priority + 100) * 9 // 200``, so 0 is 4;
* ``run_after`` is the message's ETA;
* results are the app's result backend: ``get_result()`` reads the task's state there,
  and an enqueue record (args, times, workers) kept beside it under
  ``django-task-<id>`` for ``result_expires``.
"""

from __future__ import annotations

import importlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._loop import run_sync


def _framework(submodule: str = "") -> Any:
    """``django.tasks<submodule>``, or ``django_tasks<submodule>`` before Django 6."""
    try:
        return importlib.import_module("django.tasks" + submodule)
    except ModuleNotFoundError as exc:
        if exc.name not in ("django.tasks", "django.tasks" + submodule):
            raise
        return importlib.import_module("django_tasks" + submodule)


_tasks = _framework()
_base = _framework(".base")
_signals = _framework(".signals")
_backends_base = _framework(".backends.base")
TaskResultDoesNotExist: type[Exception] = _framework(".exceptions").TaskResultDoesNotExist
Status = _tasks.TaskResultStatus

if TYPE_CHECKING:
    from celeriac.app import Celeriac

    BaseTaskBackend = Any
    DjangoTask = Any
else:
    BaseTaskBackend = _backends_base.BaseTaskBackend
    DjangoTask = _base.Task

RECORD_PREFIX = "django-task-"

#: celeriac's states -> Django's
_STATUS = {
    states.PENDING: "READY",
    states.RECEIVED: "READY",
    states.STARTED: "RUNNING",
    states.RETRY: "RUNNING",
    states.SUCCESS: "SUCCESSFUL",
}


def broker_priority(priority: int) -> int:
    """Django's -100..100 onto the broker's 0..9 (both: higher runs first)."""
    return (int(priority) + 100) * 9 // 200


class CeleriacTask(DjangoTask):  # type: ignore[misc]
    """Django's ``Task`` that registers itself as a celeriac task when defined."""

    __slots__ = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        backend = self.get_backend()
        if isinstance(backend, TasksBackend):
            backend.register(self)


class TasksBackend(BaseTaskBackend):  # type: ignore[misc]
    """``django.tasks`` backend: enqueue onto celeriac's broker, results from its backend."""

    task_class = CeleriacTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._app: Celeriac | None = None

    # -- the app --------------------------------------------------------------
    @property
    def app(self) -> Celeriac:
        if self._app is None:
            spec = self.options.get("APP")
            if spec:
                module_name, _, attr = str(spec).replace(":", ".").rpartition(".")
                self._app = getattr(importlib.import_module(module_name), attr)
            else:
                from celeriac.app import current_app  # noqa: PLC0415

                self._app = current_app()
        return self._app

    def register(self, task: Any) -> None:
        """Make ``task`` a celeriac task of the app (once per dotted path)."""
        name = task.module_path
        if name not in self.app.tasks:
            self.app._register(_runner(self, task), {"name": name, "bind": True})

    def queue(self, queue_name: str) -> str:
        if queue_name == _tasks.DEFAULT_TASK_QUEUE_NAME:
            return str(self.app.conf["task_default_queue"])
        return queue_name

    # -- enqueue ----------------------------------------------------------------
    def _prepare(self, task: Any, args: Any, kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.validate_task(task)
        self.register(task)
        result = _tasks.TaskResult(
            task=task,
            id=_uuid(),
            status=Status.READY,
            enqueued_at=_now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        options = {
            "task_id": result.id,
            "queue": self.queue(task.queue_name),
            "priority": broker_priority(task.priority),
            "eta": task.run_after,
        }
        return result, options

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        result, options = self._prepare(task, args, kwargs)
        if not self._rpc():
            run_sync(self.app.backend_store(RECORD_PREFIX + result.id, _record(result)))
        self.app.send_task(task.module_path, result.args, result.kwargs, **options)
        _signals.task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        result, options = self._prepare(task, args, kwargs)
        if not self._rpc():
            await self.app.backend_store(RECORD_PREFIX + result.id, _record(result))
        await self.app.asend_task(task.module_path, result.args, result.kwargs, **options)
        await _signals.task_enqueued.asend(type(self), task_result=result)
        return result

    # -- results ----------------------------------------------------------------
    def get_result(self, result_id: str) -> Any:
        self._check_results()
        record = run_sync(self.app.backend_get(RECORD_PREFIX + result_id))
        meta = run_sync(self.app.backend_get(result_id)) if record else None
        return self._result(result_id, record, meta)

    async def aget_result(self, result_id: str) -> Any:
        self._check_results()
        record = await self.app.backend_get(RECORD_PREFIX + result_id)
        meta = await self.app.backend_get(result_id) if record else None
        return self._result(result_id, record, meta)

    def _rpc(self) -> bool:
        from celeriac.transports import backend_class  # noqa: PLC0415

        return backend_class(self.app.backend_url).needs_reply_to

    def _check_results(self) -> None:
        if self._rpc():
            raise NotImplementedError(
                "get_result() needs a result backend that any process can read "
                f"(redis://, sqlite://), not {self.app.backend_url!r}"
            )

    def _result(self, result_id: str, record: Any, meta: dict[str, Any] | None) -> Any:
        if not record:
            raise TaskResultDoesNotExist(result_id)
        info = record["result"]
        task = importlib.import_module(info["module"])
        for part in info["qualname"].split("."):
            task = getattr(task, part)
        state = (meta or {}).get("status", states.PENDING)
        status = _STATUS.get(state, "FAILED")
        if status == "READY" and info.get("started_at"):
            status = "RUNNING"  # the worker began it (its state is stored when it ends)
        errors = []
        if status == "FAILED" and meta is not None:
            raw = meta.get("result")
            exc: dict[str, Any] = raw if isinstance(raw, dict) else {}
            path = f"{exc.get('exc_module') or 'builtins'}.{exc.get('exc_type') or 'Exception'}"
            errors.append(
                _base.TaskError(exception_class_path=path, traceback=meta.get("traceback") or "")
            )
        done = status in ("SUCCESSFUL", "FAILED") and meta is not None
        result = _tasks.TaskResult(
            task=task,
            id=result_id,
            status=Status[status],
            enqueued_at=_time(info.get("enqueued_at")),
            started_at=_time(info.get("started_at")),
            finished_at=_time(meta.get("date_done")) if done and meta else None,
            last_attempted_at=_time(info.get("started_at")),
            args=info["args"],
            kwargs=info["kwargs"],
            backend=self.alias,
            errors=errors,
            worker_ids=list(info.get("worker_ids") or []),
        )
        if status == "SUCCESSFUL" and meta is not None:
            object.__setattr__(result, "_return_value", meta.get("result"))
        return result


def _runner(backend: TasksBackend, task: Any) -> Any:
    """The celeriac task body that runs Django's ``task`` in the worker."""

    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        app = backend.app
        record_id = RECORD_PREFIX + request.id
        record = run_sync(app.backend_get(record_id)) if not backend._rpc() else None
        info = dict(record["result"]) if record else _info(task, request.id, args, kwargs)
        now = _now()
        info["started_at"] = now.isoformat()
        info["worker_ids"] = [*(info.get("worker_ids") or []), request.hostname or ""]
        if record:
            run_sync(app.backend_store(record_id, {**record, "result": info}))
        running = _tasks.TaskResult(
            task=task,
            id=request.id,
            status=Status.RUNNING,
            enqueued_at=_time(info.get("enqueued_at")),
            started_at=now,
            finished_at=None,
            last_attempted_at=now,
            args=list(args),
            kwargs=dict(kwargs),
            backend=backend.alias,
            errors=[],
            worker_ids=info["worker_ids"],
        )
        _signals.task_started.send(type(backend), task_result=running)
        try:
            if task.takes_context:
                value = task.call(_tasks.TaskContext(task_result=running), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
        except BaseException:
            object.__setattr__(running, "status", Status.FAILED)
            _signals.task_finished.send(type(backend), task_result=running)
            raise
        object.__setattr__(running, "status", Status.SUCCESSFUL)
        object.__setattr__(running, "finished_at", _now())
        object.__setattr__(running, "_return_value", value)
        _signals.task_finished.send(type(backend), task_result=running)
        return value

    run.__name__ = task.func.__name__
    run.__module__ = task.func.__module__
    run.__qualname__ = task.func.__qualname__
    return run


def _info(task: Any, result_id: str, args: Any, kwargs: Any) -> dict[str, Any]:
    func = task.func
    return {
        "module": func.__module__,
        "qualname": func.__qualname__,
        "id": result_id,
        "args": list(args),
        "kwargs": dict(kwargs),
        "priority": task.priority,
        "queue_name": task.queue_name,
        "enqueued_at": None,
        "started_at": None,
        "worker_ids": [],
    }


def _record(result: Any) -> dict[str, Any]:
    """The enqueue record, stored as a result meta of its own."""
    info = _info(result.task, result.id, result.args, result.kwargs)
    info["enqueued_at"] = result.enqueued_at.isoformat()
    return {
        "status": states.PENDING,
        "result": info,
        "traceback": None,
        "children": [],
        "date_done": None,
        "task_id": RECORD_PREFIX + result.id,
    }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _uuid() -> str:
    import uuid  # noqa: PLC0415

    return str(uuid.uuid4())
