"""``worker --metrics-port N`` (``worker_metrics_port``): Prometheus metrics and a health
check, served by the consumer that speaks for the worker (in prefork, child 1, for every
child) on the worker's event loop, without threads.

``/metrics`` has the names celery-exporter users chart: ``celery_task_sent_total``,
``..._received_total``, ``..._started_total``, ``..._succeeded_total``, ``..._failed_total``,
``..._retried_total``, ``..._revoked_total``, ``..._rejected_total`` (labels ``name``,
``hostname``, ``queue``), the ``celery_task_runtime_seconds`` histogram,
``celery_worker_up``, ``celery_worker_tasks_active`` and ``celery_queue_length``
(label ``queue_name``). ``celery_task_sent_total`` counts the task-sent events this
worker sends itself (with ``task_send_sent_event``: retries, callbacks, chain steps and
tasks sent from task bodies, by the queue sent to); a client's task-sent events are the
client's, seen only by an exporter reading events. The exposition is
``prometheus_client``'s (the ``celeriac[metrics]`` extra), from a collector that reads
the children's counts at each scrape.

``/healthz`` answers 200 when this consumer fetched from the broker within
:data:`HEALTHY_WITHIN` seconds (an idle consumer fetches every second), else 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.worker.consumer import Consumer

logger = logging.getLogger("celeriac.worker")

HEALTHY_WITHIN = 10.0
#: the histogram's upper bounds (seconds), prometheus_client's defaults
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
STATES = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected")


def require_client() -> None:
    """Fail at start-up, saying what to install, when prometheus_client is missing."""
    from celeriac.exceptions import ImproperlyConfigured  # noqa: PLC0415

    try:
        import prometheus_client  # noqa: F401, PLC0415
    except ImportError:
        raise ImproperlyConfigured(
            "worker_metrics_port / --metrics-port needs prometheus_client: "
            "pip install 'celeriac[metrics]'"
        ) from None


class TaskCounts:
    """One consumer's counts by (state, task name, queue) and run-time histograms."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.runtimes: dict[tuple[str, str], list[float]] = {}

    def count(self, state: str, name: str, queue: str) -> None:
        self.counts[(state, name, queue)] += 1

    def observe(self, name: str, queue: str, seconds: float) -> None:
        row = self.runtimes.get((name, queue))
        if row is None:
            row = self.runtimes[(name, queue)] = [0.0] * (len(BUCKETS) + 2)
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                row[i] += 1
        row[-2] += seconds
        row[-1] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "counts": [[*key, n] for key, n in self.counts.items()],
            "runtimes": [[*key, row] for key, row in self.runtimes.items()],
        }


class _Collector:
    def __init__(self, hostname: str, snapshots: list[dict[str, Any]], sizes: dict[str, int]):
        self.hostname, self.snapshots, self.sizes = hostname, snapshots, sizes

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        host = self.hostname
        counts: Counter[tuple[str, str, str]] = Counter()
        runtimes: dict[tuple[str, str], list[float]] = {}
        active = 0
        for snap in self.snapshots:
            active += len(snap.get("active") or ())
            metrics = snap.get("metrics") or {}
            for state, name, queue, n in metrics.get("counts") or ():
                counts[(state, name, queue)] += n
            for name, queue, row in metrics.get("runtimes") or ():
                mine = runtimes.setdefault((name, queue), [0.0] * len(row))
                runtimes[(name, queue)] = [a + b for a, b in zip(mine, row, strict=False)]
        for state in STATES:
            family = CounterMetricFamily(
                f"celery_task_{state}", f"Tasks {state}", labels=["name", "hostname", "queue"]
            )
            for (kind, name, queue), n in sorted(counts.items()):
                if kind == state:
                    family.add_metric([name, host, queue], n)
            yield family
        histogram = HistogramMetricFamily(
            "celery_task_runtime_seconds",
            "Task run time (seconds)",
            labels=["name", "hostname", "queue"],
        )
        for (name, queue), row in sorted(runtimes.items()):
            buckets = [(str(b), row[i]) for i, b in enumerate(BUCKETS)] + [("+Inf", row[-1])]
            histogram.add_metric([name, host, queue], buckets, row[-2])
        yield histogram
        up = GaugeMetricFamily("celery_worker_up", "The worker is up", labels=["hostname"])
        up.add_metric([host], 1)
        yield up
        busy = GaugeMetricFamily("celery_worker_tasks_active", "Tasks running", labels=["hostname"])
        busy.add_metric([host], active)
        yield busy
        length = GaugeMetricFamily(
            "celery_queue_length", "Messages waiting in the queue", labels=["queue_name"]
        )
        for queue, size in sorted(self.sizes.items()):
            length.add_metric([queue], size)
        yield length


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``port`` (all interfaces)."""

    def __init__(self, consumer: Consumer, port: int) -> None:
        self.consumer = consumer
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, host="0.0.0.0", port=self.port, reuse_address=True
        )
        logger.info("Metrics on http://0.0.0.0:%d/metrics (health: /healthz)", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def healthy(self) -> bool:
        return time.monotonic() - self.consumer.monitor.fetched_at < HEALTHY_WITHIN

    async def metrics_text(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

        consumer = self.consumer
        sizes: dict[str, int] = {}
        broker = consumer.broker
        for queue in consumer.queues:
            with contextlib.suppress(Exception):
                if broker is not None:
                    sizes[queue] = await broker.size(queue)
        registry = CollectorRegistry()
        collector = _Collector(consumer.hostname, consumer.monitor.snapshots(), sizes)
        registry.register(collector)
        return bytes(generate_latest(registry))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            if path == "/metrics":
                status, kind, body = (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    await self.metrics_text(),
                )
            elif path == "/healthz":
                ok = self.healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                kind, body = "text/plain", b"ok\n" if ok else b"not consuming\n"
            else:
                status, kind, body = "404 Not Found", "text/plain", b"not found\n"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (OSError, asyncio.TimeoutError, UnicodeDecodeError):
            pass
        finally:
            writer.close()


__all__ = ["BUCKETS", "HEALTHY_WITHIN", "MetricsServer", "TaskCounts", "require_client"]
