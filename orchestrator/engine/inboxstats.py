"""The inbox's cluster-wide numbers (:class:`InboxStats`) and its latency buckets, apart
from :mod:`taskloom.engine.metrics` so that reading them (every worker's human tasks do)
loads no ``prometheus_client``: a worker without ``--metrics-port`` never does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["INBOX_LATENCY_BUCKETS", "InboxStats"]

INBOX_LATENCY_BUCKETS: tuple[float, ...] = (
    *(1.0, 5.0, 15.0, 30.0),  # seconds: someone was watching
    *(60.0, 120.0, 300.0, 600.0, 1800.0),  # minutes
    *(3600.0, 7200.0, 14400.0, 28800.0, 57600.0),  # hours
    *(86400.0, 172800.0, 345600.0, 604800.0, 1209600.0),  # days, up to two weeks
)
"""Bucket bounds in seconds of ``taskloom_inbox_decision_latency_seconds``: a person
answers in seconds when watching, in hours or days when not."""


@dataclass(frozen=True)
class InboxStats:
    """The inbox's cluster-wide numbers, as Redis keeps them
    (:meth:`~taskloom.HumanTasks.stats` reads them)."""

    open_by_assignee: Mapping[str, int] = field(default_factory=dict)
    """Open tasks per assignee (``""``: assigned to nobody, a group only, say)."""
    decisions: Mapping[str, int] = field(default_factory=dict)
    """Decisions made so far, per decision (``approve``, ...)."""
    latency_counts: tuple[int, ...] = ()
    """Decisions per latency bucket (not cumulative): one per bound of
    :data:`INBOX_LATENCY_BUCKETS`, then one for longer."""
    latency_sum: float = 0.0
    """Seconds from opening to decision, summed over every decision."""
    notifications_dead: int = 0
    """Notifications given up on, waiting for an operator."""
    open: int | None = None
    """Open tasks in all (``taskloom_human_tasks_open``); ``None``: not read."""
