"""The soak: random faults under load, for as long as you like, then the history's
verdict (``tests/faults/history.py``: nothing lost, nothing stuck, no duplicate that no
fault explains).

    python soak/run.py --minutes 30 --broker redis

A producer publishes ``--rate`` tasks a second (each takes 0-50 ms) to three prefork
workers (``-c 2``) for ``--minutes``; every few seconds one fault, drawn at random:
kill -9 of a prefork child, kill -9 of a whole worker (started again), SIGTERM of a
worker (started again), and, on Redis and RabbitMQ, a reset of every connection, a
network freeze of 1-6 s, a throttled link for a few seconds (the workers reach the broker
through the suite's TCP proxy), and kill -9 of the broker itself (a private
``redis-server``, ``appendfsync always``, or a private RabbitMQ node, started again on
the same port and files).
Then the producer stops, the queue drains, and the verdict is printed and appended to
``soak/LATEST.md``; the exit status is 1 when it failed.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from yarl import URL  # noqa: E402

from faults.proxy import FaultProxy  # noqa: E402
from faults.rabbit import PrivateRabbit  # noqa: E402
from faults.scenario import Broker, Scenario  # noqa: E402
from servers import AMQP_URL, PrivateRedis, delete_queues  # noqa: E402

WORKERS = ("a", "b", "c")


@contextlib.contextmanager
def broker_for(kind: str, directory: Path) -> Iterator[Broker]:
    if kind == "sqlite":
        yield Broker(kind, f"sqlite:///{directory / 'broker.db'}")
        return
    if kind == "redis":
        (directory / "redis").mkdir()
        server = PrivateRedis(directory / "redis").start()
        target = ("127.0.0.1", server.port)
        broker = Broker(kind, server.url, kill=server.kill, restart=server.start)
    elif shutil.which("rabbitmq-server") is not None:
        (directory / "rabbit").mkdir()
        print("starting a private RabbitMQ node (takes ~40 s)", flush=True)
        node = PrivateRabbit(directory / "rabbit").start()
        target = ("127.0.0.1", node.port)
        broker = Broker(kind, node.url, kill=node.kill, restart=node.start)
    else:  # no RabbitMQ of our own to kill: the shared server, through the proxy only
        url = URL(AMQP_URL)
        assert url.host is not None and url.port is not None
        target = (url.host, url.port)
        node = None
        broker = Broker(kind, AMQP_URL)
    with FaultProxy(*target) as proxy:
        broker.proxy = proxy
        try:
            yield broker
        finally:
            if kind == "redis":
                server.kill()
            elif node is not None:
                node.kill()


class Soak:
    def __init__(self, scenario: Scenario, rate: float, seed: int) -> None:
        self.scenario = scenario
        self.rate = rate
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.publish_errors = 0
        self.log: list[str] = []

    def produce(self) -> None:
        """Publish ``rate`` tasks a second until ``stop``; a failed publish (the broker
        is down) is counted, not recorded as enqueued."""
        period = 1 / self.rate
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.scenario.publish(1, seconds=(0.0, 0.05))
            except Exception:
                self.publish_errors += 1
                self.stop.wait(0.5)
            self.stop.wait(max(0.0, period - (time.monotonic() - began)))

    def faults(self) -> list[Callable[[], str]]:
        found = [self.kill_child, self.kill_worker, self.sigterm]
        broker = self.scenario.broker
        if broker.proxy is not None:
            found += [self.reset, self.freeze, self.throttle]
        if broker.kill is not None:
            found.append(self.kill_broker)
        return found

    def _label(self) -> str:
        return self.random.choice(sorted(self.scenario.workers))

    def kill_child(self) -> str:
        label = self._label()
        pid = self.scenario.kill_child(label)
        return f"kill -9 child {pid} of {label}"

    def kill_worker(self) -> str:
        label = self._label()
        self.scenario.kill_worker(label)
        self.scenario.worker(label)
        return f"kill -9 worker {label}"

    def sigterm(self) -> str:
        label = self._label()
        code = self.scenario.sigterm(label, timeout=60)
        self.scenario.worker(label)
        return f"SIGTERM worker {label} (exit {code})"

    def _proxy(self) -> FaultProxy:
        assert self.scenario.broker.proxy is not None
        return self.scenario.broker.proxy

    def reset(self) -> str:
        with self.scenario.history.fault("connection reset"):
            count = self._proxy().reset()
        return f"reset {count} connections"

    def freeze(self) -> str:
        seconds = self.random.uniform(1, 6)
        with self.scenario.history.fault("network frozen"):
            self._proxy().freeze()
            time.sleep(seconds)
            self._proxy().thaw()
        return f"froze the network {seconds:.1f} s"

    def throttle(self) -> str:
        seconds = self.random.uniform(2, 6)
        with self.scenario.history.fault("throttled"):
            self._proxy().throttle(20_000, 0.005)
            time.sleep(seconds)
            self._proxy().throttle(None)
        return f"throttled to 20 kB/s + 5 ms for {seconds:.1f} s"

    def kill_broker(self) -> str:
        broker = self.scenario.broker
        assert broker.kill is not None and broker.restart is not None
        with self.scenario.history.fault("kill -9 broker"):
            broker.kill()
            time.sleep(self.random.uniform(0, 2))
            broker.restart()
        return "kill -9 of the broker, restarted"


def run(kind: str, minutes: float, rate: float, seed: int, directory: Path) -> int:
    with broker_for(kind, directory) as broker:
        scenario = Scenario(directory, broker, lease=5.0, seed=seed)
        soak = Soak(scenario, rate, seed)
        producer = threading.Thread(target=soak.produce, name="producer", daemon=True)
        began = time.monotonic()
        try:
            scenario.start_workers(*WORKERS)
            producer.start()
            faults = soak.faults()
            deadline = began + minutes * 60
            while time.monotonic() < deadline:
                time.sleep(soak.random.uniform(2, 8))  # the pace of the faults
                fault = soak.random.choice(faults)
                try:
                    what = fault()
                except AssertionError as exc:  # e.g. no child was running a task
                    what = f"{fault.__name__} skipped: {str(exc).splitlines()[0]}"
                soak.log.append(f"{time.monotonic() - began:7.1f} s  {what}")
                print(soak.log[-1], flush=True)
            soak.stop.set()
            producer.join(30)
            for label in WORKERS:  # every worker up for the drain
                if label not in scenario.workers:
                    scenario.worker(label)
            report = scenario.verdict(timeout=180)
        finally:
            soak.stop.set()
            scenario.close()
            if kind == "amqp":
                delete_queues(broker.url, [scenario.queue])
        ok = report.ok and scenario.left == 0
        verdict = "PASSED" if ok else "FAILED"
        lines = [
            f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {kind}, {minutes:g} min,"
            f" {rate:g} tasks/s: {verdict}",
            "",
            f"- {report.summary()}; {scenario.left} left in the queue;"
            f" {soak.publish_errors} publishes refused during outages;"
            f" {len(report.unexpected)} runs of ids whose publish had failed",
        ]
        if not ok:
            lines += ["", "```", report.details(), "```"]
        text = "\n".join(lines) + "\n\n"
        print(text)
        with (ROOT / "soak" / "LATEST.md").open("a") as out:
            out.write(text)
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--broker", choices=["sqlite", "redis", "amqp"], default="redis")
    parser.add_argument("--rate", type=float, default=40, help="tasks published a second")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the history directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"soak: {args.broker}, {args.minutes:g} min, seed {seed}", flush=True)
    if args.keep:
        directory = tempfile.mkdtemp(prefix="celeriac-soak-")
        print(f"history in {directory}", flush=True)
        return run(args.broker, args.minutes, args.rate, seed, Path(directory))
    with tempfile.TemporaryDirectory(prefix="celeriac-soak-") as directory:
        return run(args.broker, args.minutes, args.rate, seed, Path(directory))


if __name__ == "__main__":
    sys.exit(main())
