"""Test helpers for celeriac users and transport authors.

``celeriac.testing.conformance`` holds the broker and result-backend conformance suite
(it needs pytest). For a user's own tests, :class:`TestWorker` runs the real worker code in this
process, usually on the ``memory://`` broker, and ``join()`` waits until the queues are
drained; tests then go through serialisation and the real worker code, not mocks.
"""

from __future__ import annotations

from celeriac.testing.worker import TestWorker

__all__ = ["TestWorker"]
