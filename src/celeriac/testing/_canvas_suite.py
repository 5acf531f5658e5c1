"""Conformance mixins for the optional, canvas part of the result-backend contract:
saved groups and chord counters (see :mod:`celeriac.transports.backend`). Each mixin's
first test asserts that the backend class implements that part (overrides the
``NotImplementedError`` defaults of :class:`~celeriac.transports.backend.ResultBackend`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

from celeriac import states
from celeriac.testing._support import BackendFactory, opened, run, run_in_threads
from celeriac.transports.backend import ChordClaim, ChordPart, ResultBackend

#: The optional parts, by name: the methods a backend overrides to offer each.
BACKEND_PARTS: dict[str, tuple[str, ...]] = {
    "groups": ("save_group", "restore_group", "forget_group"),
    "chord counters": ("chord_start", "chord_join", "chord_done", "chord_grow"),
    "replies": ("store_replies",),  # with ``needs_reply_to``
    "key values": ("kv_get", "kv_set", "kv_delete"),  # app.backend.get/set/delete
    "history": ("recent_results",),  # the dashboard's task list after a restart
}


def backend_offers(cls: type[ResultBackend], part: str) -> bool:
    """Whether ``cls`` implements every method of ``part`` (see :data:`BACKEND_PARTS`)."""
    return all(getattr(cls, m) is not getattr(ResultBackend, m) for m in BACKEND_PARTS[part])


def _group_meta(group_id: str, members: Sequence[str]) -> dict[str, Any]:
    """Celery's saved-group meta: ``{"result": [[group_id, null], [member tuples]]}``."""
    return {"result": [[group_id, None], [[[m, None], None] for m in members]]}


class GroupConformance:
    """Saved group results (``GroupResult.save``/``restore``)."""

    def test_groups_are_implemented(self, backend_factory: BackendFactory) -> None:
        assert backend_offers(type(backend_factory()), "groups")

    def test_save_restore_forget_group(self, backend_factory: BackendFactory) -> None:
        group_id = str(uuid.uuid4())
        meta = _group_meta(group_id, [str(uuid.uuid4()) for _ in range(3)])

        async def main() -> None:
            async with opened(backend_factory()) as a, opened(backend_factory()) as b:
                assert await a.restore_group(group_id) is None
                await a.save_group(group_id, meta, 60.0)
                assert await b.restore_group(group_id) == meta  # another instance
                assert await b.get(group_id) is None  # not a task result
                await b.forget_group(group_id)
                assert await a.restore_group(group_id) is None
                await a.forget_group("never-saved")

        run(main())

    def test_saving_again_replaces_the_group(self, backend_factory: BackendFactory) -> None:
        group_id = str(uuid.uuid4())
        first, second = _group_meta(group_id, ["a"]), _group_meta(group_id, ["b", "c"])

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.save_group(group_id, first, None)
                await backend.save_group(group_id, second, None)
                assert await backend.restore_group(group_id) == second

        run(main())


def _part(group_id: str, index: int, size: int | None = None) -> ChordPart:
    return ChordPart(group_id, f"{group_id}-{index}", index, states.SUCCESS, index * 10, size)


def _results(claim: ChordClaim) -> list[tuple[str, str, Any]]:
    return [(str(t), str(s), r) for t, s, r in claim.results]


def _expected(group_id: str, size: int) -> list[tuple[str, str, Any]]:
    return [(f"{group_id}-{i}", states.SUCCESS, i * 10) for i in range(size)]


