"""Every setting Celery 5.7 documents is known, and either implemented or warned about;
the settings that are pure configuration, checked here (a worker's: tests/integration
and tests/semantics)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import celery.app.defaults as celery_defaults
import pytest
from kombu.entity import Exchange
from kombu.entity import Queue as KombuQueue

from celeriac import Celery, Queue, _config, _transport_settings
from celeriac._queues import consumed_queues
from celeriac._settings_table import NOTES
from celeriac.exceptions import ImproperlyConfigured
from celeriac.task import Context, _current_request
from celeriac.utils.log import WorkerFormatter, get_task_logger

SRC = Path(__file__).resolve().parents[2] / "src" / "celeriac"
CELERY_SETTINGS = [name for name, _ in celery_defaults.flatten(celery_defaults.NAMESPACES)]


@pytest.fixture(autouse=True)
def fresh_notes() -> None:
    """Each test sees the once-per-process warnings as a new process would."""
    _config._noted.clear()
    _transport_settings._warned.clear()


def _app(**settings: Any) -> Celery:
    return Celery("x", broker="memory://", set_as_current=False, **settings)


def test_every_celery_setting_is_known_by_its_new_old_and_namespaced_names() -> None:
    assert len(CELERY_SETTINGS) > 200  # Celery's whole list, from the installed package
    app = _app()
    for name in CELERY_SETTINGS:
        assert name in _config.KNOWN, name
        assert _config.canonical_name(name.upper()) == name
        app.conf[name]
    for old, new in celery_defaults._TO_NEW_KEY.items():
        assert _config.canonical_name(old) == new, old
    defaults = {name: app.conf[name] for name in CELERY_SETTINGS}
    namespaced = _app()
    namespaced.config_from_object(
        {f"CELERY_{name.upper()}": value for name, value in defaults.items()}, namespace="CELERY"
    )
    assert {name: namespaced.conf[name] for name in CELERY_SETTINGS} == defaults
    assert all(namespaced.conf.is_set(name) for name in CELERY_SETTINGS)


def test_a_namespace_takes_old_names_too_and_new_ones_win_as_in_celery() -> None:
    # measured on Celery 5.7 with namespace="CELERY": CELERY_TASK_RESULT_EXPIRES,
    # CELERY_ALWAYS_EAGER, CELERYD_CONCURRENCY and BROKER_URL are read; with both,
    # CELERY_RESULT_EXPIRES (the new name) wins
    app = _app()
    app.config_from_object(
        {
            "CELERY_TASK_RESULT_EXPIRES": 5,
            "CELERY_RESULT_EXPIRES": 7,
            "CELERY_ALWAYS_EAGER": True,
            "CELERYD_CONCURRENCY": 3,
            "BROKER_URL": "memory://old",
            "DEBUG": True,  # not Celery's: skipped
        },
        namespace="CELERY",
    )
    assert app.conf.result_expires == 7.0 and app.conf.task_always_eager is True
    assert app.conf.worker_concurrency == 3 and app.conf.broker_url == "memory://old"
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'TASK_DEFAULT_QUEUEE'"):
        app.config_from_object({"CELERY_TASK_DEFAULT_QUEUEE": "q"}, namespace="CELERY")


def test_each_setting_is_implemented_or_in_the_table_of_warnings() -> None:
    """Implemented: read by the code (outside the settings module); otherwise it is one
    of the warned settings. None is accepted and silently ignored."""
    source = "\n".join(
        p.read_text()
        for p in SRC.rglob("*.py")
        if p.name not in {"_config.py", "_settings_table.py"}
    )
    for name in _config.SETTINGS:
        assert name not in NOTES, name
        if name == "task_protocol":
            continue  # implemented by its check: only 2, the protocol celeriac speaks
        assert re.search(rf"[\"']{name}[\"']|conf\.{name}\b", source), f"{name} is never read"
    assert set(CELERY_SETTINGS) <= set(_config.SETTINGS) | set(NOTES)


def test_a_warned_setting_logs_one_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "celeriac.settings")
    for value in (object(), "a string that changes something"):
        _config._noted.clear()
        caplog.clear()
        for name in NOTES:
            app = _app()
            app.conf[name] = value
            app.conf[name] = value
            said = [r.getMessage() for r in caplog.records if f"Setting {name}=" in r.getMessage()]
            assert len(said) == 1, (name, said)
            assert NOTES[name][1].text in said[0]
    caplog.clear()
    app = _app(broker_pool_limit=10, timezone="UTC", worker_send_task_events=False)
    app.conf.update(CELERY_SEND_EVENTS="false", BROKER_POOL_LIMIT="10")  # as from the env
    assert not caplog.records  # values that change nothing are not warned about
    assert app.conf.broker_pool_limit == 10


def test_the_warnings_say_what_beat_does_instead_and_none_for_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "celeriac.settings")
    app = _app(beat_schedule={"x": {"task": "t", "schedule": 5}}, worker_send_task_events=True)
    app.conf.task_send_sent_event = True
    _app(beat_schedule_filename="/var/run/celerybeat-schedule")
    text = caplog.text
    assert "Setting beat_schedule=" not in text  # implemented: no warning
    assert "beat_schedule_filename=" in text and "last run of each entry) in the broker" in text
    assert "worker_send_task_events" not in text  # implemented: events are sent
    assert "task_send_sent_event" not in text


def test_unknown_names_fail_with_hints_among_real_names() -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"'BROKER_HEARTBEET'; did you mean 'BROKER_HEARTBEAT'"
    ):
        _app(BROKER_HEARTBEET=10)
    with pytest.raises(ImproperlyConfigured, match=r"did you mean 'CELERYD_CONCURRENCY'"):
        _app(CELERYD_CONCURENCY=2)
    with pytest.raises(ImproperlyConfigured, match=r"did you mean 'worker_concurrency'"):
        _app(worker_concurency=2)
    with pytest.raises(ImproperlyConfigured, match=r"beat_scheduler with the CELERY namespace"):
        _app().conf["CELERY_BEAT_SCHEDULER"] = "x"
    app = _app(BROKER_HEARTBEAT=10, BROKER_POOL_LIMIT=5, CELERY_DISABLE_RATE_LIMITS=True)
    assert app.conf.broker_heartbeat == 10.0 and app.conf.worker_disable_rate_limits is True


def test_celery_environment_urls_override_the_app_as_in_celery(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # measured on Celery 5.7: CELERY_BROKER_URL wins over Celery(broker=...) and over a
    # later app.conf.broker_url; so does CELERY_RESULT_BACKEND
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://fromenv")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://envhost/3")
    app = Celery("x", broker="redis://code/1", backend="redis://code/2", set_as_current=False)
    assert app.broker_url == "memory://fromenv" and app.backend_url == "redis://envhost/3"
    app.conf.broker_url = "redis://later/4"
    assert app.broker_url == "memory://fromenv"
    assert "overridden by the environment variable CELERY_BROKER_URL" in caplog.text
    app.conf.override("broker_url", "memory://cli")  # the CLI's -b wins over both
    assert app.broker_url == "memory://cli"
    monkeypatch.setenv("CELERIAC_BROKER_URL", "memory://celeriac")
    assert Celery("y", set_as_current=False).broker_url == "memory://celeriac"


def test_a_misspelt_celeriac_variable_fails_naming_it_and_others_warn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CELERIAC_WORKER_CONCURENCY", "3")
    with pytest.raises(
        ImproperlyConfigured,
        match=r"CELERIAC_WORKER_CONCURENCY names no setting; did you mean "
        r"CELERIAC_WORKER_CONCURRENCY",
    ):
        Celery("x", set_as_current=False)
    monkeypatch.delenv("CELERIAC_WORKER_CONCURENCY")
    monkeypatch.setenv("CELERIAC_HOME_FOLDER_OF_SOMETHING", "/tmp")
    Celery("x", set_as_current=False)  # not near any setting: said, and ignored
    assert "CELERIAC_HOME_FOLDER_OF_SOMETHING names no celeriac setting: ignored" in caplog.text


def test_task_default_retry_delay_is_the_default_of_tasks_that_set_none() -> None:
    app = _app(task_default_retry_delay=1)

    @app.task
    def plain() -> None: ...

    @app.task(default_retry_delay=7)
    def own() -> None: ...

    assert plain.default_retry_delay == 1.0 and own.default_retry_delay == 7
    app.conf.task_default_retry_delay = 3  # set after the tasks: they follow
    assert plain.default_retry_delay == 3.0 and own.default_retry_delay == 7


def test_task_annotations_set_attributes_by_name_and_star() -> None:
    app = _app()

    @app.task(name="t.add")
    def add() -> None: ...

    @app.task(name="t.other", rate_limit="5/m")
    def other() -> None: ...

    class ByObject:
        def annotate(self, task: Any) -> dict[str, Any] | None:
            return {"time_limit": 9} if task.name == "t.other" else None

    app.conf.task_annotations = [
        {"t.add": {"rate_limit": "1/s"}, "*": {"acks_late": False}},
        ByObject(),
    ]
    assert add.rate_limit == "1/s" and add.acks_late is False
    assert other.rate_limit == "5/m" and other.time_limit == 9 and other.acks_late is False
    with pytest.raises(ImproperlyConfigured, match="not a mapping"):
        app.conf.task_annotations = {"t.add": 3}
    with pytest.raises(ImproperlyConfigured, match="rate_limit 'fast' is invalid"):
        app.conf.task_annotations = {"t.add": {"rate_limit": "fast"}}


def test_task_queues_takes_kombu_and_celeriac_queues_and_names() -> None:
    exchange = Exchange("ex")  # type: ignore[no-untyped-call]
    kombu_queues = (
        KombuQueue("a"),  # type: ignore[no-untyped-call]
        KombuQueue("b", exchange, routing_key="rk"),  # type: ignore[no-untyped-call]
    )
    app = _app(task_queues=kombu_queues)
    assert app.conf.task_queues is kombu_queues  # read back as given, as in Celery
    assert consumed_queues(app.conf) == ["a", "b"]
    app.conf.task_queues = [Queue("c"), "d"]
    assert consumed_queues(app.conf) == ["c", "d"]
    app.conf.task_queues = {"e": {"exchange": "e", "routing_key": "e"}}
    assert consumed_queues(app.conf) == ["e"]
    app.conf.task_queues = None
    assert consumed_queues(app.conf) == ["celery"]  # empty: the default queue
    with pytest.raises(ImproperlyConfigured, match="is not a queue"):
        app.conf.task_queues = [3]


def test_what_task_queues_gives_that_celeriac_does_not_use_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = Exchange("t", type="topic")  # type: ignore[no-untyped-call]
    queue = KombuQueue("pq", topic, routing_key="a.*", max_priority=10)  # type: ignore[no-untyped-call]
    _app(task_queues=[queue])
    assert "the max_priority of queue 'pq' (10) is not used" in caplog.text
    assert "the exchange type of queue 'pq' ('topic') is not used" in caplog.text


def test_task_create_missing_queues_false_refuses_an_undeclared_queue() -> None:
    app = _app(task_queues=["known"], task_create_missing_queues=False)
    with pytest.raises(ImproperlyConfigured, match="'elsewhere' is not in task_queues"):
        app.send_task("t", queue="elsewhere")
    assert app.send_task("t", queue="known").id


def test_publish_retry_policy_and_protocol_are_checked() -> None:
    with pytest.raises(ImproperlyConfigured, match="did you mean 'max_retries'"):
        _app(task_publish_retry_policy={"max_retrys": 3})
    with pytest.raises(ImproperlyConfigured, match="protocol 2 only"):
        _app(task_protocol=1)
    assert _app(CELERY_TASK_PUBLISH_RETRY=False).conf.task_publish_retry is False


def test_settings_that_are_transport_options(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(
        broker_url="amqp://guest@localhost//",
        broker_heartbeat=10,
        broker_connection_timeout=2,
        task_default_queue_type="quorum",
        result_backend="redis://localhost/1",
        redis_socket_timeout=7,
    )
    options = app.broker_options()
    assert options["heartbeat"] == 10 and options["connect_timeout"] == 2.0
    assert options["queue_type"] == "quorum"
    assert app.backend_options()["socket_timeout"] == 7.0
    given = _app(
        broker_url="amqp://", broker_heartbeat=10, broker_transport_options={"heartbeat": 3}
    )
    assert given.broker_options()["heartbeat"] == 3  # the transport option wins
    redis = _app(broker_url="redis://localhost/0", broker_heartbeat=10, broker_connection_timeout=2)
    assert redis.broker_options() == {"socket_connect_timeout": 2.0}
    assert "broker_heartbeat=10.0 has no effect with a redis:// transport" in caplog.text


def test_worker_and_task_log_formats() -> None:
    app = _app(
        worker_log_format="W %(message)s %(asctime)s",
        worker_log_datefmt="%Y",
        worker_task_log_format="T %(task_name)s[%(task_id)s] %(message)s",
    )
    formatter = WorkerFormatter(app.conf)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    task_logger, plain = get_task_logger("t.fmt"), logging.getLogger("celeriac.worker.fmt")
    for logger in (task_logger, plain):
        logger.addHandler(Keep())
        logger.propagate = False
    token = _current_request.set(Context(id="abc", message_headers={"task": "t.fmt"}))
    try:
        task_logger.warning("in the task")
        plain.warning("in the worker")
    finally:
        _current_request.reset(token)
        for logger in (task_logger, plain):
            logger.handlers.clear()
            logger.propagate = True
    assert lines[0] == "T t.fmt[abc] in the task"
    assert re.fullmatch(r"W in the worker \d{4}", lines[1])
