"""Every Redis key taskloom uses, built in one place.

The keys of one run share the ``{run_id}`` hash tag, so every script that touches a
run stays inside one hash slot; the scheduler's, the status index's, each queue's and
each worker's keys carry tags of their own. The layout is ready for Redis Cluster.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable

from taskloom.budgetkeys import BudgetKeys

__all__ = [
    "ACTIVE_STATUSES",
    "ENDED_TTL_MS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "Keys",
    "consumer_name",
    "lane",
]

TERMINAL_STATUSES = ("completed", "failed", "cancelled")
ENDED_TTL_MS = 60_000
"""How long a run's ``ended`` stream lives: long enough for every waiter that was
waiting when the run ended to read it (one missed reads the run's meta at its next
check), short enough that it costs nothing with retention or without."""
ACTIVE_STATUSES = ("pending", "running", "waiting")
STATUSES = ACTIVE_STATUSES + TERMINAL_STATUSES


class Keys:
    """Key names under one prefix (``Settings.key_prefix``)."""

    __slots__ = ("budgets", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.budgets = BudgetKeys(prefix)
        """The LLM layer's budget keys of each run, beside the run: deleting it takes them."""

    # -- one run: all share the {run_id} tag -------------------------------------------
    def meta(self, run_id: str) -> str:
        """Hash: workflow, input, status, owner, epoch, lease, result."""
        return f"{self.prefix}:run:{{{run_id}}}:meta"

    def log(self, run_id: str) -> str:
        """Stream: the run's append-only event log, its source of truth."""
        return f"{self.prefix}:run:{{{run_id}}}:log"

    def steps(self, run_id: str) -> str:
        """Hash: step seq -> id of the log entry that recorded its outcome (exactly once)."""
        return f"{self.prefix}:run:{{{run_id}}}:steps"

    def claim(self, run_id: str, seq: str) -> str:
        """String with a TTL: the worker executing this activity right now."""
        return f"{self.prefix}:run:{{{run_id}}}:claim:{seq}"

    def attempts(self, run_id: str) -> str:
        """Hash: step seq -> the highest failed attempt recorded (each recorded once)."""
        return f"{self.prefix}:run:{{{run_id}}}:attempts"

    def beats(self, run_id: str) -> str:
        """Hash: step seq -> the last heartbeat details of its running attempt (JSON)."""
        return f"{self.prefix}:run:{{{run_id}}}:beats"

    def blobs(self, run_id: str) -> str:
        """Set: the blob references the run's log holds (kept while the run is)."""
        return f"{self.prefix}:run:{{{run_id}}}:blobs"

    def last_write(self, run_id: str) -> str:
        """String: the token and reply of the owner's last append (``append.lua``), so a
        call the client library sends again returns its first reply."""
        return f"{self.prefix}:run:{{{run_id}}}:write"

    def sent(self, run_id: str) -> str:
        """Hash: request id -> log entry of each event sent to the run from outside
        (``external.lua``), so one sent twice is appended once."""
        return f"{self.prefix}:run:{{{run_id}}}:sent"

    def live(self, run_id: str, step: str) -> str:
        """Stream with a TTL: the text a streaming subagent at ``step`` sends as it
        arrives (beside the log, which keeps only the final output)."""
        return f"{self.prefix}:run:{{{run_id}}}:live:{step}"

    def ended(self, run_id: str) -> str:
        """Stream with a TTL (``ENDED_TTL_MS``): one entry, the run's terminal status,
        added by ``append.lua`` with the last event; what ``RunHandle.result()`` waits
        on, so a waiter wakes once, not for every event of the log."""
        return f"{self.prefix}:run:{{{run_id}}}:ended"

    def owned(self, run_id: str, seqs: Iterable[str] = ()) -> list[str]:
        """Every key run ``run_id`` owns in its slot, meta first: those of fixed names,
        and the claim and live stream of each step in ``seqs``. Deleting a run deletes
        these (``lua/run_delete.lua``); a key added to a run belongs here."""
        out = [
            self.meta(run_id),
            self.log(run_id),
            self.steps(run_id),
            self.attempts(run_id),
            self.beats(run_id),
            self.blobs(run_id),
            self.last_write(run_id),
            self.sent(run_id),
            self.ended(run_id),
            *self.budgets.all(run_id),
        ]
        for seq in seqs:
            out += (self.claim(run_id, seq), self.live(run_id, seq))
        return out

    def run_keys(self, run_id: str) -> tuple[str, str, str]:
        """``(meta, log, steps)`` of a run, the KEYS most scripts take."""
        return self.meta(run_id), self.log(run_id), self.steps(run_id)

    # -- status index: one tag ----------------------------------------------------------
    def index(self, status: str) -> str:
        """Sorted set: run ids in ``status``, scored by last change (ms)."""
        return f"{self.prefix}:{{idx}}:status:{status}"

    # -- scheduler: one tag -------------------------------------------------------------
    @property
    def runq(self) -> str:
        """Stream + consumer group: runs that need a worker to take them."""
        return f"{self.prefix}:{{sched}}:runq"

    @property
    def timers(self) -> str:
        """Sorted set: ``run_id`` of durable timers, scored by due time (ms); timer
        partition 0 (:meth:`timer_set`)."""
        return f"{self.prefix}:{{sched}}:timers"

    # Timer partition ``i > 0`` has a tag of its own, ``{sched:i}``, so a cluster spreads
    # the timers over its masters (``taskloom.engine.store._timers``).
    def timer_set(self, partition: int) -> str:
        """Sorted set: the durable timers of timer partition ``partition`` (``run_id``
        by due time, ms); partition 0 is :attr:`timers`."""
        if partition == 0:
            return self.timers
        return f"{self.prefix}:{{sched:{partition}}}:timers"

    def timers_firing(self, partition: int) -> str:
        """Sorted set: the timers of partition ``partition > 0`` taken to be fired onto
        the run queue (another slot), by when to fire them again if the taker never
        says it did (it died). Shares the partition's tag."""
        return f"{self.prefix}:{{sched:{partition}}}:firing"

    @property
    def leases(self) -> str:
        """Sorted set: run ids by lease expiry (ms), to find a dead worker's runs."""
        return f"{self.prefix}:{{sched}}:leases"

    # -- activity queues and workers ----------------------------------------------------
    # A queue's keys take its name or, for partition ``i > 0`` of a partitioned queue,
    # the *lane* ``name:i`` (:func:`lane`): each partition's stream and retry set share
    # a tag of their own, so a cluster spreads a queue over its masters.
    def queue(self, name: str) -> str:
        """Stream + consumer group: activity tasks any worker can take (``name``: a
        queue, or a lane of one, :func:`lane`)."""
        return f"{self.prefix}:{{q:{name}}}:tasks"

    @property
    def queue_partitions(self) -> str:
        """Sorted set: queue name -> the most partitions any worker has served it with
        (only grows; workers read every partition below it); and the member ``{timers}``
        (no queue's name), the most timer partitions any worker has written to."""
        return f"{self.prefix}:queue_partitions"

    def retries(self, name: str) -> str:
        """Sorted set: tasks of queue ``name`` waiting to be retried, by due time (ms).
        Shares the queue's tag, so due retries move to the queue in one script."""
        return f"{self.prefix}:{{q:{name}}}:retry"

    def wake(self, worker_id: str) -> str:
        """Stream: run ids whose new events the owning worker should read."""
        return f"{self.prefix}:{{w:{worker_id}}}:wake"

    def dlq(self, name: str) -> str:
        """Sorted set: dead-letter entry ids (``run_id/seq``) of queue ``name``, by
        arrival (ms). In the queue's slot: a redrive moves an entry back atomically."""
        return f"{self.prefix}:{{q:{name}}}:dlq"

    def dlq_entry(self, name: str, entry_id: str) -> str:
        """String: one dead-letter entry of queue ``name`` (JSON)."""
        return f"{self.prefix}:{{q:{name}}}:dlq:{entry_id}"

    def dlq_taken(self, name: str, entry_id: str) -> str:
        """String with a TTL: the token of the call that took entry ``entry_id`` out of
        queue ``name``'s dead letters, and the entry (``dlq_take.lua``: the same call
        sent again returns it)."""
        return f"{self.prefix}:{{q:{name}}}:dlqtaken:{entry_id}"

    # -- the human-task inbox: one tag ----------------------------------------------------
    def inbox_task(self, task_id: str) -> str:
        """String: one human task (JSON), open or closed."""
        return f"{self.prefix}:{{inbox}}:task:{task_id}"

    @property
    def inbox_open(self) -> str:
        """Sorted set: open human task ids by creation (ms)."""
        return f"{self.prefix}:{{inbox}}:open"

    @property
    def inbox_sla(self) -> str:
        """Sorted set: open human task ids by their next SLA point (ms): the "near"
        point (a share of the SLA window), then the deadline."""
        return f"{self.prefix}:{{inbox}}:sla"

    @property
    def inbox_outbox(self) -> str:
        """Stream + consumer group: inbox events (opened, sla_near, ...) for notifiers,
        written by the same script as the change each one reports."""
        return f"{self.prefix}:{{inbox}}:outbox"

    @property
    def inbox_assignees(self) -> str:
        """Hash: assignee (``""``: none) -> how many open tasks they hold."""
        return f"{self.prefix}:{{inbox}}:assignees"

    @property
    def inbox_stats(self) -> str:
        """Hash: decisions (``decided:<decision>``) and the decision latency histogram
        (``lat:<bucket bound, s>``, ``lat_sum_ms``), counted by the script that closes a task."""
        return f"{self.prefix}:{{inbox}}:stats"

    def notify_delivery(self, delivery_id: str) -> str:
        """Hash: one notification to one endpoint (event, attempts, status)."""
        return f"{self.prefix}:{{inbox}}:notify:d:{delivery_id}"

    @property
    def notify_due(self) -> str:
        """Sorted set: pending deliveries by when to try next (ms); one being tried is
        pushed out by its lease, so a dead notifier's delivery comes back."""
        return f"{self.prefix}:{{inbox}}:notify:due"

    @property
    def notify_dead(self) -> str:
        """Sorted set: deliveries given up on, by when (ms), for an operator."""
        return f"{self.prefix}:{{inbox}}:notify:dead"

    # -- magic links of the web inbox: one tag --------------------------------------------
    def link(self, link_id: str) -> str:
        """String with a TTL: one magic link's record (JSON: task, reviewer, expiry)."""
        return f"{self.prefix}:{{links}}:link:{link_id}"

    def link_spent(self, link_id: str) -> str:
        """String with a TTL: the link is being used, was used or was revoked (JSON with
        ``state``: ``deciding`` -> ``used``, or ``revoked``, which nothing undoes)."""
        return f"{self.prefix}:{{links}}:spent:{link_id}"

    def task_links(self, task_id: str) -> str:
        """Set with a TTL: the ids of the magic links made for human task ``task_id``."""
        return f"{self.prefix}:{{links}}:task:{task_id}"

    def task_live_links(self, task_id: str) -> str:
        """Hash with a TTL: reviewer -> the id of their one live link to task ``task_id``."""
        return f"{self.prefix}:{{links}}:live:{task_id}"

    # -- the web inbox's sessions and sign-in throttle -----------------------------------
    def session(self, session_id: str) -> str:
        """String with a TTL: one signed-in web session (JSON: user, token fingerprint).
        Its cookie counts only while this key exists: deleting it signs the session out
        wherever the cookie was copied to."""
        return f"{self.prefix}:session:{session_id}"

    def signin_attempts(self, scope: str, window: int) -> str:
        """Counter with a TTL: sign-in attempts (inbox token, metrics bearer) of ``scope``
        (``c:<client address>``, or ``all``) in fixed window number ``window``. One tag,
        so one script counts a client's and everyone's attempts together."""
        return f"{self.prefix}:{{signin}}:{scope}:{window}"

    # -- chat conversations ------------------------------------------------------------
    def chat(self, conversation_id: str) -> str:
        """List: one conversation of ``taskloom chat`` (JSON turns, oldest first)."""
        return f"{self.prefix}:chat:{conversation_id}"

    @property
    def chats(self) -> str:
        """Sorted set: conversation ids by last use (ms), for ``chat --resume``."""
        return f"{self.prefix}:chats"

    @property
    def queues(self) -> str:
        """Set: the names of the queues workers have served (to list dead letters)."""
        return f"{self.prefix}:queues"

    @property
    def blob_candidates(self) -> str:
        """Hash: blob ref -> when a sweep first found no run referencing it (ms)."""
        return f"{self.prefix}:blobs:unreferenced"

    @property
    def sweep_lock(self) -> str:
        """String with a TTL: the worker deleting expired runs this interval."""
        return f"{self.prefix}:sweep"

    @property
    def stats(self) -> str:
        """Hash: cluster-wide counters (duplicates dropped, ...)."""
        return f"{self.prefix}:stats"

    @property
    def everything(self) -> str:
        """A SCAN pattern matching every key under this prefix, and no other prefix's
        (for dropping a whole namespace, as ``taskloom demo`` does with its own)."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}:*"

    GROUP = "workers"


def lane(queue: str, partition: int) -> str:
    """The name the keys of partition ``partition`` of ``queue`` are built from:
    partition 0 is the queue itself (its keys are those of an unpartitioned queue),
    partition ``i`` is ``queue:i`` (a queue name has no colon: ``Settings.queue``)."""
    return queue if partition == 0 else f"{queue}:{partition}"


def consumer_name() -> str:
    """A name for this process in a stream's consumer group (and as a worker's id):
    host, pid and a random suffix, unique even across restarts with the same pid."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
