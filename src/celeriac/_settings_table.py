"""Celery's settings that celeriac accepts without acting on them, as data.

Every setting Celery 5.7 documents is known to celeriac: those it implements are in
:data:`celeriac._config.SETTINGS`; the others are here, each with the default Celery
gives it and the one warning (:data:`NOTES`) a process logs the first time it is set to
a value that would change anything. Celery's old uppercase names are derived by
:func:`old_name` from the new ones (with the irregular ones in :data:`OLD_NAME_EXCEPTIONS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Note:
    """The warning for a setting celeriac accepts but does not act on."""

    #: what celeriac does instead (the warning's text after the setting's name)
    text: str
    #: "no-effect": it has no meaning here; "not-yet": celeriac does not do it yet
    kind: str = "no-effect"
    #: values that change nothing here (they mean what celeriac does): set to one of
    #: these, the setting logs no warning
    quiet: tuple[Any, ...] = (None,)


# -- the texts, shared by the settings of one subject -----------------------------------
_BACKEND = (
    "configures a Celery result backend that celeriac does not have (celeriac's: redis://, "
    "rediss://, sqlite://, postgresql://, memory://, rpc://, amqp://); results go where "
    "result_backend says"
)
_BROKER_PARTS = (
    "celeriac takes the broker from broker_url (or CELERY_BROKER_URL) alone: put the host, "
    "port, credentials and vhost in that URL"
)
_ONE_BROKER = "celeriac reads and writes through the one broker in broker_url"
_REDIS_PARTS = "celeriac takes the Redis result backend from the result_backend URL alone"
_NO_POOL = (
    "celeriac keeps one connection per publishing thread or event loop, not a pool: "
    "there is no pool to size or to wait on"
)
_SECURITY = (
    "message signing (Celery's 'auth' serializer) is not supported: celeriac sends and "
    "accepts unsigned bodies of the serializers in accept_content"
)
_CONTROL = (
    "celeriac's remote control uses Celery's default pidbox names and lifetimes; "
    "this setting does not change them"
)
_EVENTS = (
    "celeriac's events use Celery's default exchange (celeryev), queue lifetimes and JSON; "
    "this setting does not change them"
)
_BEAT = (
    "celeriac's beat keeps its state (the last run of each entry) in the broker, not in a "
    "file, and has one scheduler: entries come from beat_schedule and app.beat.add()"
)
_BEAT_SYNC = "celeriac's beat stores each run in the broker as it sends it; nothing to sync"
_COMPONENTS = (
    "celeriac's worker is not built of swappable Celery components; this class path is not used"
)
_RESULT_RETRY = (
    "celeriac's worker retries a failed result write until it gets through (the task's "
    "message is acked only after its result is stored); this policy is not used"
)
_SHUTDOWN = (
    "celeriac has no soft shutdown phase: a warm stop waits for running tasks and "
    "returns unstarted ones to the broker"
)
_PREFETCH = (
    "celeriac's prefetch is worker_prefetch_multiplier per pool slot (and "
    "worker_prefetch_window); this setting does not change it"
)
_AMQP_ONLY = "applies to RabbitMQ only"


#: Celery settings celeriac accepts without acting on them: (Celery's default, note).
NOTES: dict[str, tuple[Any, Note]] = {
    # broker
    "broker_read_url": (None, Note(_BROKER_PARTS)),
    "broker_write_url": (None, Note(_BROKER_PARTS)),
    "broker_transport": (None, Note(_BROKER_PARTS)),
    "broker_host": (None, Note(_BROKER_PARTS)),
    "broker_port": (None, Note(_BROKER_PARTS)),
    "broker_user": (None, Note(_BROKER_PARTS)),
    "broker_password": (None, Note(_BROKER_PARTS)),
    "broker_vhost": (None, Note(_BROKER_PARTS)),
    "broker_login_method": (
        None,
        Note("celeriac logs in to RabbitMQ with PLAIN (the user and password in broker_url)"),
    ),
    "broker_failover_strategy": (None, Note(_ONE_BROKER + "; there is no failover list")),
    "broker_channel_error_retry": (
        False,
        Note(
            "celeriac's RabbitMQ client reopens its channels and connection after an "
            "error by itself",
            quiet=(None, False),
        ),
    ),
    "broker_heartbeat_checkrate": (
        3.0,
        Note("celeriac's RabbitMQ client checks heartbeats itself", quiet=(None, 3, 3.0)),
    ),
    "broker_native_delayed_delivery_queue_type": (
        "quorum",
        Note(
            "celeriac delays messages on RabbitMQ with its own cascade of delay queues",
            quiet=(None, "quorum"),
        ),
    ),
    "broker_pool_limit": (10, Note(_NO_POOL, quiet=(10,))),
    "broker_pool_acquire_timeout": (None, Note(_NO_POOL)),
    # result backends celeriac does not have
    "cache_backend": (None, Note(_BACKEND)),
    "cache_backend_options": ({}, Note(_BACKEND, quiet=(None, {}))),
    "couchbase_backend_settings": (None, Note(_BACKEND)),
    "arangodb_backend_settings": (None, Note(_BACKEND)),
    "mongodb_backend_settings": (None, Note(_BACKEND)),
    "cassandra_entry_ttl": (None, Note(_BACKEND)),
    "cassandra_keyspace": (None, Note(_BACKEND)),
    "cassandra_port": (None, Note(_BACKEND)),
    "cassandra_read_consistency": (None, Note(_BACKEND)),
    "cassandra_servers": (None, Note(_BACKEND)),
    "cassandra_bundle_path": (None, Note(_BACKEND)),
    "cassandra_table": (None, Note(_BACKEND)),
    "cassandra_write_consistency": (None, Note(_BACKEND)),
    "cassandra_auth_provider": (None, Note(_BACKEND)),
    "cassandra_auth_kwargs": (None, Note(_BACKEND)),
    "cassandra_options": ({}, Note(_BACKEND, quiet=(None, {}))),
    "s3_access_key_id": (None, Note(_BACKEND)),
    "s3_secret_access_key": (None, Note(_BACKEND)),
    "s3_bucket": (None, Note(_BACKEND)),
    "s3_base_path": (None, Note(_BACKEND)),
    "s3_endpoint_url": (None, Note(_BACKEND)),
    "s3_region": (None, Note(_BACKEND)),
    "azureblockblob_container_name": ("celery", Note(_BACKEND, quiet=(None, "celery"))),
    "azureblockblob_retry_initial_backoff_sec": (2, Note(_BACKEND, quiet=(None, 2))),
    "azureblockblob_retry_increment_base": (2, Note(_BACKEND, quiet=(None, 2))),
    "azureblockblob_retry_max_attempts": (3, Note(_BACKEND, quiet=(None, 3))),
    "azureblockblob_base_path": ("", Note(_BACKEND, quiet=(None, ""))),
    "azureblockblob_connection_timeout": (20, Note(_BACKEND, quiet=(None, 20))),
    "azureblockblob_read_timeout": (120, Note(_BACKEND, quiet=(None, 120))),
    "gcs_bucket": (None, Note(_BACKEND)),
    "gcs_project": (None, Note(_BACKEND)),
    "gcs_base_path": ("", Note(_BACKEND, quiet=(None, ""))),
    "gcs_ttl": (0, Note(_BACKEND, quiet=(None, 0))),
    "cosmosdbsql_database_name": ("celerydb", Note(_BACKEND, quiet=(None, "celerydb"))),
    "cosmosdbsql_collection_name": ("celerycol", Note(_BACKEND, quiet=(None, "celerycol"))),
    "cosmosdbsql_consistency_level": ("Session", Note(_BACKEND, quiet=(None, "Session"))),
    "cosmosdbsql_max_retry_attempts": (9, Note(_BACKEND, quiet=(None, 9))),
    "cosmosdbsql_max_retry_wait_time": (30, Note(_BACKEND, quiet=(None, 30))),
    "elasticsearch_retry_on_timeout": (None, Note(_BACKEND)),
    "elasticsearch_max_retries": (None, Note(_BACKEND)),
    "elasticsearch_timeout": (None, Note(_BACKEND)),
    "elasticsearch_save_meta_as_text": (True, Note(_BACKEND, quiet=(None, True))),
    "database_url": (None, Note(_BACKEND)),
    "database_engine_options": (None, Note(_BACKEND)),
    "database_engine_callback": (None, Note(_BACKEND)),
    "database_short_lived_sessions": (False, Note(_BACKEND, quiet=(None, False))),
    "database_table_schemas": (None, Note(_BACKEND)),
    "database_table_names": (None, Note(_BACKEND)),
    "database_create_tables_at_setup": (True, Note(_BACKEND, quiet=(None, True))),
    # the Redis result backend's parts (its socket options are implemented)
    "redis_host": (None, Note(_REDIS_PARTS)),
    "redis_port": (None, Note(_REDIS_PARTS)),
    "redis_db": (None, Note(_REDIS_PARTS)),
    "redis_username": (None, Note(_REDIS_PARTS)),
    "redis_password": (None, Note(_REDIS_PARTS)),
    "redis_max_connections": (None, Note(_NO_POOL)),
    "redis_retry_on_timeout": (
        False,
        Note(
            "a Redis command that times out fails with BackendError, not retried",
            quiet=(None, False),
        ),
    ),
    # results
    "result_cache_max": (-1, Note("AsyncResult keeps no cache of results", quiet=(None, -1, 0))),
    "result_compression": (None, Note("results are stored uncompressed")),
    "result_exchange": (
        "celeryresults",
        Note("rpc:// replies go to each client's own reply queue", quiet=(None, "celeryresults")),
    ),
    "result_exchange_type": (
        "direct",
        Note("rpc:// replies go to each client's own reply queue", quiet=(None, "direct")),
    ),
    "result_chord_expires": (None, Note("a chord's join state expires after result_expires")),
    "result_failure_expires": (None, Note("failures expire after result_expires, as successes")),
    "result_persistent": (
        None,
        Note("rpc:// replies are not persistent (Celery's default)", quiet=(None, False)),
    ),
    "result_chord_retry_interval": (
        1.0,
        Note(
            "celeriac joins a chord when its last member settles, not by polling",
            quiet=(None, 1, 1.0),
        ),
    ),
    "result_chord_join_timeout": (
        3.0,
        Note(
            "celeriac joins a chord when its last member settles, not by polling",
            quiet=(None, 3, 3.0),
        ),
    ),
    "result_backend_always_retry": (False, Note(_RESULT_RETRY, quiet=(None, False))),
    "result_backend_max_retries": (float("inf"), Note(_RESULT_RETRY, quiet=(None, float("inf")))),
    "result_backend_base_sleep_between_retries_ms": (10, Note(_RESULT_RETRY, quiet=(None, 10))),
    "result_backend_max_sleep_between_retries_ms": (
        10000,
        Note(_RESULT_RETRY, quiet=(None, 10000)),
    ),
    # security
    "security_certificate": (None, Note(_SECURITY)),
    "security_cert_store": (None, Note(_SECURITY)),
    "security_key": (None, Note(_SECURITY)),
    "security_key_password": (None, Note(_SECURITY)),
    "security_digest": ("sha256", Note(_SECURITY, quiet=(None, "sha256"))),
    # remote control
    "control_queue_ttl": (300.0, Note(_CONTROL, quiet=(None, 300, 300.0))),
    "control_queue_expires": (10.0, Note(_CONTROL, quiet=(None, 10, 10.0))),
    "control_queue_exclusive": (True, Note(_CONTROL, quiet=(None, True))),
    "control_queue_durable": (False, Note(_CONTROL, quiet=(None, False))),
    "control_exchange": ("celery", Note(_CONTROL, quiet=(None, "celery"))),
    # events
    "event_queue_expires": (60.0, Note(_EVENTS, quiet=(None, 60, 60.0))),
    "event_queue_ttl": (5.0, Note(_EVENTS, quiet=(None, 5, 5.0))),
    "event_queue_prefix": ("celeryev", Note(_EVENTS, quiet=(None, "celeryev"))),
    "event_queue_exclusive": (True, Note(_EVENTS, quiet=(None, True))),
    "event_queue_durable": (False, Note(_EVENTS, quiet=(None, False))),
    "event_serializer": ("json", Note(_EVENTS, quiet=(None, "json"))),
    "event_exchange": ("celeryev", Note(_EVENTS, quiet=(None, "celeryev"))),
    # beat (celeriac's own: entries from beat_schedule and the broker, state in the broker)
    "beat_enable_remote_control": (
        False,
        Note("is not implemented yet: celeriac's beat answers no remote control", "not-yet"),
    ),
    "beat_remote_control_max_tick_age": (
        None,
        Note("is not implemented yet: celeriac's beat answers no remote control", "not-yet"),
    ),
    "beat_scheduler": (
        "celery.beat:PersistentScheduler",
        Note(_BEAT, quiet=(None, "celery.beat:PersistentScheduler", "celery.beat:Scheduler")),
    ),
    "beat_schedule_filename": (
        "celerybeat-schedule",
        Note(_BEAT, quiet=(None, "celerybeat-schedule")),
    ),
    "beat_sync_every": (0, Note(_BEAT_SYNC, quiet=(None, 0))),
    # tasks
    "task_acks_on_failure": (
        None,
        Note(
            "is not implemented yet: task_acks_on_failure_or_timeout decides both cases", "not-yet"
        ),
    ),
    "task_acks_on_timeout": (
        None,
        Note(
            "is not implemented yet: task_acks_on_failure_or_timeout decides both cases", "not-yet"
        ),
    ),
    "task_retry_on_worker_lost": (
        False,
        Note(
            "is not implemented yet: a task whose worker process died is redelivered as "
            "task_reject_on_worker_lost and task_max_redeliveries say",
            "not-yet",
            quiet=(None, False),
        ),
    ),
    "task_allow_error_cb_on_chord_header": (
        False,
        Note(
            "is not implemented yet: an errback on a chord's header is not called",
            "not-yet",
            quiet=(None, False),
        ),
    ),
    "task_compression": (None, Note("messages are sent uncompressed")),
    "task_create_missing_queue_type": (
        "classic",
        Note(
            "queues celeriac creates on RabbitMQ are of task_default_queue_type",
            quiet=(None, "classic"),
        ),
    ),
    "task_create_missing_queue_exchange_type": (
        None,
        Note("celeriac binds each queue to a direct exchange of its name", quiet=(None, "direct")),
    ),
    "task_default_delivery_mode": (
        2,
        Note("celeriac publishes every message persistent", quiet=(None, 2, "persistent")),
    ),
    "task_default_exchange": (
        None,
        Note("celeriac publishes to the exchange named after the queue (Celery's default)"),
    ),
    "task_default_exchange_type": (
        "direct",
        Note("celeriac binds each queue to a direct exchange of its name", quiet=(None, "direct")),
    ),
    "task_default_routing_key": (
        None,
        Note("celeriac routes by queue name (the routing key is the queue's name)"),
    ),
    "task_remote_tracebacks": (
        False,
        Note("AsyncResult.traceback holds the worker's traceback as text", quiet=(None, False)),
    ),
    "task_repr_maxlevels": (3, Note("argsrepr/kwargsrepr are Python's repr", quiet=(None, 3))),
    "task_store_eager_result": (
        False,
        Note(
            "is not implemented yet: an eagerly run task's result is not stored",
            "not-yet",
            quiet=(None, False),
        ),
    ),
    # worker
    "worker_agent": (None, Note(_COMPONENTS)),
    "worker_autoscaler": (
        "celery.worker.autoscale:Autoscaler",
        Note(_COMPONENTS, quiet=(None, "celery.worker.autoscale:Autoscaler")),
    ),
    "worker_consumer": (
        "celery.worker.consumer:Consumer",
        Note(_COMPONENTS, quiet=(None, "celery.worker.consumer:Consumer")),
    ),
    "worker_timer": (None, Note(_COMPONENTS)),
    "worker_timer_precision": (
        1.0,
        Note(
            "celeriac's worker holds ETA tasks in the broker, not in a timer", quiet=(None, 1, 1.0)
        ),
    ),
    "worker_cancel_long_running_tasks_on_connection_loss": (
        False,
        Note(
            "celeriac's worker keeps running tasks when the broker connection drops and settles "
            "them once it is back",
            quiet=(None, False),
        ),
    ),
    "worker_soft_shutdown_timeout": (0.0, Note(_SHUTDOWN, quiet=(None, 0, 0.0))),
    "worker_enable_soft_shutdown_on_idle": (False, Note(_SHUTDOWN, quiet=(None, False))),
    "worker_deduplicate_successful_tasks": (
        False,
        Note(
            "is not implemented yet: a redelivered task runs again even if it succeeded "
            "(its result is overwritten)",
            "not-yet",
            quiet=(None, False),
        ),
    ),
    "worker_detect_quorum_queues": (True, Note(_PREFETCH, quiet=(None, True))),
    "worker_direct": (
        False,
        Note(
            "is not implemented yet: workers consume no per-worker queue",
            "not-yet",
            quiet=(None, False),
        ),
    ),
    "worker_disable_prefetch": (False, Note(_PREFETCH, quiet=(None, False))),
    "worker_enable_prefetch_count_reduction": (True, Note(_PREFETCH, quiet=(None, True))),
    "worker_eta_task_limit": (
        None,
        Note("celeriac's worker does not hold ETA tasks: the broker keeps them until due"),
    ),
    "worker_log_color": (None, Note("the worker's log is not coloured", quiet=(None, False))),
    "worker_lost_wait": (
        10.0,
        Note(
            "a prefork child that dies is noticed at once by its supervisor", quiet=(None, 10, 10.0)
        ),
    ),
    "worker_pool_putlocks": (
        True,
        Note("celeriac's pools take work only for a free slot", quiet=(None, True)),
    ),
    "worker_pool_restarts": (
        False,
        Note(
            "is not implemented yet: the pool_restart remote command is not answered",
            "not-yet",
            quiet=(None, False),
        ),
    ),
    "worker_pool_start_method": (
        "fork",
        Note("celeriac's prefork pool always forks its children", quiet=(None, "fork")),
    ),
    "worker_proc_alive_timeout": (
        4.0,
        Note("a prefork child is watched by its supervisor, not timed", quiet=(None, 4, 4.0)),
    ),
    "worker_redirect_stdouts": (
        True,
        Note(
            "print() output of tasks goes to the worker's stdout, not to the log",
            quiet=(None, False),
        ),
    ),
    "worker_redirect_stdouts_level": (
        "WARNING",
        Note(
            "print() output of tasks goes to the worker's stdout, not to the log",
            quiet=(None, "WARNING"),
        ),
    ),
    "worker_state_db": (
        None,
        Note("revocations are kept in the broker (durable across restarts), not in a state file"),
    ),
    "worker_shutdown_timeout": (
        None,
        Note(
            "is not implemented yet: a warm stop waits for running tasks as long as they run",
            "not-yet",
        ),
    ),
    # misc
    "result_accept_content": (
        None,
        Note(
            "is not consulted: a client reads results as the backend stores them (JSON; "
            "rpc:// replies as json or msgpack)"
        ),
    ),
}


#: Celery's old names that :func:`old_name`'s rule does not give.
OLD_NAME_EXCEPTIONS = {
    "database_create_tables_at_setup": "DATABASE_CREATE_TABLES_AT_SETUP",
    "database_engine_callback": "DATABASE_ENGINE_CALLBACK",
    "database_engine_options": "CELERY_RESULT_ENGINE_OPTIONS",
    "database_short_lived_sessions": "CELERY_RESULT_DB_SHORT_LIVED_SESSIONS",
    "database_table_names": "CELERY_RESULT_DB_TABLENAMES",
    "database_table_schemas": "DATABASE_TABLE_SCHEMAS",
    "database_url": "CELERY_RESULT_DBURI",
    "enable_utc": "ENABLE_UTC",
    "result_accept_content": "RESULT_ACCEPT_CONTENT",
    "result_cache_max": "CELERY_MAX_CACHED_RESULTS",
    "result_expires": "CELERY_TASK_RESULT_EXPIRES",
    "task_compression": "CELERY_MESSAGE_COMPRESSION",
    "task_eager_propagates": "CELERY_EAGER_PROPAGATES_EXCEPTIONS",
    "task_protocol": "CELERY_TASK_PROTOCOL",
    "task_publish_retry": "CELERY_TASK_PUBLISH_RETRY",
    "task_publish_retry_policy": "CELERY_TASK_PUBLISH_RETRY_POLICY",
    "task_send_sent_event": "CELERY_SEND_TASK_SENT_EVENT",
    "task_serializer": "CELERY_TASK_SERIALIZER",
    "task_soft_time_limit": "CELERYD_TASK_SOFT_TIME_LIMIT",
    "task_time_limit": "CELERYD_TASK_TIME_LIMIT",
    "worker_direct": "CELERY_WORKER_DIRECT",
    "worker_disable_rate_limits": "CELERY_DISABLE_RATE_LIMITS",
    "worker_enable_remote_control": "CELERY_ENABLE_REMOTE_CONTROL",
    "worker_lost_wait": "CELERYD_WORKER_LOST_WAIT",
    "worker_redirect_stdouts": "CELERY_REDIRECT_STDOUTS",
    "worker_redirect_stdouts_level": "CELERY_REDIRECT_STDOUTS_LEVEL",
    "worker_send_task_events": "CELERY_SEND_EVENTS",
}

#: Namespaces whose old names are the new name in capitals (``BROKER_URL``).
_AS_IS = frozenset({"broker", "cassandra", "s3", "azureblockblob", "gcs", "control", "cosmosdbsql"})

#: celeriac's own settings: Celery has no old name for them.
OWN_SETTINGS = frozenset(
    {
        "task_default_retry_delay",
        "task_max_redeliveries",
        "worker_prefetch_window",
        "worker_revoke_expires",
    }
)


def old_name(name: str) -> str | None:
    """Celery's pre-4.0 uppercase name of setting ``name`` (None for celeriac's own)."""
    if name in OWN_SETTINGS:
        return None
    if name in OLD_NAME_EXCEPTIONS:
        return OLD_NAME_EXCEPTIONS[name]
    upper = name.upper()
    space, _, rest = upper.partition("_")
    if space == "BEAT":
        return "CELERYBEAT_" + rest
    if space == "WORKER":
        return "CELERYD_" + rest
    if space == "TASK":
        return "CELERY_" + rest
    if space.lower() in _AS_IS:
        return upper
    return "CELERY_" + upper


__all__ = ["NOTES", "OWN_SETTINGS", "Note", "old_name"]
