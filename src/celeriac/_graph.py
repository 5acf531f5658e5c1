"""``AsyncResult.graph``: the results a task led to, as a dependency graph (Celery's
``DependencyGraph`` surface: iteration over nodes, ``graph[node]`` for a node's
children, ``edges()``, ``items()``, ``valency_of``, and its text form)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


class DependencyGraph:
    """Nodes (results) in the order they were added, each with its child nodes."""

    def __init__(self, it: Iterable[tuple[Any, Iterable[Any]]] | None = None) -> None:
        self.adjacent: dict[Any, list[Any]] = {}
        for node, children in it or ():
            self.add_arc(node)
            for child in children:
                self.add_edge(node, child)

    def add_arc(self, obj: Any) -> None:
        """Add a node (no edges)."""
        self.adjacent.setdefault(obj, [])

    def add_edge(self, a: Any, b: Any) -> None:
        """Make ``b`` a child of ``a``."""
        self.add_arc(a)
        self.adjacent[a].append(b)

    def connect(self, graph: DependencyGraph) -> None:
        """Add another graph's nodes and edges to this one."""
        for node, children in graph.adjacent.items():
            self.add_arc(node)
            self.adjacent[node].extend(children)

    def edges(self) -> Iterator[Any]:
        """The nodes that have at least one child (an iterator, as Celery's)."""
        return (node for node, children in self.adjacent.items() if children)

    def valency_of(self, obj: Any) -> int:
        """How many nodes lie below ``obj`` (0 for a node not in the graph)."""
        if obj not in self.adjacent:
            return 0
        return sum(1 + self.valency_of(child) for child in self.adjacent[obj])

    def items(self) -> Iterator[tuple[Any, list[Any]]]:
        return iter(self.adjacent.items())

    iteritems = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.adjacent)

    def __getitem__(self, node: Any) -> list[Any]:
        return self.adjacent[node]

    def __len__(self) -> int:
        return len(self.adjacent)

    def __contains__(self, obj: object) -> bool:
        return obj in self.adjacent

    def _lines(self, obj: Any, level: int) -> list[str]:
        lines = [f"{obj}({self.valency_of(obj)})"]
        for child in self.adjacent.get(obj, ()):
            below = self._lines(child, level + 1)
            lines.append("     " * level + below[0])
            lines.extend(below[1:])
        return lines

    def __repr__(self) -> str:
        return "\n".join("\n".join(self._lines(node, 1)) for node in self)


__all__ = ["DependencyGraph"]
