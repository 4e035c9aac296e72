"""How a run ends: its workflow task's outcome recorded as the run's last event.

An :class:`~taskloom.engine.execution.Execution` owns an :class:`Ending`: when the
workflow task is done it turns the outcome into ``run_completed`` / ``run_failed`` /
``run_cancelled`` (after compensating, when a failed or cancelled run has something to
undo), records it, closes the run's open questions, cancels its children and tells its
parent. :func:`deliver` and :func:`child_outcome` record a child's end on its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from taskloom import tracing
from taskloom.engine import serde
from taskloom.engine.events import ChildCompleted, ChildFailed, Outcome, RunEnded
from taskloom.engine.store import Op, Store, now_ms
from taskloom.errors import (
    LeaseLostError,
    RunTimeoutError,
    StoreRolledBackError,
    TaskloomError,
    error_dict,
)

if TYPE_CHECKING:
    from taskloom.engine.execution import Execution

__all__ = ["Ending", "child_outcome", "deliver"]

log = logging.getLogger("taskloom.engine.execution")


class Ending:
    """Records the end of one execution's run, once its workflow task is done."""

    def __init__(self, execution: Execution) -> None:
        self._ex = execution
        self._finishing: asyncio.Task[None] | None = None

    def on_done(self, task: asyncio.Task[Any]) -> None:
        """The workflow task is done: record how, compensating first when needed."""
        ex = self._ex
        for cancel in ex.timer_handles.values():
            cancel()
        ex.timer_handles.clear()
        event: RunEnded
        text: str | None = None  # a completed run's result, encoded once
        if task.cancelled() and ex.timed_out:
            err = error_dict(
                RunTimeoutError(f"run {ex.run_id} ran past its timeout; it was stopped")
            )
            status, event, result = "failed", {"type": "run_failed", "error": err}, err
        elif task.cancelled():
            if not ex.cancel_requested:
                return  # evicted or lease lost: another incarnation goes on
            status, event, result = "cancelled", {"type": "run_cancelled"}, None
        elif (exc := task.exception()) is not None:
            err = error_dict(exc)
            status, event, result = "failed", {"type": "run_failed", "error": err}, err
        else:
            result = task.result()
            try:
                text = serde.dumps(result, what=f"result of workflow {ex.workflow_name!r}")
                status, event = "completed", {"type": "run_completed", "result": result}
            except TaskloomError as ser:
                err = error_dict(ser)
                status, event, result = "failed", {"type": "run_failed", "error": err}, err
        event["ts"] = now_ms()
        loop = asyncio.get_running_loop()
        if status != "completed" and ex.compensation.pending():
            ex.compensating = True
            ex.task = loop.create_task(ex.compensation.run(status, event, result))
            ex.task.add_done_callback(self._on_compensated)
            return
        self._finishing = loop.create_task(self._finish(status, event, result, text))

    def _on_compensated(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            return  # evicted or lease lost: another incarnation compensates
        self._finishing = asyncio.get_running_loop().create_task(self._finish(*task.result()))

    async def _finish(
        self, status: str, event: RunEnded, result: Any, text: str | None = None
    ) -> None:
        """Record the run's end; ``text``: ``result`` as JSON, encoded once already (a
        big result is not encoded twice more: for the status and in the event)."""
        ex = self._ex
        try:
            await ex.writes.drain()
            await ex.host.store.append(
                ex.run_id,
                ex.host.worker_id,
                ex.epoch,
                [
                    Op(
                        event=event,
                        text=None if text is None else serde.dumps_spliced(event, "result", text),
                    )
                ],
                claim_ttl_ms=ex.host.claim_ttl_ms,
                status=status,
                result=result,
                result_text=text,
                at_ms=ex.host.clock.now_ms(),
                known=ex.known(),
            )
            ex.terminal = True
            ex.host.finished(ex, status)
            tracing.end_run(
                ex.trace,
                run_id=ex.run_id,
                workflow=ex.workflow_name,
                created_ms=ex.created_ms,
                status=status,
                error=result if status == "failed" and isinstance(result, dict) else None,
            )
            await self._close_questions(status)
            if status == "cancelled" or ex.timed_out:
                await self._cancel_children()
            if ex.parent is not None:
                await self._deliver_to_parent(status, result)
        except StoreRolledBackError as exc:
            log.warning("run %s: not finishing on a rolled-back log: %s", ex.run_id, exc)
            ex.host.rolled_back(ex)
        except LeaseLostError as exc:
            log.info("run %s: not finishing here: %s", ex.run_id, exc)
        except Exception:
            log.exception("run %s: could not record its end; another worker will", ex.run_id)
        finally:
            ex.host.finished(ex)

    async def _close_questions(self, status: str) -> None:
        """An ended run leaves no question open in the inbox (best effort: a decision on
        one left behind by a crash here is refused, and that closes it)."""
        ex = self._ex
        for seq, step in list(ex.steps.items()):
            if step.kind == "human" and not step.done:
                with contextlib.suppress(TaskloomError, RedisError):
                    await ex.host.human_tasks.withdraw(
                        f"{ex.run_id}/{seq}", reason=f"its run is {status}"
                    )

    async def _deliver_to_parent(self, status: str, result: Any) -> None:
        ex = self._ex
        assert ex.parent is not None
        pid, pseq = ex.parent["run_id"], ex.parent["seq"]
        await deliver(
            ex.host.store,
            pid,
            pseq,
            child_outcome(pseq, ex.workflow_name, status, result),
            ex.host.worker_id,
        )

    async def _cancel_children(self) -> None:
        ex = self._ex
        for step in ex.steps.values():
            if step.kind == "child" and not step.done and step.child_id:
                routing = await ex.host.store.external(
                    step.child_id, {"type": "cancel_requested", "ts": now_ms()}
                )
                if routing.status == "ok":
                    await ex.host.store.wake(step.child_id, routing)


async def deliver(store: Store, run_id: str, seq: str, event: Outcome, worker_id: str) -> None:
    """Record an outcome on ``run_id`` step ``seq`` exactly once and wake its owner."""
    await store.deliver(run_id, seq, event, worker_id)


def child_outcome(
    seq: str, workflow: str, status: str, result: Any
) -> ChildCompleted | ChildFailed:
    """The event that records a finished child run on its parent's step ``seq``."""
    if status == "completed":
        return {
            "type": "child_completed",
            "seq": seq,
            "name": workflow,
            "result": result,
            "ts": now_ms(),
        }
    error = (
        result
        if isinstance(result, dict) and result
        else {"type": "RunCancelledError", "message": f"child run {status}"}
    )
    return {"type": "child_failed", "seq": seq, "name": workflow, "error": error, "ts": now_ms()}
