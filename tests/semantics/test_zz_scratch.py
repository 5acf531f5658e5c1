import time

import redis
from test_chord_errors_semantics import TASKS  # noqa: F401

from semantic_cluster import Cluster


def test_probe(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    inner = pkg.chord([t.boom.s(), t.add.s(1)], t.xsum.s())
    outer = pkg.chord([pkg.chain(t.add.si(1, 1), inner), t.add.si(0, 0)], t.collect.s())
    result = outer.delay()
    time.sleep(4)
    r = redis.Redis.from_url(cluster.url)
    print("OUTER", result.id, r.get("celery-task-meta-" + result.id))
    for k in sorted(r.keys("*")):
        print("KEY", k, r.type(k))
    print(cluster.log[-2500:])
