"""``beat_init`` and ``beat_embedded_init``: Celery's beat sends ``beat_init`` as it
starts, and ``beat_embedded_init`` too when it runs inside a worker (``-B``); their
receivers run in the beat's process, with the beat as sender."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support import WorkerProcess, wait_until, write_module

APP = """
import os
from celeriac import Celery, signals

app = Celery("sigbeat", broker=os.environ["SIG_BROKER"])
app.conf.beat_max_loop_interval = 1


def _record(name):
    def receiver(sender, **kwargs):
        with open(os.environ["SIG_RECORD"], "a") as f:
            f.write(f"{name} {type(sender).__name__} {os.getpid()}\\n")
    return receiver


signals.beat_init.connect(_record("beat_init"), weak=False)
signals.beat_embedded_init.connect(_record("beat_embedded_init"), weak=False)
"""


@pytest.mark.parametrize("embedded", [False, True], ids=["beat", "worker -B"])
def test_beat_sends_its_start_signals_in_its_own_process(tmp_path: Path, embedded: bool) -> None:
    write_module(tmp_path, "sigbeat", APP)
    record = tmp_path / "signals.txt"
    env = {"SIG_BROKER": f"sqlite:///{tmp_path / 'b.db'}", "SIG_RECORD": str(record)}
    proc = WorkerProcess(tmp_path, "sigbeat", "-P", "solo", "-B", env=env)
    if not embedded:
        proc.argv = [sys.executable, "-m", "celeriac", "-A", "sigbeat", "beat", "-l", "info"]
    expected = 2 if embedded else 1

    def lines() -> list[str]:
        return record.read_text().splitlines() if record.exists() else []

    proc.start(wait_ready=False)
    try:
        wait_until(lambda: len(lines()) >= expected, 60, "the beat's start signals")
        assert proc.proc is not None
        worker_pid = str(proc.proc.pid)
    finally:
        proc.stop()
    seen = [line.split() for line in lines()]
    assert [name for name, _, _ in seen] == (
        ["beat_init", "beat_embedded_init"] if embedded else ["beat_init"]
    )
    assert {sender for _, sender, _ in seen} == {"Beat"}
    pids = {pid for _, _, pid in seen}
    assert len(pids) == 1  # both in one process: the beat's
    assert (worker_pid not in pids) if embedded else (pids == {worker_pid})
