"""Canvas: signatures and the primitives that combine them, as in Celery.

``add.s(2, 2)`` is a :class:`Signature`; ``chain`` (also ``sig | sig``), ``group``,
``chord``, ``chunks``, ``xmap`` and ``xstarmap`` compose them. On the wire they are
Celery's signature dicts, so workflows cross between Celery and celeriac. Design notes:
``docs/internals/canvas.md``.
"""

from __future__ import annotations

from celeriac.canvas._maps import chunks, xmap, xstarmap
from celeriac.canvas._primitives import chain, chord, group
from celeriac.canvas._signature import Signature, maybe_signature, signature, subtask
from celeriac.canvas._stamping import StampingVisitor

__all__ = [
    "Signature",
    "StampingVisitor",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "subtask",
    "xmap",
    "xstarmap",
]
