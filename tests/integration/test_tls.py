"""TLS: ``amqps://`` and ``rediss://``, and Celery's ``broker_use_ssl`` /
``redis_backend_use_ssl`` settings.

The test servers have no TLS listener, so a TLS proxy (``support.TLSProxy``, a
self-signed certificate for localhost) sits in front of them; a client that trusts its
certificate talks TLS to it end to end, and one that does not is refused.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from yarl import URL

from celeriac import Celery
from celeriac.exceptions import BrokerError, ImproperlyConfigured
from celeriac.transports.tls import apply_tls
from servers import REDIS_URL, require_redis, scratch_prefix
from support import TLSProxy, WorkerProcess, write_module

TASKS = """
import json, os
from celeriac import Celery

app = Celery("tlstasks", broker=os.environ["TLS_BROKER"], backend=os.environ.get("TLS_BACKEND"))
app.conf.broker_use_ssl = json.loads(os.environ["TLS_SETTINGS"])
if os.environ.get("TLS_BACKEND"):
    app.conf.redis_backend_use_ssl = json.loads(os.environ["TLS_SETTINGS"])

@app.task
def add(x, y):
    return x + y
"""


# -- the settings -------------------------------------------------------------------
def test_broker_use_ssl_true_switches_to_the_tls_scheme() -> None:
    assert apply_tls("broker_use_ssl", "amqp://guest@h:5671//", True) == (
        "amqps://guest@h:5671//",
        {},
    )
    assert apply_tls("broker_use_ssl", "redis://h:6380/1", True) == ("rediss://h:6380/1", {})
    assert apply_tls("broker_use_ssl", "redis://h/1", None) == ("redis://h/1", {})


def test_amqp_tls_options_become_aiormq_url_options() -> None:
    url, options = apply_tls(
        "broker_use_ssl",
        "pyamqp://u:p@h//",
        {
            "ca_certs": "/ca.pem",
            "certfile": "/c.pem",
            "keyfile": "/k.pem",
            "cert_reqs": ssl.CERT_NONE,
        },
    )
    parsed = URL(url)
    assert parsed.scheme == "amqps" and parsed.host == "h" and options == {}
    assert dict(parsed.query) == {
        "cafile": "/ca.pem",
        "certfile": "/c.pem",
        "keyfile": "/k.pem",
        "no_verify_ssl": "1",
    }


def test_redis_tls_options_become_transport_options() -> None:
    url, options = apply_tls(
        "redis_backend_use_ssl",
        "redis://h/2",
        {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": ssl.CERT_REQUIRED},
    )
    assert url == "rediss://h/2"
    assert options == {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required"}


@pytest.mark.parametrize(
    ("url", "value", "says"),
    [
        ("amqp://h//", {"ca_cert": "/x"}, "unknown key 'ca_cert'.*did you mean 'ca_certs'"),
        ("redis://h/0", {"ca_certs": "/x"}, "unknown key 'ca_certs'.*'ssl_ca_certs'"),
        ("redis://h/0", {"ssl_cert_reqs": "sometimes"}, "cert_reqs 'sometimes'"),
        ("sqlite:///x.db", True, "sqlite:// broker/backend has no TLS"),
        ("redis://h/0", "yes please", "broker_use_ssl"),
    ],
)
def test_bad_tls_settings_fail_at_start_up(url: str, value: object, says: str) -> None:
    def configure() -> None:  # a bad value may be refused when set, or at the check
        app = Celery("bad", broker=url, set_as_current=False)
        app.conf.broker_use_ssl = value
        app.check_configuration()

    with pytest.raises(ImproperlyConfigured, match=says):
        configure()


# -- end to end through the TLS proxy -------------------------------------------------
@pytest.fixture
def redis_tls(tmp_path: Path) -> Iterator[TLSProxy]:
    require_redis().close()
    with TLSProxy(tmp_path, URL(REDIS_URL).port or 6379) as proxy:
        yield proxy


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_prefix("tls") as value:
        yield value


def _run_add(tmp_path: Path, broker: str, backend: str | None, settings: str) -> int:
    write_module(tmp_path, "tlstasks", TASKS)
    env = {"TLS_BROKER": broker, "TLS_SETTINGS": settings, "TLS_BACKEND": backend or ""}
    app = Celery("tlstasks", broker=broker, backend=backend or None, set_as_current=False)
    app.conf.broker_use_ssl = json.loads(settings)
    if backend:
        app.conf.redis_backend_use_ssl = app.conf.broker_use_ssl
    try:
        with WorkerProcess(tmp_path, "tlstasks", "-P", "threads", env=env):
            return int(app.send_task("tlstasks.add", (20, 22)).get(timeout=20))
    finally:
        app.close()


def test_redis_broker_and_backend_over_tls(
    redis_tls: TLSProxy, prefix: str, tmp_path: Path
) -> None:
    url = f"redis://localhost:{redis_tls.port}/0?global_keyprefix={prefix}"
    settings = f'{{"ssl_ca_certs": "{redis_tls.ca_file}", "ssl_cert_reqs": "required"}}'
    assert _run_add(tmp_path, url, url, settings) == 42
    assert redis_tls.connections >= 3  # the client's and the worker's, all through TLS


def test_redis_over_tls_refuses_a_certificate_it_does_not_trust(
    redis_tls: TLSProxy, prefix: str
) -> None:
    url = f"rediss://localhost:{redis_tls.port}/0?global_keyprefix={prefix}"
    app = Celery("untrusted", broker=url, set_as_current=False)  # the system CAs only
    try:
        with pytest.raises(BrokerError, match="certificate verify failed"):
            app.send_task("tlstasks.add", (1, 2))
    finally:
        app.close()


def test_amqp_broker_over_tls(rabbit: str, tmp_path: Path) -> None:
    vhost = URL(rabbit)
    with TLSProxy(tmp_path, vhost.port or 5672) as proxy:
        url = str(vhost.with_host("localhost").with_port(proxy.port))
        settings = f'{{"ca_certs": "{proxy.ca_file}"}}'
        assert _run_add(tmp_path, url, None, settings) == 42  # results over rpc://, TLS too
        assert proxy.connections >= 2
