"""The fault-injection suite, short run: real workers on SQLite, Redis and RabbitMQ,
faults in the middle of a drain, and the history's verdict (``history.py``): nothing
lost, nothing stuck, no duplicate that no fault explains. ``soak/run.py`` is the long
run of random faults."""

from __future__ import annotations

import time

import pytest

from faults.conftest import OpenScenario
from faults.proxy import FaultProxy
from faults.scenario import Scenario
from support import wait_until

BROKERS = ["sqlite", "redis", "amqp"]
PROXIED = ["redis", "amqp"]
TASKS = 200


@pytest.mark.parametrize("kind", BROKERS)
def test_kill_9_of_prefork_children(open_scenario: OpenScenario, kind: str) -> None:
    scenario = open_scenario(kind)
    scenario.publish(TASKS, seconds=(0.02, 0.05))  # still running when the kill comes
    scenario.start_workers("a", "b")
    scenario.wait_finished(TASKS // 4, 30)
    scenario.kill_child("a")
    scenario.wait_finished(TASKS // 2, 30)
    scenario.kill_child("b")
    report = scenario.verdict()
    scenario.assert_ok(report)
    assert report.duplicated, "the killed children's tasks ran again: the faults hit"


@pytest.mark.parametrize("kind", BROKERS)
def test_kill_9_of_a_whole_worker(open_scenario: OpenScenario, kind: str) -> None:
    scenario = open_scenario(kind)
    scenario.publish(TASKS, seconds=(0.02, 0.05))  # still running when the kill comes
    scenario.start_workers("a", "b")
    scenario.wait_finished(TASKS // 4, 30)
    wait_until(lambda: scenario.running("a", fresh=0.01), 20, "worker a to start a task")
    scenario.kill_worker("a")
    report = scenario.verdict()
    scenario.assert_ok(report)
    assert report.duplicated, "the killed worker's running tasks ran again: the fault hit"


@pytest.mark.parametrize("kind", BROKERS)
def test_sigterm_mid_drain_repeats_nothing(open_scenario: OpenScenario, kind: str) -> None:
    scenario = open_scenario(kind)
    scenario.publish(TASKS, seconds=(0.01, 0.05))
    scenario.start_workers("a", "b")
    scenario.wait_finished(TASKS // 4, 30)
    running = wait_until(lambda: scenario.running("a"), 20, "worker a to run a task")
    assert scenario.sigterm("a") == 0
    report = scenario.verdict()
    scenario.assert_ok(report)  # SIGTERM explains no duplicate
    runs = scenario.history.runs()
    for run in running:  # the warm shutdown finished what ran, on the same process
        assert [(r.pid, r.end is not None) for r in runs[run.task_id]] == [(run.pid, True)]


def _proxy(scenario: Scenario) -> FaultProxy:
    assert scenario.broker.proxy is not None
    return scenario.broker.proxy


@pytest.mark.parametrize("kind", PROXIED)
def test_connection_resets_and_a_throttled_link(open_scenario: OpenScenario, kind: str) -> None:
    scenario = open_scenario(kind, proxy=True)
    proxy = _proxy(scenario)
    scenario.publish(TASKS)
    scenario.start_workers("a", "b")
    for part in (1, 2, 3):
        scenario.wait_finished(TASKS * part // 6, 30)
        with scenario.history.fault("connection reset"):
            assert proxy.reset() > 0
    with scenario.history.fault("throttled to 20 kB/s + 5 ms"):
        proxy.throttle(20_000, 0.005)
        scenario.wait_finished(TASKS * 5 // 6, 30)
        proxy.throttle(None)
    report = scenario.verdict()
    scenario.assert_ok(report)
    assert proxy.connections > 4, "the workers connected again after the resets"


@pytest.mark.parametrize("kind", PROXIED)
def test_a_network_freeze_longer_than_the_lease(open_scenario: OpenScenario, kind: str) -> None:
    scenario = open_scenario(kind, proxy=True)
    proxy = _proxy(scenario)
    scenario.publish(TASKS)
    scenario.start_workers("a", "b")
    scenario.wait_finished(TASKS // 4, 30)
    with scenario.history.fault("network frozen"):
        proxy.freeze()
        time.sleep(scenario.lease * 1.5)  # the fault is the passing of time
        proxy.thaw()
    report = scenario.verdict()
    scenario.assert_ok(report)


def test_kill_9_of_the_redis_server_with_appendfsync_always(open_scenario: OpenScenario) -> None:
    scenario = open_scenario("redis", private=True)
    assert scenario.broker.kill is not None and scenario.broker.restart is not None
    scenario.publish(TASKS)
    scenario.start_workers("a", "b")
    scenario.wait_finished(TASKS // 4, 30)
    with scenario.history.fault("kill -9 broker"):
        scenario.broker.kill()
        scenario.broker.restart()
    report = scenario.verdict()
    scenario.assert_ok(report)


def test_a_silent_connection_loss_is_noticed_within_15_s(open_scenario: OpenScenario) -> None:
    """The open connections go silent (a NAT or load balancer forgot them); new ones
    pass. Every task must still finish within the lease plus 15 s. Redis and RabbitMQ
    side by side, to wait the 15 s once."""
    scenarios = [open_scenario(kind, proxy=True) for kind in PROXIED]
    for scenario in scenarios:
        scenario.publish(TASKS, seconds=(0.01, 0.05))
    for scenario in scenarios:  # all four workers at once: both drains run together
        for label in ("a", "b"):
            scenario.worker(label, wait_ready=False)
    for scenario in scenarios:
        for label in ("a", "b"):
            scenario.workers[label].wait_for(r"ready\.", 60)
    for scenario in scenarios:
        scenario.wait_finished(TASKS // 4, 30)
        with scenario.history.fault("connections blackholed"):
            assert _proxy(scenario).blackhole() > 0
        assert scenario.history.finished() < TASKS // 2, "the fault hit mid-drain"
    deadline = time.monotonic() + 15 + scenarios[0].lease
    late = []
    for scenario in scenarios:
        try:
            scenario.wait_finished(TASKS, max(0.1, deadline - time.monotonic()))
        except AssertionError as exc:
            late.append(f"{scenario.broker.kind}: {exc}")
    assert not late, "; ".join(late)
    for scenario in scenarios:
        scenario.assert_ok(scenario.verdict())
