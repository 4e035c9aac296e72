"""The pipeline's name and its decisions as they stand in a run's log, without the
pipeline itself: what the commands and pages that show runs need (``taskloom status``,
``runs``, ``history``, the web's run pages), so that they do not load the pipeline, its
plans, verifiers and pydantic models (~0.2-0.3 s of every such command's start).

A decision is a ``value_recorded`` event named ``pipeline.<event>`` (``planned``,
``activity``, ``replanned``, ``integrated``, ...) whose value holds its data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskloom.client import RunHandle
    from taskloom.engine.store import Event

__all__ = ["PIPELINE_NAME", "pipeline_entry", "pipeline_events"]

PIPELINE_NAME = "taskloom.pipeline"
"""The workflow name of a pipeline run (:meth:`Orchestrator.submit
<taskloom.Orchestrator.submit>`)."""


async def pipeline_events(
    handle: RunHandle, *, follow: bool = True
) -> AsyncIterator[dict[str, Any]]:
    """The pipeline's decisions as they are recorded: dicts with ``event`` (``planned``,
    ``activity``, ``replanned``, ``integrated``, ...) and its data."""
    async for event in handle.events(follow=follow):
        entry = pipeline_entry(event)
        if entry is not None:
            yield entry


def pipeline_entry(event: Event) -> dict[str, Any] | None:
    """A log event as one of the pipeline's decisions, or ``None`` if it is not one."""
    name = str(event.data.get("name", ""))
    if event.type == "value_recorded" and name.startswith("pipeline."):
        return {"event": name.removeprefix("pipeline."), **(event.data.get("value") or {})}
    return None
