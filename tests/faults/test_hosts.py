"""Several hosts: a producer, two worker hosts and a Redis broker, each in a network
namespace of its own on a private bridge (``netns.py``). One worker host's link is cut
in the middle of a drain: the tasks it held must be run by the other host once their
leases run out, and nothing may be lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.netns import Network, why_not
from faults.scenario import FAULTS_DIR, Broker, Scenario
from servers import missing, need_redis_server
from support import ROOT, wait_until

TASKS = 300
LEASE = 2.0


@pytest.fixture
def network() -> Iterator[Network]:
    reason = why_not()
    if reason is not None:
        missing(reason)
    need_redis_server()
    with Network("broker", "producer", "w1", "w2") as net:
        yield net


@pytest.fixture
def broker_host(network: Network, tmp_path: Path) -> Iterator[str]:
    """A private redis-server on the broker host; its URL."""
    address = network.address("broker")
    options = ["--port", "6379", "--bind", address, "--protected-mode", "no", "--save", ""]
    proc = subprocess.Popen(
        [*network.exec("broker"), "redis-server", *options, "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("the broker host's redis-server did not start")
        yield f"redis://{address}:6379/0"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_cut_worker_host_s_tasks_run_on_the_other_host_within_the_lease(
    network: Network, broker_host: str, tmp_path: Path
) -> None:
    scenario = Scenario(tmp_path, Broker("redis", broker_host), lease=LEASE)
    scenario.probe = False  # the test process is not on the hosts' network
    try:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(FAULTS_DIR), str(ROOT / "tests")]),
        }
        produce = [str(FAULTS_DIR / "produce.py"), broker_host, scenario.queue, str(TASKS)]
        subprocess.run(
            [*network.exec("producer"), sys.executable, *produce, str(scenario.history.directory)],
            env=env,
            check=True,
            timeout=60,
        )
        scenario.history.load_enqueued()
        assert len(scenario.history.enqueued) == TASKS
        for host in ("w1", "w2"):
            scenario.worker(host, wrap=network.exec(host), wait_ready=False)
        for host in ("w1", "w2"):
            scenario.workers[host].wait_for(r"ready\.", 60)
        scenario.wait_finished(TASKS // 4, 30)
        wait_until(lambda: scenario.running("w1"), 20, "host w1 to run a task")
        cut = scenario.history.fault_at("link cut", "w1")
        cut.end = float("inf")  # never mended
        network.cut("w1")
        cut_done = time.time()  # from here on, nothing w1 sends arrives
        scenario.wait_finished(TASKS, LEASE + 10)
        drained = time.time() - cut.start
        scenario.kill_worker("w1")  # it waits on a dead link; the cut explains its runs
        report = scenario.verdict()
        scenario.assert_ok(report)
        runs = scenario.history.runs()
        held = [
            t
            for t, rs in runs.items()
            if any(r.worker == "w1" and (r.end is None or r.end > cut_done) for r in rs)
        ]
        assert held, "w1 was running tasks when its link was cut"
        for task_id in held:
            again = [r for r in runs[task_id] if r.worker == "w2" and r.start > cut_done]
            assert again, f"{task_id}, held by w1 at the cut, did not run on w2"
            late = again[0].start - cut.start
            # the lease, the sweep period (a quarter lease) and a second for a loaded machine
            assert late < LEASE * 1.25 + 1, f"w2 ran {task_id} {late:.1f} s after the cut"
        print(f"cut w1: the rest drained {drained:.1f} s later; {report.summary()}")
    finally:
        scenario.close()
