"""Stamping (Celery 5.3+): ``sig.stamp(visitor=None, append_stamps=False, **stamps)``.

A stamp is a named value put on a signature: its ``stamped_headers`` option lists the
names and each value is an option of that name. The message of a stamped call carries
them as the ``stamped_headers`` and ``stamps`` headers (``celeriac.protocol.stamps``),
the worker shows them as ``self.request.stamped_headers`` / ``self.request.stamps``, and
``app.control.revoke_by_stamped_headers`` revokes by them.

Stamping a composite stamps what it holds, calling the visitor's hooks as Celery does:

* a signature: its callbacks (``on_callback``, then the callback is stamped) and
  errbacks (``on_errback``), then itself (``on_signature``);
* a chain: ``on_chain_start``, its steps (folded as Celery folds them: a group and what
  follows it is a chord whose body takes the following steps), ``on_chain_end``;
* a group: ``on_group_start``, its members, ``on_group_end``;
* a chord: ``on_chord_header_start``, the header's members, ``on_chord_header_end``,
  then -- only with a visitor -- ``on_chord_body`` and the body.

What a hook returns is merged into the stamps handed down, the stamps given as keywords
winning over the visitor's; stamps a signature had already are merged in last, the new
value winning, or, with ``append_stamps=True``, collected into a list (new first).
"""

from __future__ import annotations

import contextvars
import copy
from abc import ABCMeta, abstractmethod
from typing import TYPE_CHECKING, Any

from celeriac.canvas._primitives import chain, chord, group
from celeriac.canvas._signature import Signature, maybe_signature
from celeriac.protocol.stamps import stamp_names

if TYPE_CHECKING:
    from collections.abc import Iterable

#: The option (and header) naming the stamps.
_FIXED = "stamped_headers"
#: ids of the callbacks and errbacks of the steps of the chain being stamped, so far
_SEEN: contextvars.ContextVar[set[int] | None] = contextvars.ContextVar(
    "celeriac_stamped_links", default=None
)


class StampingVisitor(metaclass=ABCMeta):
    """Decides the stamps of each part of a canvas: subclass it, implement
    :meth:`on_signature` (and any other hook), and pass it to ``sig.stamp(visitor)``.
    Each ``on_*`` hook but the ``*_end`` ones returns a dict of stamps to add."""

    def on_group_start(self, group: Any, **headers: Any) -> dict[str, Any]:
        """Called before the members of ``group`` are stamped."""
        return {}

    def on_group_end(self, group: Any, **headers: Any) -> None:
        """Called after the members of ``group`` were stamped."""
        return None

    def on_chain_start(self, chain: Any, **headers: Any) -> dict[str, Any]:
        """Called before the steps of ``chain`` are stamped."""
        return {}

    def on_chain_end(self, chain: Any, **headers: Any) -> None:
        """Called after the steps of ``chain`` were stamped."""
        return None

    @abstractmethod
    def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
        """The stamps of the task signature ``sig``."""

    def on_chord_header_start(self, sig: Any, **header: Any) -> dict[str, Any]:
        """Called before the header of the chord ``sig`` is stamped (by default, as
        :meth:`on_group_start` of its header group)."""
        return self.on_group_start(sig.header, **header)

    def on_chord_header_end(self, sig: Any, **header: Any) -> None:
        """Called after the header of ``sig`` was stamped (:meth:`on_group_end`)."""
        self.on_group_end(sig.header, **header)

    def on_chord_body(self, sig: Any, **header: Any) -> dict[str, Any]:
        """Called before the body of the chord ``sig`` is stamped."""
        return {}

    def on_callback(self, callback: Any, **header: Any) -> dict[str, Any]:
        """Called before the callback (``link``) ``callback`` is stamped."""
        return {}

    def on_errback(self, errback: Any, **header: Any) -> dict[str, Any]:
        """Called before the errback (``link_error``) ``errback`` is stamped."""
        return {}


# -- merging stamps ---------------------------------------------------------------
_SCALARS = (int, float, str)


def _merge_value(new: Any, old: Any, append: bool) -> Any:
    if isinstance(new, dict):
        return _merge(new, old, append) if isinstance(old, dict) else new
    if append and isinstance(new, _SCALARS):
        new = [new]
    if isinstance(new, list) and isinstance(old, list):
        return [*new, *old]
    if append:
        return [*(list(new) if new is not None else []), old]
    return new


