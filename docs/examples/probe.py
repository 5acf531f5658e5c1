# probe.py: exit 0 when this host's worker answers a ping, 1 when it does not.
#   python probe.py proj celeriac@$HOSTNAME      (a Kubernetes exec probe, a cron check)
import sys

from celeriac.cli import find_app


def main(app_spec: str, worker: str, timeout: float = 5.0) -> int:
    app = find_app(app_spec)  # as -A: module, module:app, or a package with celery.py
    answers = app.control.ping(destination=[worker], timeout=timeout)
    alive = any(worker in answer for answer in answers)
    print(f"{worker}: {'pong' if alive else 'no answer'}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], *map(float, sys.argv[3:4])))
