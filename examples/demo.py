"""Run a worker and a producer on the embedded SQLite broker, and print the results.

python examples/demo.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-demo-"))
    env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"}
    print(f"demo: broker and results in {workdir / 'celeriac.sqlite3'}")
    print("demo: starting `celeriac -A tasks worker --loglevel=info -c 2`")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "tasks", "worker", "--loglevel=info", "-c", "2"],
        cwd=workdir,
        env=env,
    )
    os.chdir(workdir)
    sys.path.insert(0, str(HERE))
    try:
        from tasks import add, fail, slow_echo

        started = time.perf_counter()
        result = add.delay(4, 4)
        print(f"demo: add.delay(4, 4).get() -> {result.get(timeout=30)}")
        results = [add.delay(i, i) for i in range(100)]
        print(f"demo: 100 more additions -> sum {sum(r.get(timeout=30) for r in results)}")
        echoes = [slow_echo.delay(word) for word in ("hello", "from", "asyncio")]
        print(f"demo: async tasks -> {[e.get(timeout=30) for e in echoes]}")
        try:
            fail.delay("this task fails on purpose").get(timeout=30)
        except ValueError as exc:
            print(f"demo: fail.delay(...).get() re-raised ValueError: {exc}")
        print(f"demo: done in {time.perf_counter() - started:.2f}s")
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


if __name__ == "__main__":
    sys.exit(main())
