"""The history checker's verdicts on made-up histories: it must be able to fail."""

from __future__ import annotations

from pathlib import Path

from faults.history import History


def _history(tmp_path: Path, lines: dict[str, list[str]], enqueued: list[str]) -> History:
    history = History(tmp_path)
    history.enqueue(enqueued)
    for name, rows in lines.items():
        (history.runs_dir / f"{name}.log").write_text("".join(f"{r}\n" for r in rows))
    return history


def test_a_clean_history_passes(tmp_path: Path) -> None:
    history = _history(
        tmp_path, {"a-1": ["S t1 1.0", "E t1 1.1", "S t2 1.2", "E t2 1.3"]}, ["t1", "t2"]
    )
    report = history.check()
    assert report.ok and report.completed == {"t1", "t2"} and not report.duplicated


def test_lost_and_stuck_tasks_fail(tmp_path: Path) -> None:
    history = _history(tmp_path, {"a-1": ["S t1 1.0"]}, ["t1", "t2"])
    report = history.check()
    assert not report.ok
    assert report.stuck == {"t1"} and report.lost == {"t2"}
    assert "1 lost, 1 stuck" in report.summary()


def test_a_duplicate_is_explained_only_by_a_fault_on_its_worker_while_it_was_unacked(
    tmp_path: Path,
) -> None:
    runs = {"a-1": ["S t1 10.0", "E t1 10.5"], "b-2": ["S t1 20.0", "E t1 20.1"]}
    history = _history(tmp_path, runs, ["t1"])
    assert history.check().unexplained == {"t1": history.runs()["t1"]}  # no fault at all
    fault = history.fault_at("kill -9", "b")
    fault.start = fault.end = 11.0
    assert not history.check().ok  # it hit the other worker
    fault.worker = "a"
    fault.start = fault.end = 10.5 + 2.5  # after the run's end + the ack grace
    assert not history.check().ok
    fault.start, fault.end = 5.0, 10.2  # a freeze that ended while it ran
    assert history.check().ok
    fault.start = fault.end = 12.0  # within the ack grace
    report = history.check()
    assert report.ok and set(report.duplicated) == {"t1"}


def test_a_killed_run_is_exposed_until_its_rerun_and_sigterm_explains_nothing(
    tmp_path: Path,
) -> None:
    runs = {"a-1": ["S t1 10.0"], "b-2": ["S t1 40.0", "E t1 40.1"]}
    history = _history(tmp_path, runs, ["t1"])
    fault = history.fault_at("SIGTERM", "a", explains_duplicates=False)
    fault.start = fault.end = 30.0
    assert not history.check().ok
    fault.explains_duplicates = True
    assert history.check().ok


def test_a_fault_after_the_message_was_received_but_before_it_ran_explains_a_repeat(
    tmp_path: Path,
) -> None:
    runs = {"a-1": ["R t1 9.0", "S t1 10.0", "E t1 10.1"], "b-2": ["S t1 10.2", "E t1 10.3"]}
    history = _history(tmp_path, runs, ["t1"])
    fault = history.fault_at("network frozen")
    fault.start, fault.end = 8.0, 9.5  # the lease ran out while the message waited
    assert history.check().ok
    fault.start, fault.end = 8.0, 8.9  # over before the message was received
    assert not history.check().ok
    assert history.check(lease=0.5).ok  # ... but its fetch's reply may have come late


def test_a_broker_fault_during_the_publish_explains_two_copies(tmp_path: Path) -> None:
    runs = {"a-1": ["S t1 20.0", "E t1 20.1"], "b-2": ["S t1 20.0", "E t1 20.2"]}
    history = _history(tmp_path, runs, [])
    history.enqueue(["t1"], began=10.0)
    history.enqueued["t1"] = 12.0  # the publish took from 10 to 12 s (retried)
    fault = history.fault_at("kill -9 broker")
    fault.start, fault.end = 11.0, 11.5
    assert history.check().ok
    fault.worker = "a"  # a worker's fault cannot touch the producer
    assert not history.check().ok
