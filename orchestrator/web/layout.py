"""A layered drawing of a DAG, left to right (the plan graph of the run page): each node
one column right of its deepest input; an arrow that skips columns passes through a
narrow lane in each column it crosses (so it never runs behind a box); the boxes of a
column ordered so that few arrows cross (the mean place of their neighbours, swept
left and right, then swaps of neighbours while that removes crossings).

::

    drawn = layered(["a", "b", "c"], [("a", "c"), ("b", "c")], box=(200, 84))
    drawn.boxes["c"]          # (x, y) of c's top-left corner
    drawn.routes[("a", "c")]  # the points the arrow passes, from a's right side to c's left
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Layout", "layered"]

Point = tuple[float, float]
_SWAP_LIMIT = 400
"""Above this many column items, only the sweeps order the columns (swaps cost more)."""


@dataclass(frozen=True)
class Layout:
    """Where each box goes and the points each arrow passes."""

    boxes: dict[str, tuple[int, int]]
    routes: dict[tuple[str, str], list[Point]]
    width: int
    height: int


@dataclass(frozen=True)
class _Lane:
    """Where an arrow crosses a column it skips."""

    edge: tuple[str, str]
    column: int


Item = str | _Lane


def layered(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    *,
    box: tuple[int, int],
    gap: tuple[int, int] = (64, 24),
    lane: int = 14,
    pad: int = 12,
) -> Layout:
    """Lay ``nodes`` (boxes of size ``box``) out in columns ``gap[0]`` apart, boxes
    ``gap[1]`` apart in a column; arrows that skip a column take a ``lane`` of its
    height. ``edges`` must form no cycle."""
    width, height = box
    columns, links = _columns(nodes, edges)
    size = {item: _size(item, height, lane) for column in columns for item in column}
    _order(columns, links, size, gap[1])
    tallest = max(_extent(c, size, gap[1]) for c in columns)
    places = {item: y for column in columns for item, y in _stack(column, size, gap[1], tallest)}
    left = [pad + c * (width + gap[0]) for c in range(len(columns))]
    boxes = {
        item: (left[c], pad + round(places[item]))
        for c, column in enumerate(columns)
        for item in column
        if isinstance(item, str)
    }
    column_of = {item: c for c, column in enumerate(columns) for item in column}
    routes: dict[tuple[str, str], list[Point]] = {}
    for source, target in edges:
        sx, sy = boxes[source]
        points: list[Point] = [(sx + width, sy + height / 2)]
        for c in range(column_of[source] + 1, column_of[target]):
            y = pad + places[_Lane((source, target), c)] + lane / 2
            points += [(left[c], y), (left[c] + width, y)]
        tx, ty = boxes[target]
        routes[(source, target)] = [*points, (tx, ty + height / 2)]
    return Layout(
        boxes=boxes,
        routes=routes,
        width=pad * 2 + len(columns) * width + (len(columns) - 1) * gap[0],
        height=pad * 2 + round(tallest),
    )


def _columns(
    nodes: Sequence[str], edges: Sequence[tuple[str, str]]
) -> tuple[list[list[Item]], list[tuple[Item, Item]]]:
    """Items by column (nodes by depth, and a lane per skipped column) and the links
    between items of neighbouring columns."""
    inputs: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in edges:
        inputs[target].append(source)
    depth: dict[str, int] = {}
    for node in _topological(nodes, inputs):
        depth[node] = 1 + max((depth[i] for i in inputs[node]), default=-1)
    columns: list[list[Item]] = [[] for _ in range(max(depth.values(), default=0) + 1)]
    for node in nodes:
        columns[depth[node]].append(node)
    links: list[tuple[Item, Item]] = []
    for source, target in edges:
        previous: Item = source
        for c in range(depth[source] + 1, depth[target]):
            lane = _Lane((source, target), c)
            columns[c].append(lane)
            links.append((previous, lane))
            previous = lane
        links.append((previous, target))
    return columns, links


def _topological(nodes: Sequence[str], inputs: dict[str, list[str]]) -> list[str]:
    done: set[str] = set()
    order: list[str] = []
    for start in nodes:
        stack = [start]
        while stack:  # no recursion: plans may be long chains
            node = stack[-1]
            todo = [i for i in inputs[node] if i not in done]
            if node in done or not todo:
                stack.pop()
                if node not in done:
                    done.add(node)
                    order.append(node)
            else:
                stack.extend(todo)
    return order


def _order(
    columns: list[list[Item]],
    links: list[tuple[Item, Item]],
    size: dict[Item, float],
    gap: int,
) -> None:
    """Order each column: by the mean place of its items' neighbours (left, then right,
    then left again), then by swapping neighbours while that removes crossings."""
    left: dict[Item, list[Item]] = {i: [] for c in columns for i in c}
    right: dict[Item, list[Item]] = {i: [] for c in columns for i in c}
    for a, b in links:
        right[a].append(b)
        left[b].append(a)
    tallest = max(_extent(c, size, gap) for c in columns)
    mid: dict[Item, float] = {}

    def settle(column: list[Item], neighbours: dict[Item, list[Item]]) -> None:
        here = {i: mid.get(i, top + size[i] / 2) for i, top in _stack(column, size, gap, tallest)}
        column.sort(key=lambda i: _mean([mid[j] for j in neighbours[i] if j in mid], here[i]))
        for item, top in _stack(column, size, gap, tallest):
            mid[item] = top + size[item] / 2

    for column in columns:
        settle(column, left)
    for column in reversed(columns[:-1]):
        settle(column, right)
    for column in columns[1:]:
        settle(column, left)
    if sum(len(c) for c in columns) <= _SWAP_LIMIT:
        _swap(columns, left, right)


def _swap(
    columns: list[list[Item]], left: dict[Item, list[Item]], right: dict[Item, list[Item]]
) -> None:
    rank = {item: n for column in columns for n, item in enumerate(column)}
    for _ in range(8):
        better = False
        for column in columns:
            for n in range(len(column) - 1):
                a, b = column[n], column[n + 1]
                if _crossed(a, b, left, rank) + _crossed(a, b, right, rank) > _crossed(
                    b, a, left, rank
                ) + _crossed(b, a, right, rank):
                    column[n], column[n + 1] = b, a
                    rank[a], rank[b] = n + 1, n
                    better = True
        if not better:
            return


def _crossed(upper: Item, lower: Item, side: dict[Item, list[Item]], rank: dict[Item, int]) -> int:
    """Crossings between the links of ``upper`` and ``lower`` on one side, with
    ``upper`` placed above ``lower``."""
    return sum(1 for u in side[upper] for w in side[lower] if rank[u] > rank[w])


def _stack(
    column: list[Item], size: dict[Item, float], gap: int, tallest: float
) -> list[tuple[Item, float]]:
    """Each item's top, the column centred in ``tallest``."""
    top = (tallest - _extent(column, size, gap)) / 2
    placed = []
    for item in column:
        placed.append((item, top))
        top += size[item] + gap
    return placed


def _extent(column: list[Item], size: dict[Item, float], gap: int) -> float:
    return sum(size[i] for i in column) + gap * max(len(column) - 1, 0)


def _size(item: Item, height: int, lane: int) -> float:
    return float(lane if isinstance(item, _Lane) else height)


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default
