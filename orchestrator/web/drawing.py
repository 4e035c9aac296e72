"""The run page's two pictures, laid out on the server (the templates draw them as SVG,
so they read without JavaScript):

* :func:`plan_graph`: a plan version as a graph, activities as boxes in columns by
  dependency depth (:mod:`taskloom.web.layout`), inputs as arrows, and the integrated
  answer as the last box;
* :func:`gantt`: the run's timeline, one row per activity (and for planning,
  cross-checks and integration), a bar per model call, verification, wait on a person
  or sub-plan, on one time axis from the run's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskloom.display import clip, duration
from taskloom.pipeline.progress import DONE, Bar, PlanVersion, Step, TimelineRow
from taskloom.web.layout import layered

__all__ = ["Edge", "Gantt", "GanttBar", "GanttRow", "Graph", "Node", "gantt", "plan_graph"]

NODE_W, NODE_H = 200, 84
GAP_X, GAP_Y, PAD = 64, 22, 12
ANSWER = "answer"
"""The id of the integrated answer's box (no activity id can clash: it is drawn apart)."""


@dataclass(frozen=True)
class Node:
    """An activity's box (``step`` is ``None`` for the integrated answer's)."""

    id: str
    x: int
    y: int
    step: Step | None
    label: str
    role: str
    state: str


@dataclass(frozen=True)
class Edge:
    """An arrow from an input to the activity that needs it."""

    source: str
    target: str
    path: str
    done: bool
    """Whether the input's output is accepted (it has flowed along the arrow)."""
    final: bool = False
    """An arrow into the integrated answer."""


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    node_w: int = NODE_W
    node_h: int = NODE_H


def plan_graph(version: PlanVersion, *, answer_state: str) -> Graph:
    """``version``'s plan laid out left to right by dependency depth
    (:func:`~taskloom.web.layout.layered`), the integrated answer last."""
    plan = version.plan
    needed = {d for a in plan.activities for d in a.inputs}
    edges = [(d, a.id) for a in plan.activities for d in a.inputs]
    edges += [(a.id, ANSWER) for a in plan.activities if a.id not in needed]
    drawn = layered(
        [*(a.id for a in plan.activities), ANSWER],
        edges,
        box=(NODE_W, NODE_H),
        gap=(GAP_X, GAP_Y),
        pad=PAD,
    )
    graph = Graph(width=drawn.width, height=drawn.height)
    for act in plan.activities:
        step = version.steps[act.id]
        label, role = clip(act.id, 26), clip(step.role, 28)
        graph.nodes.append(Node(act.id, *drawn.boxes[act.id], step, label, role, step.state))
    answer = drawn.boxes[ANSWER]
    graph.nodes.append(Node(ANSWER, *answer, None, "Integrated answer", "integrator", answer_state))
    for source, target in edges:
        done = version.steps[source].state in DONE
        path = _path(drawn.routes[(source, target)])
        graph.edges.append(Edge(source, target, path, done, final=target == ANSWER))
    return graph


def _path(points: list[tuple[float, float]]) -> str:
    """An SVG path through ``points``: a curve from one column to the next, straight
    along the lane of a column it passes; it stops short of the box for the arrowhead."""
    (x, y), *rest = points
    d = [f"M{x:.0f},{y:.0f}"]
    for n, (nx, ny) in enumerate(rest):
        if n == len(rest) - 1:
            nx -= 6
        if n % 2 == 0:  # a gap between columns
            bend = max((nx - x) / 2, 16)
            d.append(f"C{x + bend:.0f},{y:.0f} {nx - bend:.0f},{ny:.0f} {nx:.0f},{ny:.0f}")
        else:  # across a column, in its lane
            d.append(f"L{nx:.0f},{ny:.0f}")
        x, y = nx, ny
    return " ".join(d)


# -- the timeline -------------------------------------------------------------------------
LABEL_W, CHART_W, ROW_H, AXIS_H = 170, 1000, 24, 22
_WHAT = {
    "plan": "planner",
    "work": "model call",
    "verify": "verification",
    "wait": "waiting on a person",
    "sub-plan": "sub-plan (child run)",
    "check": "cross-checks",
    "integrate": "integrator",
}


@dataclass(frozen=True)
class GanttBar:
    x: float
    width: float
    kind: str
    outcome: str
    start_ms: int
    """From the run's start."""
    end_ms: int
    title: str
    open: bool
    """Still going."""


@dataclass(frozen=True)
class GanttRow:
    label: str
    kind: str
    state: str
    y: int
    bars: list[GanttBar]


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass
class Gantt:
    rows: list[GanttRow]
    ticks: list[Tick]
    width: int
    height: int
    label_w: int = LABEL_W
    row_h: int = ROW_H
    axis_h: int = AXIS_H


def gantt(rows: list[TimelineRow], *, start_ms: int, end_ms: int) -> Gantt:
    """``rows`` on one axis from ``start_ms`` to ``end_ms`` (open bars end there)."""
    total = max(end_ms - start_ms, 1)
    scale = CHART_W / total
    drawn = []
    for i, row in enumerate(rows):
        bars = [_bar(row.label, b, start_ms, end_ms, scale) for b in row.bars]
        drawn.append(GanttRow(row.label, row.kind, row.state, AXIS_H + i * ROW_H, bars))
    step = _tick_step(total)
    ticks = [
        Tick(LABEL_W + t * scale, duration(t)) for t in range(0, total + 1, step) if t <= total
    ]
    return Gantt(drawn, ticks, LABEL_W + CHART_W + 44, AXIS_H + len(rows) * ROW_H + 4)


def _bar(label: str, bar: Bar, start_ms: int, end_ms: int, scale: float) -> GanttBar:
    begin = max(bar.start_ms - start_ms, 0)
    end = (bar.end_ms if bar.end_ms is not None else end_ms) - start_ms
    end = max(end, begin)
    what = _WHAT.get(bar.kind, bar.kind)
    if bar.attempt:
        what += f", attempt {bar.attempt}"
    outcome = f": {bar.outcome}" if bar.outcome else (": still going" if bar.end_ms is None else "")
    title = (
        f"{label}: {what}{outcome} ({duration(begin)} to {duration(end)}, {duration(end - begin)})"
    )
    return GanttBar(
        x=LABEL_W + begin * scale,
        width=max((end - begin) * scale, 3.0),
        kind=bar.kind,
        outcome=bar.outcome,
        start_ms=begin,
        end_ms=end,
        title=title,
        open=bar.end_ms is None,
    )


def _tick_step(total_ms: int) -> int:
    """A round step giving 4 to 10 ticks."""
    for step in (
        100,
        200,
        500,
        1000,
        2000,
        5000,
        10_000,
        15_000,
        30_000,
        60_000,
        120_000,
        300_000,
        600_000,
        900_000,
        1_800_000,
        3_600_000,
        7_200_000,
        21_600_000,
    ):
        if total_ms / step <= 8:
            return step
    return 86_400_000
