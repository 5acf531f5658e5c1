"""Monkey patching for ``-P gevent``, done as Celery does it: when the ``celeriac`` command
line asks for the gevent pool, ``gevent.monkey.patch_all()`` runs as the package is first
imported, before celeriac's own imports (asyncio, ssl, socket, threading) and long before
the app's modules, so every socket, sleep, lock and thread a task uses yields to the
other greenlets instead of blocking the process. ``celeriac multi`` is left alone (its
workers patch themselves).

What patching means for the asyncio worker (design: :mod:`celeriac.worker.gevent_pool`):
asyncio's default selector becomes gevent's, so the worker's event loop waits inside the
gevent hub and the task greenlets run whenever the loop waits. The loop and the
greenlets share one thread, so a task's blocking celeriac call (``delay()``, ``get()``)
goes to the worker's loop (:func:`celeriac._loop.run_sync`) rather than to a loop of its
own, which asyncio would refuse to run beside the running one.

Only the standard library is imported here: this runs before everything else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: the one message for ``-P eventlet`` / ``worker_pool="eventlet"``
EVENTLET_REFUSED = (
    "-P eventlet: celeriac has no eventlet pool; use -P gevent for many I/O-bound tasks "
    "in one process "
    "(pip install 'celeriac[gevent]'), -P threads for blocking tasks on threads, or "
    "-P asyncio for async def tasks"
)
GEVENT_MISSING = "-P gevent needs the gevent package: pip install 'celeriac[gevent]'"


def pool_option(args: Sequence[str]) -> str | None:
    """The value of ``-P``/``--pool`` among command-line ``args``, or None."""
    for index, arg in enumerate(args):
        if arg in ("-P", "--pool"):
            return args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("--pool="):
            return arg.partition("=")[2]
        if arg.startswith("-P") and not arg.startswith("--"):
            return arg[2:].lstrip("=")
    return None


def _is_celeriac_command(argv: Sequence[str]) -> bool:
    """The program is the ``celeriac`` script or ``python -m celeriac`` (whose argv[0] is
    ``-m`` while the package is imported)."""
    program = argv[0] if argv else ""
    return (
        os.path.basename(program) == "celeriac"
        or program == "-m"
        or program.endswith(os.path.join("celeriac", "__main__.py"))
    )


def maybe_patch_concurrency(argv: Sequence[str] | None = None) -> bool:
    """Monkey patch with gevent if ``argv`` (default ``sys.argv``) is a celeriac command
    that asks for ``-P gevent``; whether the process is patched now."""
    argv = sys.argv if argv is None else argv
    if not _is_celeriac_command(argv) or "multi" in argv[1:]:
        return False
    if pool_option(argv[1:]) != "gevent":
        return False
    return patch_gevent()


def patch_gevent() -> bool:
    """``gevent.monkey.patch_all()`` once; False when gevent is not installed (the worker
    then stops at start-up with :data:`GEVENT_MISSING`)."""
    try:
        from gevent import monkey  # noqa: PLC0415 - optional, and only when asked for
    except ImportError:
        return False
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    return True


def gevent_patched() -> bool:
    """Whether gevent monkey patched this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


__all__ = [
    "EVENTLET_REFUSED",
    "GEVENT_MISSING",
    "gevent_patched",
    "maybe_patch_concurrency",
    "patch_gevent",
    "pool_option",
]
