"""A private RabbitMQ node for broker kills (the soak's ``--broker amqp``): its own node
name, AMQP and distribution ports, Mnesia and log directories under ``directory``, no
plugins; killed with kill -9 by its PID and started again on the same files. Booting took
40 s and a restart 18 s on the 2-core test machine, too slow for the default test run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from servers import free_port


def server_command() -> str:
    """The ``rabbitmq-server`` script itself: Debian's ``/usr/sbin`` wrapper switches to
    the ``rabbitmq`` user and drops the environment that names the private node."""
    direct = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    return str(direct) if direct.exists() else "rabbitmq-server"


class PrivateRabbit:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"celeriac-faults-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (directory / "enabled_plugins").write_text("[].\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.directory / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "none"),
        }

    def start(self, timeout: float = 180) -> PrivateRabbit:
        (self.directory / "pid").unlink(missing_ok=True)
        with (self.directory / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [server_command()],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the private RabbitMQ node exited: see {self.directory / 'server.log'}"
                    ) from None
                time.sleep(0.5)  # no event to wait on: the node opens its port when ready
        raise RuntimeError(f"the private RabbitMQ node did not open its port in {timeout}s")

    def kill(self) -> None:
        """kill -9 the node (the Erlang VM named in its PID file) and its launcher."""
        pid_file = self.directory / "pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None
