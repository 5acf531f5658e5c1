"""Which celeriac is benchmarked: the installed one (the working tree, for an editable
install), or the ``src/`` of a git commit exported with ``git archive`` (read-only on the
repository), so figures belong to a commit while others keep editing the tree."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _git(*argv: str) -> str:
    done = subprocess.run(
        ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout.strip()


def export_ref(ref: str, dest: Path) -> tuple[Path, str]:
    """Extract ``src/`` of commit ``ref`` under ``dest``; return (src dir, full sha)."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    data = subprocess.run(
        ["git", "archive", "--format=tar", sha, "src"],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src", sha


def git_state(ref_sha: str | None) -> dict[str, Any]:
    """What was measured: an exported commit, or HEAD plus whether src/ was dirty."""
    try:
        if ref_sha:
            return {"commit": ref_sha[:12], "source": "git archive of the commit (clean)"}
        dirty = bool(_git("status", "--porcelain", "--", "src"))
        return {
            "commit": _git("rev-parse", "--short=12", "HEAD"),
            "source": "working tree" + (" with uncommitted changes in src/" if dirty else ""),
        }
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}


def probe_celeriac(python: str, src: Path | None) -> dict[str, Any]:
    """Import celeriac the way its workers will, and say what it offers."""
    code = (
        "import json, celeriac\n"
        "try:\n    import celeriac.transports as b, celeriac.transports as k\n"
        "except ImportError:  # a commit before the transports/ layout\n"
        "    import celeriac.brokers as b, celeriac.backends as k\n"
        "print(json.dumps({'version': celeriac.__version__, 'file': celeriac.__file__,"
        " 'redis_broker': 'redis' in b.BROKERS, 'redis_backend': 'redis' in k.BACKENDS,"
        " 'amqp_broker': 'amqp' in b.BROKERS, 'rpc_backend': 'rpc' in k.BACKENDS}))\n"
    )
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"celeriac is not importable by {python}: {tail}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found
