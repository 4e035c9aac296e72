"""Outcomes: what is written on a run by others than its owner, each exactly once.

Any worker records the outcome of an activity attempt (``record.lua``; a failed attempt
through ``attempt.lua``, with its retry), a child run or a person's decision delivers
one, and a caller appends a signal or a cancel request (``external.lua``). The run's
steps hash decides what counts: the first outcome per ``(run, seq)`` wins, a repeat is
dropped and counted. Each reply is a :class:`Routing`, saying whom to wake.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from taskloom.engine import serde
from taskloom.engine.events import External, Outcome
from taskloom.engine.keys import Keys
from taskloom.engine.store._base import group_by_run, raise_first
from taskloom.engine.store._queues import Queues, Routing, parse_routing

__all__ = ["Outcomes"]


class Outcomes(Queues):
    """The store's exactly-once writes from outside a run's owner (a delivered outcome
    wakes the owner, hence :class:`Queues` beneath)."""

    async def record(
        self,
        items: Sequence[tuple[str, str, Outcome | str]],
        worker: str,
        *,
        acks: Sequence[tuple[str, str]] = (),
        attempts: Sequence[int] | None = None,
    ) -> list[Routing]:
        """Record step outcomes ``(run_id, seq, event)`` exactly once each, in one round
        trip; then acknowledge (and delete) the ``(queue, message_id)`` deliveries.

        ``attempts``: the attempt each outcome came from (0: not an activity attempt); an
        outcome of an attempt already recorded as failed is dropped as a duplicate.
        """

        by_run = group_by_run(items)
        by_queue: dict[str, list[str]] = {}
        for queue, msg_id in acks:
            by_queue.setdefault(queue, []).append(msg_id)

        def build(pipe: Any) -> None:
            for run_id, positions in by_run.items():
                keys = [*self.keys.run_keys(run_id), self.keys.attempts(run_id)]
                args: list[Any] = [worker]
                for i in positions:
                    _, seq, event = items[i]
                    text = event if isinstance(event, str) else serde.dumps(event)
                    args += [seq, attempts[i] if attempts else 0, text]
                self.scripts.queue(pipe, "record", keys, args)
            self._sync(pipe)  # the outcomes are on disk before their deliveries go
            for queue, msg_ids in by_queue.items():
                pipe.xack(self.keys.queue(queue), Keys.GROUP, *msg_ids)
                pipe.xdel(self.keys.queue(queue), *msg_ids)

        replies = raise_first(await self.scripts.pipeline(build))
        out = [Routing(status="missing")] * len(items)
        for positions, reply in zip(by_run.values(), replies[: len(by_run)], strict=True):
            for i, one in zip(positions, reply, strict=True):
                out[i] = parse_routing(one)
        dups = sum(1 for r in out if r.status == "dup")
        if dups:
            await self.raw.hincrby(self.keys.stats, "duplicates_dropped", dups)
        return out

    async def fail_attempt(
        self,
        run_id: str,
        seq: str,
        *,
        attempt: int,
        event: str,
        worker: str,
        retry: tuple[str, int, str] | None = None,
        ack: tuple[str, str] | None = None,
    ) -> Routing:
        """Record failed attempt ``attempt`` of step ``seq`` once (``attempt.lua``).

        ``retry``: ``(queue, due_ms, member)``, the next attempt's task, added to the
        queue's retry set first in the same round trip (a crash in between leaves a
        retry that finds the step's outcome already there, never a lost one); it is
        withdrawn if the attempt was not ours to record. ``ack``: ``(queue, message_id)``,
        the delivery this attempt came from, done with either way.
        """
        meta, log, steps = self.keys.run_keys(run_id)

        def build(pipe: Any) -> None:
            if retry is not None:
                pipe.zadd(self.keys.retries(retry[0]), {retry[2]: retry[1]})
            self.scripts.queue(
                pipe,
                "attempt",
                [meta, log, steps, self.keys.attempts(run_id), self.keys.claim(run_id, seq)],
                [seq, attempt, event, worker],
            )
            self._sync(pipe)
            if ack is not None:
                pipe.xack(self.keys.queue(ack[0]), Keys.GROUP, ack[1])
                pipe.xdel(self.keys.queue(ack[0]), ack[1])

        replies = raise_first(await self.scripts.pipeline(build))
        routing = parse_routing(replies[1 if retry is not None else 0])
        if retry is not None and routing.status != "ok":
            await self.raw.zrem(self.keys.retries(retry[0]), retry[2])
        return routing

    async def deliver(self, run_id: str, seq: str, event: Outcome, worker: str) -> Routing:
        """Record an outcome on ``run_id`` step ``seq`` exactly once (from anywhere: a
        child run, a person's decision) and wake whoever holds the run."""
        (routing,) = await self.record([(run_id, seq, event)], worker)
        if routing.status == "ok":
            await self.wake(run_id, routing)
        return routing

    async def external(
        self, run_id: str, event: External, *, request_id: str | None = None
    ) -> Routing:
        """Append an event from outside the run (signal, cancel request) once per
        ``request_id`` (default: a new one, so only a call sent again is dropped)."""
        meta, log, _ = self.keys.run_keys(run_id)
        keys = [meta, log, self.keys.sent(run_id)]
        flag = "cancel" if event["type"] == "cancel_requested" else ""
        args = [serde.dumps(event), flag, request_id or secrets.token_hex(8)]

        def build(pipe: Any) -> None:
            self.scripts.queue(pipe, "external", keys, args)
            self._sync(pipe)

        return parse_routing(raise_first(await self.scripts.pipeline(build))[0])
