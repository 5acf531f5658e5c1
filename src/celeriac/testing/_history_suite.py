"""Conformance of a backend's history: the stored results it can list, newest first
(the dashboard's task list after a restart). See :mod:`celeriac.testing.conformance`."""

from __future__ import annotations

import uuid

from celeriac.testing._canvas_suite import backend_offers
from celeriac.testing._support import BackendFactory, opened, run


class HistoryConformance:
    """``recent_results``: what any instance of the factory stored, newest ``date_done``
    first, at most ``limit``, without what was forgotten."""

    def test_history_is_implemented(self, backend_factory: BackendFactory) -> None:
        assert backend_offers(type(backend_factory()), "history")

    def test_recent_results_newest_first_and_limited(self, backend_factory: BackendFactory) -> None:
        ids = [f"history-{n}-{uuid.uuid4().hex}" for n in range(5)]
        days = ["2026-12-01", "2026-12-04", "2026-12-02", "2026-12-05", "2026-12-03"]

        async def main() -> None:
            async with opened(backend_factory()) as one, opened(backend_factory()) as two:
                for n, (task_id, day) in enumerate(zip(ids, days, strict=True)):
                    meta = {"status": "SUCCESS", "result": n, "date_done": f"{day}T00:00:00+00:00"}
                    await one.store(task_id, meta, 60.0)
                await one.forget(ids[3])
                newest = await two.recent_results(2)
                assert [task_id for task_id, _ in newest] == [ids[1], ids[4]]
                assert newest[0][1]["result"] == 1
                listed = [task_id for task_id, _ in await two.recent_results(100)]
                assert listed == [ids[1], ids[4], ids[2], ids[0]]

        run(main())


__all__ = ["HistoryConformance"]
