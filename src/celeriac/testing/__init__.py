"""Test helpers for celeriac users and transport authors.

``celeriac.testing.conformance`` holds the broker and result-backend conformance suite
(it needs pytest). For a user's own tests, the in-process ``memory://`` broker
(:class:`celeriac.brokers.memory.MemoryBroker`, with ``join(queue)`` to drain) and result
backend are the test doubles: they go through serialisation and the real worker code.
"""

from __future__ import annotations
