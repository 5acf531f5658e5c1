"""The client side of one benchmark phase, run as a subprocess by ``run.py`` with the
Python of the system under test (celeriac's venv, or the peers' venv).

    python _driver.py SYSTEM MODULE enqueue TASK N
    python _driver.py SYSTEM MODULE roundtrip TASK N WARMUP TIMEOUT

``MODULE`` is the task module ``run.py`` wrote to the working directory. The driver
prints one line ``BENCH-RESULT {json}`` on stdout. Standard library only, besides the
system itself, so the same file serves every venv.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def _sender(system: str, module: Any, task: str) -> Callable[[], Any]:
    """A no-argument callable that sends one task and returns its handle."""
    if hasattr(module, "bench_send"):  # the task module says how (procrastinate)
        return module.bench_send(task)  # type: ignore[no-any-return]
    if system in {"celeriac", "celery"}:
        return getattr(module, task).delay
    if system == "dramatiq":
        return getattr(module, task).send
    if system == "rq":
        queue, func = module.queue, getattr(module, task)
        return lambda: queue.enqueue(func)
    if system == "huey":
        return getattr(module, task)  # calling a Huey task enqueues it
    raise SystemExit(f"unknown system {system!r}")


def _waiter(system: str, module: Any, timeout: float) -> Callable[[Any], Any]:
    """A callable that blocks until a handle's result is stored, and returns it."""
    if hasattr(module, "bench_wait"):
        return lambda handle: module.bench_wait(handle, timeout)
    if system == "celery" and os.environ.get("BENCH_RESULT_URL", "").startswith("db+"):
        # the database backend polls: every millisecond rather than its 0.5 s default
        return lambda handle: handle.get(timeout=timeout, interval=0.001)
    if system in {"celeriac", "celery"}:
        return lambda handle: handle.get(timeout=timeout)
    if system == "dramatiq":
        backend = module.result_backend
        ms = int(timeout * 1000)
        return lambda handle: handle.get_result(backend=backend, block=True, timeout=ms)
    if system == "rq":
        seconds = max(1, int(timeout))

        def wait(job: Any) -> Any:
            result = job.latest_result(timeout=seconds)
            if result is None:
                raise TimeoutError(f"no result for job {job.id} after {seconds}s")
            if result.type != result.Type.SUCCESSFUL:
                raise RuntimeError(f"job {job.id} did not succeed: {result.exc_string}")
            return result.return_value

        return wait
    if system == "huey":
        return lambda handle: handle.get(blocking=True, timeout=timeout)
    raise SystemExit(f"unknown system {system!r}")


def _reply_queue(system: str, module: Any) -> str | None:
    """With ``rpc://`` results: the reply queue of this client, where the workers put
    the results (``run.py`` counts them there)."""
    if not os.environ.get("BENCH_RESULT_URL", "").startswith("rpc"):
        return None
    if system == "celeriac":
        return str(module.app.reply_to)
    if system == "celery":
        return str(module.app.backend.oid)
    return None


def enqueue(system: str, module: Any, task: str, n: int) -> dict[str, Any]:
    send = _sender(system, module, task)
    start = time.perf_counter()
    for _ in range(n):
        send()
    seconds = time.perf_counter() - start
    result = {"n": n, "seconds": seconds, "rate": n / seconds}
    queue = _reply_queue(system, module)
    if queue is not None:
        result["reply_queue"] = queue
    return result


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def roundtrip(
    system: str, module: Any, task: str, n: int, warmup: int, timeout: float
) -> dict[str, Any]:
    send = _sender(system, module, task)
    wait = _waiter(system, module, timeout)
    for _ in range(warmup):
        wait(send())
    samples: list[float] = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        wait(send())
        samples.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    samples.sort()
    return {
        "n": n,
        "warmup": warmup,
        "seconds": total,
        "p50_ms": _percentile(samples, 0.50) * 1000,
        "p90_ms": _percentile(samples, 0.90) * 1000,
        "p99_ms": _percentile(samples, 0.99) * 1000,
        "max_ms": samples[-1] * 1000,
        "mean_ms": total / n * 1000,
    }


def main(argv: list[str]) -> None:
    system, module_name, action, task, *rest = argv
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    if action == "enqueue":
        result = enqueue(system, module, task, int(rest[0]))
    elif action == "roundtrip":
        result = roundtrip(system, module, task, int(rest[0]), int(rest[1]), float(rest[2]))
    else:
        raise SystemExit(f"unknown action {action!r}")
    print("BENCH-RESULT " + json.dumps(result), flush=True)
    # skip interpreter teardown: some clients' daemon threads make exit slow or noisy
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
