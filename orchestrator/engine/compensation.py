"""Compensation: a failed or cancelled run undoes what succeeded, newest first.

An :class:`~taskloom.engine.execution.Execution` owns a :class:`Compensation`; its run
ending (:mod:`taskloom.engine.ending`) starts it when a completed activity names the
activity that undoes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskloom.engine.context import _scope
from taskloom.engine.events import RunEnded
from taskloom.errors import ActivityError

if TYPE_CHECKING:
    from taskloom.engine.execution import Execution

__all__ = ["Compensation"]


class Compensation:
    """Runs the compensations of one execution's completed activities in reverse order."""

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    def pending(self) -> bool:
        """Whether a completed activity has a compensation to run."""
        ex = self._ex
        return any(ex.steps[s].compensate for s in ex.completed)

    async def run(self, status: str, event: RunEnded, result: Any) -> tuple[str, RunEnded, Any]:
        """Undo what succeeded, newest first, each compensation a recorded step of its
        own: after a crash, replay reaches here again and skips the ones already done."""
        ex = self._ex
        _scope.set(ex._root)
        report = []
        for seq in reversed(ex.completed):
            step = ex.steps[seq]
            if not step.compensate:
                continue
            entry: dict[str, Any] = {"seq": seq, "activity": step.name, "by": step.compensate}
            try:
                args = [step.value, *step.args]
                await ex.activity(f"undo.{seq}", step.compensate, args, step.kwargs)
                entry["ok"] = True
            except ActivityError as exc:  # it stays on record; the others still run
                entry |= {"ok": False, "error": str(exc)}
            report.append(entry)
        event["compensations"] = report
        return status, event, result
