"""``@app.task(pydantic=True)`` as Celery 5.7's worker gives it: arguments validated into
the annotated models (``Optional`` too; ``pydantic_strict``, ``pydantic_context``), a model
result stored as its dump (``pydantic_dump_kwargs``), a model passed by the caller sent as
its dump, bad data failing the task with pydantic's ``ValidationError``."""

from __future__ import annotations

from semantic_cluster import Cluster

TASKS = """
from typing import Optional

from pydantic import BaseModel, ValidationInfo, field_validator


class Order(BaseModel):
    item: str
    qty: int


class Receipt(BaseModel):
    item: str
    total: int
    secret: str = "hidden"


class Labelled(BaseModel):
    label: str

    @field_validator("label")
    @classmethod
    def with_context(cls, value, info: ValidationInfo):
        return f"{value} {info.context['unit']} {info.context['celery_task_name']}"


@app.task(name="sem.pyd.order", pydantic=True)
def order(o: Order, token: str) -> Receipt:
    note(token, type(o).__name__)
    return Receipt(item=o.item, total=o.qty * 2)


@app.task(name="sem.pyd.optional", pydantic=True)
def optional(o: Optional[Order] = None) -> Optional[Receipt]:
    return None if o is None else Receipt(item=type(o).__name__, total=o.qty)


@app.task(name="sem.pyd.strict", pydantic=True, pydantic_strict=True)
def strict(o: Order) -> int:
    return o.qty


@app.task(name="sem.pyd.context", pydantic=True, pydantic_context={"unit": "kg"})
def context(m: Labelled) -> str:
    return m.label


@app.task(name="sem.pyd.dump", pydantic=True, pydantic_dump_kwargs={"exclude": {"secret"}})
def dump(o: Order) -> Receipt:
    return Receipt(item=o.item, total=o.qty)


@app.task(name="sem.pyd.bound", bind=True, pydantic=True)
def bound(self, o: Order) -> Receipt:
    return Receipt(item=self.name, total=o.qty)


@app.task(name="sem.pyd.plain")
def plain(o: Order) -> str:
    return type(o).__name__
"""


def test_a_dict_argument_is_validated_into_the_model(cluster: Cluster) -> None:
    token = cluster.token()
    result = cluster.tasks.order.delay({"item": "tea", "qty": "3"}, token)
    assert result.get(timeout=20) == {"item": "tea", "total": 6, "secret": "hidden"}
    assert cluster.lines(token) == ["Order"]


def test_a_model_argument_is_sent_as_its_dump(cluster: Cluster) -> None:
    t = cluster.tasks
    token = cluster.token()
    result = t.order.apply_async((t.Order(item="jam", qty=2),), {"token": token})
    assert result.get(timeout=20) == {"item": "jam", "total": 4, "secret": "hidden"}
    assert cluster.lines(token) == ["Order"]


def test_optional_models_and_none(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.optional.delay().get(timeout=20) is None
    assert t.optional.delay(None).get(timeout=20) is None
    got = t.optional.delay({"item": "x", "qty": 5}).get(timeout=20)
    assert got == {"item": "Order", "total": 5, "secret": "hidden"}


def test_bad_data_fails_the_task_with_a_validation_error(cluster: Cluster) -> None:
    result = cluster.tasks.order.delay({"item": "tea", "qty": "many"}, cluster.token())
    result.get(timeout=20, propagate=False)
    assert result.state == "FAILURE"
    # Celery's client cannot rebuild pydantic's error (an Exception naming it): the
    # traceback says what failed
    assert "ValidationError" in repr(result.result)
    assert "qty" in str(result.traceback)


def test_strict_refuses_what_lax_validation_coerces(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.strict.delay({"item": "a", "qty": 3}).get(timeout=20) == 3
    result = t.strict.delay({"item": "a", "qty": "3"})
    result.get(timeout=20, propagate=False)
    assert result.state == "FAILURE"
    assert "ValidationError" in repr(result.result)


def test_the_context_reaches_validators_with_the_task_name(cluster: Cluster) -> None:
    assert cluster.tasks.context.delay({"label": "flour"}).get(timeout=20) == (
        "flour kg sem.pyd.context"
    )


def test_dump_kwargs_shape_the_stored_result(cluster: Cluster) -> None:
    assert cluster.tasks.dump.delay({"item": "a", "qty": 1}).get(timeout=20) == {
        "item": "a",
        "total": 1,
    }


def test_a_bound_task_gets_itself_and_the_model(cluster: Cluster) -> None:
    got = cluster.tasks.bound.delay({"item": "a", "qty": 7}).get(timeout=20)
    assert got == {"item": "sem.pyd.bound", "total": 7, "secret": "hidden"}


def test_without_pydantic_the_task_gets_the_dict(cluster: Cluster) -> None:
    assert cluster.tasks.plain.delay({"item": "a", "qty": 1}).get(timeout=20) == "dict"
