"""Scheduling an activity or a child run: its arguments packed as its task carries them,
and the step's write buffered with the task it queues or the slot it runs in here.

An :class:`~taskloom.engine.execution.Execution` owns a :class:`Dispatcher`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskloom.engine import serde
from taskloom.engine.events import ActivityScheduled
from taskloom.engine.store import Op, now_ms
from taskloom.engine.tasks import task_fields

if TYPE_CHECKING:
    from taskloom.engine.execution import Execution
    from taskloom.engine.history import _Step

__all__ = ["Dispatcher"]


class Dispatcher:
    """Schedules one execution's activities (here or on the queue) and packs big inputs."""

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    async def task_args(
        self, name: str, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any], tuple[str, str]]:
        """An activity's arguments as its task carries them, and their JSON: stored in
        the blob store when they are big."""
        ex = self._ex
        args_json = serde.dumps(args, what=f"arguments of activity {name!r}")
        kwargs_json = serde.dumps(kwargs, what=f"keyword arguments of activity {name!r}")
        if len(args_json) + len(kwargs_json) > ex.host.payloads.threshold:
            pack, what = ex.host.payloads.pack, f"the arguments of activity {name!r}"
            args = await pack(ex.run_id, args, what=what)
            kwargs = await pack(ex.run_id, kwargs, what=what)
            args_json, kwargs_json = serde.dumps(args), serde.dumps(kwargs)
        return args, kwargs, (args_json, kwargs_json)

    def dispatch(
        self,
        seq: str,
        step: _Step,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        new: bool,
        json: tuple[str, str] | None = None,
    ) -> None:
        """Buffer the scheduling of activity step ``seq``: run here when a slot is free
        and the step is new, else queued."""
        ex = self._ex
        if json is None:
            json = (serde.dumps(args), serde.dumps(kwargs))
        args_json, kwargs_json = json
        # A re-dispatch after a takeover goes through the queue: its old runner's claim may
        # still be live, and a queued task is looked at again until that claim lapses.
        local = new and ex.host.take_slot()
        step.dispatch, step.dispatched_here = ("local" if local else "queue"), True
        event: ActivityScheduled = {
            "type": "activity_scheduled",
            "seq": seq,
            "name": step.name,
            "dispatch": step.dispatch,
            "ts": now_ms(),
        }
        if new:
            event["args"], event["kwargs"] = args, kwargs
            adef = ex.host.registry.find_activity(step.name)
            if adef is not None and adef.compensate is not None:
                event["compensate"] = step.compensate = adef.compensate.name
                step.args, step.kwargs = args, kwargs
        b = ex.writes.batch
        b.ops.append(Op(event=event, mode="sched", seq=seq, claim=local))
        if local:
            b.local[seq] = (step.name, args, kwargs)
        else:
            b.tasks.append(
                task_fields(
                    run_id=ex.run_id,
                    seq=seq,
                    name=step.name,
                    args_json=args_json,
                    kwargs_json=kwargs_json,
                )
            )
        ex.writes.queue_flush()

    async def child_input(self, child_id: str, workflow: str, args: list[Any]) -> str:
        """A child run's input as its run keeps it: a big one by reference (the same
        reference every time, so a takeover creates the same run)."""
        ex = self._ex
        value = {"args": args, "kwargs": {}}
        text = serde.dumps(value, what=f"input of child workflow {workflow!r}")
        if len(text) > ex.host.payloads.threshold:
            what = f"the input of child workflow {workflow!r}"
            text = serde.dumps(await ex.host.payloads.pack(child_id, value, what=what))
        return text
