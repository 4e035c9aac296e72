"""The plan graph's layout (``taskloom.web.layout``): columns by dependency depth, no
arrow behind a box, few crossings, nothing overlapping."""

from __future__ import annotations

import itertools
import random

from taskloom.web.layout import Layout, layered

BOX = (200, 84)


def lanes(drawn: Layout, edge: tuple[str, str]) -> list[tuple[float, float, float]]:
    """(x from, x to, y) of each stretch where ``edge`` crosses a column."""
    points = drawn.routes[edge]
    return [(a[0], b[0], a[1]) for a, b in zip(points[1:-1:2], points[2:-1:2], strict=True)]


def test_columns_follow_dependency_depth_and_a_long_arrow_passes_beside_the_boxes() -> None:
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("x", "d")]
    drawn = layered(["a", "b", "c", "d", "x"], edges, box=BOX)
    x = {n: drawn.boxes[n][0] for n in "abcdx"}
    assert x["a"] == x["x"] < x["b"] < x["c"] < x["d"]
    assert drawn.routes[("a", "b")][0] == (x["a"] + 200, drawn.boxes["a"][1] + 42)
    assert drawn.routes[("a", "b")][-1] == (x["b"], drawn.boxes["b"][1] + 42)
    (lane,) = lanes(drawn, ("a", "c"))  # it skips b's column
    assert (lane[0], lane[1]) == (x["b"], x["b"] + 200)
    top = drawn.boxes["b"][1]
    assert not top <= lane[2] <= top + 84, "the arrow would run behind b"
    assert len(lanes(drawn, ("x", "d"))) == 2  # two columns skipped, two lanes
    for (n, (bx, by)), (m, (cx, cy)) in itertools.combinations(drawn.boxes.items(), 2):
        assert bx != cx or abs(by - cy) >= 84, f"{n} and {m} overlap"
    assert drawn.width >= max(bx for bx, _ in drawn.boxes.values()) + 200
    assert drawn.height >= max(by for _, by in drawn.boxes.values()) + 84


def test_a_column_is_ordered_so_that_arrows_do_not_cross() -> None:
    # Listed in an order that would cross: p1 feeds q2 and p2 feeds q1.
    drawn = layered(["p1", "p2", "q1", "q2"], [("p1", "q2"), ("p2", "q1")], box=BOX)
    y = {n: drawn.boxes[n][1] for n in drawn.boxes}
    assert (y["p1"] < y["p2"]) == (y["q2"] < y["q1"])


def test_a_large_random_plan_is_laid_out_without_overlaps() -> None:
    rng = random.Random(7)
    nodes = [f"n{i}" for i in range(80)]
    edges = [
        (nodes[j], nodes[i])
        for i in range(1, 80)
        for j in rng.sample(range(i), min(i, rng.randint(0, 3)))
    ]
    drawn = layered(nodes, edges, box=BOX)
    assert set(drawn.boxes) == set(nodes) and set(drawn.routes) == set(edges)
    by_column: dict[int, list[int]] = {}
    for bx, by in drawn.boxes.values():
        by_column.setdefault(bx, []).append(by)
    for tops in by_column.values():
        tops.sort()
        assert all(b - a >= 84 for a, b in itertools.pairwise(tops))
    for edge in edges:
        for x0, _, y in lanes(drawn, edge):
            for top in by_column.get(int(x0), []):
                assert not top < y < top + 84, f"{edge} runs behind a box"
