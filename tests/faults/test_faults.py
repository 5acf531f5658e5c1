"""The fault-injection suite, short run: real workers on SQLite, Redis and RabbitMQ,
faults in the middle of a drain, and the history's verdict (``history.py``): nothing
lost, nothing stuck, no duplicate that no fault explains. ``soak/run.py`` is the long
run of random faults."""

from __future__ import annotations

import pytest

from conftest import OpenScenario
from support import wait_until

BROKERS = ["sqlite", "redis", "amqp"]
TASKS = 300


@pytest.mark.parametrize("kind", BROKERS)
def test_kill_9_of_prefork_children(open_scenario: OpenScenario, kind: str) -> None:
    scenario = open_scenario(kind)
    scenario.publish(TASKS)
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
    scenario.publish(TASKS)
    scenario.start_workers("a", "b")
    scenario.wait_finished(TASKS // 4, 30)
    wait_until(lambda: scenario.running("a"), 20, "worker a to run a task")
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
    wait_until(lambda: scenario.running("a"), 20, "worker a to run a task")
    assert scenario.sigterm("a") == 0
    report = scenario.verdict()
    scenario.assert_ok(report)  # SIGTERM explains no duplicate
