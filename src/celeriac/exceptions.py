"""Exceptions raised by celeriac, under the names Celery users import.

Hierarchy::

    CeleriacError
    ├── ImproperlyConfigured        bad or unknown setting, bad URL (raised at start-up)
    ├── NotRegistered (KeyError)    no task of that name in the registry
    ├── MessageError                a message that cannot be decoded or fails validation
    │   └── ContentDisallowed       a serializer that is not in ``accept_content``
    ├── BrokerError                 a broker cannot be reached or answered with an error
    ├── TimeoutError                ``AsyncResult.get`` waited longer than ``timeout``
    ├── TaskRevokedError            the task was revoked or expired
    ├── ChordError                  a chord header task failed
    ├── IncompleteStream            ``AsyncResult.collect`` reached an unfinished task
    ├── MaxRetriesExceededError     ``Task.retry`` past ``max_retries``
    └── TaskPredicate               control flow raised inside a task
        ├── Retry                   re-run the task later
        ├── Ignore                  do not record a state
        └── Reject                  reject the message (optionally requeue)
    SoftTimeLimitExceeded           raised inside a task at its soft time limit
    TimeLimitExceeded               recorded when a task is stopped at its hard limit
    WorkerLostError                 the process running the task died
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any


class CeleriacError(Exception):
    """Base class of every celeriac error."""


CeleryError = CeleriacError


class ImproperlyConfigured(CeleriacError):
    """A setting, URL or option is wrong; the message says what to change."""


class NotRegistered(KeyError, CeleriacError):
    """The task name is not registered."""

    def __str__(self) -> str:
        return repr(self.args[0]) if self.args else "NotRegistered"


class MessageError(CeleriacError):
    """A message failed to decode or validate; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContentDisallowed(MessageError):
    """The message's content type is not listed in ``accept_content``."""


class DecodeError(MessageError):
    """The message bytes are not valid for their content type."""


class BrokerError(CeleriacError):
    """The broker could not be reached or returned an error; ``refused`` is true when it
    answered and refused the connection (credentials, vhost or database): trying again
    cannot help, so a worker fails at start-up instead of retrying."""

    refused: bool = False


class BackendError(CeleriacError):
    """The result backend could not be reached or returned an error; ``refused`` as for
    :class:`BrokerError`."""

    refused: bool = False


class TimeoutError(CeleriacError, builtins.TimeoutError):
    """The operation timed out."""


class TaskRevokedError(CeleriacError):
    """The task was revoked (or expired) and will not run."""


class ChordError(CeleriacError):
    """A task in a chord header failed."""


class IncompleteStream(CeleriacError):
    """``collect()``/``iterdeps()`` found a result that is not ready yet."""


class MaxRetriesExceededError(CeleriacError):
    """The task was retried more than ``max_retries`` times."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        super().__init__(*args)
        self.task_args = task_args
        self.task_kwargs = task_kwargs


class TaskPredicate(CeleriacError):
    """Base class of the exceptions a task raises to steer the worker."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry``: the task will run again at ``when``."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(message, exc, when)

    def humanize(self) -> str:
        if isinstance(self.when, (int, float)):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc is not None:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """The task asks the worker not to record any state for it."""


class Reject(TaskPredicate):
    """The task rejects its message; ``requeue=True`` puts it back in the queue."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit is reached."""


class TimeLimitExceeded(Exception):
    """The task was stopped at its hard time limit."""


class WorkerLostError(Exception):
    """The worker process running the task exited unexpectedly."""


class Terminated(Exception):
    """The task was terminated by a revoke with ``terminate=True``."""


__all__ = [
    "BackendError",
    "BrokerError",
    "CeleriacError",
    "CeleryError",
    "ChordError",
    "ContentDisallowed",
    "DecodeError",
    "Ignore",
    "ImproperlyConfigured",
    "IncompleteStream",
    "MaxRetriesExceededError",
    "MessageError",
    "NotRegistered",
    "Reject",
    "Retry",
    "RetryTaskError",
    "SoftTimeLimitExceeded",
    "TaskPredicate",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
]