class ChordCounterConformance:
    """Chord counters: the header's parts are counted once each and the join fires
    exactly once, even with parts reported concurrently from several instances."""

    def test_chord_counters_are_implemented(self, backend_factory: BackendFactory) -> None:
        assert backend_offers(type(backend_factory()), "chord counters")

    def test_join_fires_once_with_the_results_in_header_order(
        self, backend_factory: BackendFactory
    ) -> None:
        gid = str(uuid.uuid4())

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.chord_start(gid, 3, 60.0)
                assert await backend.chord_join([_part(gid, 2)], 60.0) == []
                assert await backend.chord_join([_part(gid, 0)], 60.0) == []
                assert await backend.chord_join([_part(gid, 0)], 60.0) == []  # a re-run
                (claim,) = await backend.chord_join([_part(gid, 1)], 60.0)
                assert claim.group_id == gid and _results(claim) == _expected(gid, 3)
                # claimed and not yet done: another member's duplicate gets no claim
                assert await backend.chord_join([_part(gid, 2)], 60.0) == []
                await backend.chord_done(gid, claim.token)
                for index in range(3):  # fired: late duplicates do nothing
                    assert await backend.chord_join([_part(gid, index)], 60.0) == []

        run(main())

    def test_the_completing_member_may_claim_again_until_done(
        self, backend_factory: BackendFactory
    ) -> None:
        gid = str(uuid.uuid4())

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.chord_start(gid, 2, 60.0)
                assert await backend.chord_join([_part(gid, 0)], 60.0) == []
                (first,) = await backend.chord_join([_part(gid, 1)], 60.0)
                # its worker was lost before the body went: the re-run claims again
                (again,) = await backend.chord_join([_part(gid, 1)], 60.0)
                assert _results(again) == _results(first) == _expected(gid, 2)
                await backend.chord_done(gid, again.token)
                assert await backend.chord_join([_part(gid, 1)], 60.0) == []

        run(main())

    def test_a_chord_started_again_is_a_new_run(self, backend_factory: BackendFactory) -> None:
        gid = str(uuid.uuid4())  # a frozen chord applied twice: the same ids

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                for _ in range(2):
                    await backend.chord_start(gid, 2, 60.0)
                    assert await backend.chord_join([_part(gid, 0)], 60.0) == []
                    (claim,) = await backend.chord_join([_part(gid, 1)], 60.0)
                    assert _results(claim) == _expected(gid, 2)
                    await backend.chord_done(gid, claim.token)
                    assert await backend.chord_join([_part(gid, 1)], 60.0) == []

        run(main())

    def test_a_grown_chord_waits_for_its_added_members(
        self, backend_factory: BackendFactory
    ) -> None:
        gid = str(uuid.uuid4())

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.chord_start(gid, 2, 60.0)
                await backend.chord_grow(gid, 1)  # Task.add_to_chord in a member
                assert await backend.chord_join([_part(gid, 0), _part(gid, 1)], 60.0) == []
                (claim,) = await backend.chord_join([_part(gid, 2)], 60.0)
                assert _results(claim) == _expected(gid, 3)
                await backend.chord_done(gid, claim.token)

        run(main())

    def test_size_from_the_parts_without_chord_start(self, backend_factory: BackendFactory) -> None:
        gid = str(uuid.uuid4())

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                assert await backend.chord_join([_part(gid, 1, size=2)], None) == []
                (claim,) = await backend.chord_join([_part(gid, 0, size=2)], None)
                assert _results(claim) == _expected(gid, 2)
                await backend.chord_done(gid, claim.token)

        run(main())

    def test_one_call_completes_several_chords(self, backend_factory: BackendFactory) -> None:
        first, second, third = (str(uuid.uuid4()) for _ in range(3))

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                for gid in (first, second, third):
                    await backend.chord_start(gid, 2, 60.0)
                await backend.chord_join([_part(first, 0), _part(second, 1)], 60.0)
                parts = [_part(first, 1), _part(second, 0), _part(third, 0)]
                claims = await backend.chord_join(parts, 60.0)
                assert sorted((c.group_id, _results(c)) for c in claims) == sorted(
                    [(first, _expected(first, 2)), (second, _expected(second, 2))]
                )
                assert await backend.chord_join([_part(third, 1)], 60.0) != []

        run(main())

    def test_concurrent_joins_from_several_instances_fire_once(
        self, backend_factory: BackendFactory
    ) -> None:
        gid, size, threads = str(uuid.uuid4()), 24, 3
        run(self._start(backend_factory(), gid, size))
        claims: list[tuple[int, ChordClaim]] = []  # (the claiming part's index, claim)
        lock, barrier = threading.Lock(), threading.Barrier(threads)

        async def join(backend: ResultBackend, indexes: range) -> None:
            async with opened(backend):
                barrier.wait(10)
                for index in indexes:
                    # each part twice, as a re-run after a lost worker would
                    for part in (_part(gid, index), _part(gid, index)):
                        got = await backend.chord_join([part], 60.0)
                        with lock:
                            claims.extend((index, claim) for claim in got)

        # the parts interleave: thread k reports k, k + threads, k + 2 * threads, ...
        run_in_threads(*(join(backend_factory(), range(k, size, threads)) for k in range(threads)))
        # the completing member's own duplicate may claim again; nobody else does
        assert len({index for index, _ in claims}) == 1, claims
        assert all(_results(c) == _expected(gid, size) for _, c in claims)
        assert 1 <= len(claims) <= 2

    @staticmethod
    async def _start(backend: ResultBackend, gid: str, size: int) -> None:
        async with opened(backend):
            await backend.chord_start(gid, size, 60.0)


__all__ = ["BACKEND_PARTS", "ChordCounterConformance", "GroupConformance", "backend_offers"]
