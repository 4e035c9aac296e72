"""The Redis state store: every read and write of taskloom's durable state.

The store owns the key layout (:class:`~taskloom.engine.keys.Keys`) and the Lua scripts,
registered once per client and called by EVALSHA. Each multi-key change is one script
touching one hash slot; the few follow-ups that cross slots (status index, queues,
wake-ups) are idempotent, so a crash between the two leaves nothing wrong that the next
step does not repair.

:class:`Store` is one object over one client; its parts live in a module each:

- ``_runs``: creating a run, its meta hash, the per-status index (:class:`RunInfo`);
- ``_log``: reading a run's log and the owner's fenced appends (:class:`Event`, :class:`Op`);
- ``_leases``: one owner per run, its epoch, renewals, expiry;
- ``_claims``: claims on running activities, their heartbeats, stopped runs;
- ``_outcomes``: outcomes and outside events recorded exactly once (:class:`Routing`);
- ``_queues``: activity queues, retries, the run queue, wake-ups;
- ``_timers``: durable timers, over their partitions;
- ``_base``: the client, keys and scripts they share, :func:`now_ms`, :func:`ride_out`.
"""

from __future__ import annotations

from taskloom.engine.store._base import now_ms, ride_out
from taskloom.engine.store._claims import Claims
from taskloom.engine.store._leases import Leases
from taskloom.engine.store._log import Event, Op, RunLog
from taskloom.engine.store._outcomes import Outcomes
from taskloom.engine.store._queues import Queues, Routing
from taskloom.engine.store._runs import RunInfo, RunRecords
from taskloom.engine.store._timers import Timers

__all__ = ["Event", "Op", "Routing", "RunInfo", "Store", "now_ms", "ride_out"]


class Store(RunLog, Leases, RunRecords, Claims, Outcomes, Queues, Timers):
    """Durable state on one Redis client (``decode_responses=True``).

    ``Store(client, prefix="tl")``; every method is one of its parts' (see the module's
    docstring), all sharing the client, :attr:`keys`, :attr:`scripts` and :attr:`waitaof`.
    """