def _merge(new: dict[str, Any], old: dict[str, Any], append: bool) -> dict[str, Any]:
    """``new`` with ``old`` merged in: a name in both keeps the new value (dicts merge
    by key, two lists join) or, with ``append``, both values in a list, new first."""
    merged = dict(new)
    for name, value in old.items():
        merged[name] = _merge_value(new[name], value, append) if name in new else value
    return merged


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def collect(
    sig: Signature,
    found: dict[str, Any] | None,
    append: bool,
    headers: dict[str, Any],
    own: bool = True,
) -> dict[str, Any]:
    """The stamps for ``sig``: ``headers`` (with their ``stamped_headers`` names), what a
    hook ``found``, and (``own``) the stamps ``sig`` has already, merged in that order."""
    stamps = {k: copy.deepcopy(v) for k, v in headers.items() if k != _FIXED}
    names = stamp_names(headers[_FIXED]) if _FIXED in headers else list(stamps)
    if found is not None:
        extra = {k: v for k, v in found.items() if k != _FIXED}
        names += stamp_names(found[_FIXED]) if _FIXED in found else list(extra)
        stamps = _merge(stamps, extra, append)
    if own:
        names += stamp_names(sig.options.get(_FIXED))
        old = {k: v for k, v in sig.options.items() if k in names and k != _FIXED}
        stamps = _merge(stamps, copy.deepcopy(old), append)
    return {**stamps, _FIXED: _unique(names)}


def _as_signatures(sig: Signature, key: str) -> list[Signature]:
    """The callbacks (``link``) or errbacks (``link_error``) of ``sig``, as signatures
    kept in its options (so stamping them stays)."""
    value = sig.options.get(key)
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    links = [maybe_signature(item, app=sig._app) for item in items]
    sig.options[key] = links
    return links


# -- stamping ---------------------------------------------------------------------
def stamp_links(sig: Signature, visitor: Any, append: bool, headers: dict[str, Any]) -> None:
    """Stamp the callbacks, then the errbacks, of ``sig`` (not with its own stamps)."""
    seen = _SEEN.get()
    for key, hook in (("link", "on_callback"), ("link_error", "on_errback")):
        given = copy.deepcopy(headers)
        for link in _as_signatures(sig, key):
            if seen is not None:
                # an errback of a chain is one signature on each of its steps: it is
                # stamped once, as Celery stamps the one errback its chain holds
                if id(link) in seen:
                    continue
                seen.add(id(link))
            found = (getattr(visitor, hook)(link, **given) or {}) if visitor else None
            given = collect(sig, found, append, given, own=False)
            stamp(link, visitor, append, given)


def stamp(sig: Signature, visitor: Any, append: bool, headers: dict[str, Any]) -> Signature:
    """``sig.stamp(visitor, append_stamps, **headers)``: see the module docstring."""
    if isinstance(sig, (chain, group, chord)):
        # the links of a chain's steps are stamped once each (see stamp_links)
        token = _SEEN.set(set() if isinstance(sig, chain) else None)
        try:
            if isinstance(sig, chain):
                _stamp_chain(sig, visitor, append, headers)
            elif isinstance(sig, group):
                _stamp_group(sig, visitor, append, headers)
            else:
                _stamp_chord(sig, visitor, append, headers)
        finally:
            _SEEN.reset(token)
    else:
        stamp_links(sig, visitor, append, headers)
        found = (visitor.on_signature(sig, **headers) or {}) if visitor else None
        sig.options.update(collect(sig, found, append, headers))
    return sig


def _stamp_chain(sig: chain, visitor: Any, append: bool, headers: dict[str, Any]) -> None:
    found = (visitor.on_chain_start(sig, **headers) or {}) if visitor else None
    given = collect(sig, found, append, headers)
    stamp_links(sig, visitor, False, given)  # as Celery: a chain's links never append
    for step in _folded(sig.tasks):
        stamp(step, visitor, append, given)
    if visitor:
        visitor.on_chain_end(sig, **given)


def _folded(steps: list[Signature]) -> list[Signature]:
    """The steps of a chain as Celery holds them: a group and the step after it are a
    chord, and the steps after a chord are part of its body. (The parts are the chain's
    own signatures, so stamping them stamps the chain.)"""
    out: list[Signature] = []
    for step in steps:
        last = out[-1] if out else None
        if isinstance(last, group):
            out[-1] = chord(last, body=step, app=last._app)
        elif isinstance(last, chord) and not isinstance(step, chord) and last.body is not None:
            body = last.body
            parts = [*(body.tasks if isinstance(body, chain) else [body]), step]
            out[-1] = chord(last.header, body=chain(*parts, app=last._app), app=last._app)
        else:
            out.append(step)
    return out


def _stamp_group(sig: group, visitor: Any, append: bool, headers: dict[str, Any]) -> None:
    found = (visitor.on_group_start(sig, **headers) or {}) if visitor else None
    given = collect(sig, found, append, headers)
    stamp_links(sig, visitor, append, given)
    for member in sig.tasks:
        stamp(member, visitor, append, given)
    if visitor:
        visitor.on_group_end(sig, **given)


def _stamp_chord(sig: chord, visitor: Any, append: bool, headers: dict[str, Any]) -> None:
    found = (visitor.on_chord_header_start(sig, **headers) or {}) if visitor else None
    given = collect(sig, found, append, headers)
    stamp_links(sig, visitor, append, given)
    for member in sig.header.tasks:
        stamp(member, visitor, append, given)
    if visitor:
        visitor.on_chord_header_end(sig, **given)
        if sig.body is not None:
            found = visitor.on_chord_body(sig, **given) or {}
            stamp(sig.body, visitor, append, collect(sig, found, append, given))


__all__ = ["StampingVisitor", "collect", "stamp", "stamp_links"]
