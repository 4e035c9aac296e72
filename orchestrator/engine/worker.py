"""The worker: owns runs (under leases), runs activities, and resumes what others dropped.

One worker process serves any number of runs and up to ``concurrency`` activities at a
time. It takes activities from its queue's consumer group, and runs an activity of a
run it owns itself when it has a free slot (recorded exactly as if it had come off the
queue). Every ``lease_ttl / 4`` seconds it renews its leases and activity claims,
resumes runs whose owner's lease expired, reclaims a dead worker's deliveries
(XAUTOCLAIM) and moves due timers to the run queue.

When its slots are busy with short activities it prefetches: it claims up to
``prefetch`` more deliveries and starts each the moment a slot frees, with no round
trip. It prefetches only as many as it expects to start within ``PREFETCH_HORIZON_S``
(from the mean duration of its recent activities), so long activities, such as LLM
calls, stay in the queue for whichever worker frees a slot first.

With ``partitions=N`` (``TASKLOOM_QUEUE_PARTITIONS``) its queue is N streams of their
own hash slots, written by step hash and all read, and the timers it sets go to N timer
sets of their own hash slots, by run, all popped (:mod:`taskloom.engine.partitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from taskloom.engine.activities import ActivityRunner
from taskloom.engine.clock import Clock, SystemClock
from taskloom.engine.context import Context
from taskloom.engine.definitions import ActivityDef, Registry, WorkflowDef
from taskloom.engine.dlq import DeadLetters
from taskloom.engine.execution import Execution
from taskloom.engine.extensions import ExtensionT, WorkerExtension
from taskloom.engine.human import HumanTasks
from taskloom.engine.intake import Intake
from taskloom.engine.keys import consumer_name
from taskloom.engine.looplag import LoopLagMonitor
from taskloom.engine.maintenance import Maintenance
from taskloom.engine.ownership import Ownership
from taskloom.engine.partitions import QueuePartitions, TimerPartitions
from taskloom.engine.payloads import Payloads
from taskloom.engine.retries import DEFAULT_RETRY, RetryPolicy
from taskloom.engine.store import Store, ride_out
from taskloom.engine.tasks import Task
from taskloom.errors import RedisRefusedError, UserError

if TYPE_CHECKING:  # given by the caller that serves them: prometheus_client loads only then
    from taskloom.engine.metrics import Metrics

__all__ = ["Worker", "settle_memory"]

log = logging.getLogger("taskloom.engine.worker")
_REDIS_TROUBLE = (RedisError, RedisRefusedError)
"""What a stopping worker's last writes may meet; it stops either way."""


PREFETCH_HORIZON_S = 0.5
"""A worker prefetches the deliveries it expects to start within this many seconds."""


YOUNG_GC_THRESHOLD = 10_000
"""A worker's youngest GC generation is collected after this many allocations (Python's
default: 700). A fan-out keeps thousands of futures, tasks and events alive for the
length of a batch, and at 700 the young passes kept finding them alive and promoting
them, to be traversed again by the older passes: ~12% of a worker's CPU in W1 (6-7 us
per activity), against ~6% at 10,000. What is garbage still goes within ~10,000
allocations."""


def settle_memory(*, collect: bool = True) -> None:
    """Keep what is loaded by now (modules, registries: it lives as long as the process)
    out of the cyclic GC, whose full passes over it paused the loop ~15 ms each; done
    once per process, by the first worker to start (in-process or ``taskloom worker``).

    ``collect``: collect garbage first (20-30 ms: a full pass over all of it). A fresh
    process that has only imported code (``taskloom worker``) has a few hundred KB of
    garbage at most, and freezes it with the rest rather than wait for that pass.

    It also raises the youngest generation's threshold to :data:`YOUNG_GC_THRESHOLD`
    (unless the process set a higher one, or switched the GC's thresholds off)."""
    if gc.get_freeze_count() == 0:
        if collect:
            gc.collect()
        gc.freeze()
        young, *older = gc.get_threshold()
        if 0 < young < YOUNG_GC_THRESHOLD:
            gc.set_threshold(YOUNG_GC_THRESHOLD, *older)


def _start(resources: Iterable[Any]) -> None:
    """Start the resources that run beside the loops (a notifier, say)."""
    for resource in resources:
        start = getattr(resource, "start", None)
        if callable(start):
            start()


class Worker:
    """Runs workflows and activities against one store until stopped.

    The work is split among collaborators it owns: :attr:`intake` (deliveries read,
    claimed and held), :attr:`activities` (attempts run and recorded), :attr:`ownership`
    (runs held under leases, the heartbeat) and :attr:`maintenance` (the retry and
    maintenance loops). The worker keeps the slots and the lifecycle. A layer above the
    engine installs itself on it as a :class:`WorkerExtension` (``extensions=``,
    :meth:`extend`): the workers ``orch.worker(...)`` makes serve subagents so.

    Example::

        worker = Worker(store, workflows=[report], activities=[fetch], concurrency=8)
        await worker.run()          # until SIGTERM / worker.stop()
    """

    def __init__(
        self,
        store: Store,
        *,
        workflows: Iterable[WorkflowDef] = (),
        activities: Iterable[ActivityDef] = (),
        modules: Iterable[ModuleType | str] = (),
        extensions: Iterable[WorkerExtension] = (),
        concurrency: int = 16,
        queue: str = "default",
        partitions: int = 1,
        lease_ttl: float = 1.0,
        worker_id: str | None = None,
        shutdown_grace: float = 30.0,
        prefetch: int | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        payloads: Payloads | None = None,
        retention: float | None = None,
    ) -> None:
        self.store = store
        self.registry = Registry(workflows=workflows, activities=activities)
        for module in modules:
            self.registry.add_module(module)
        self.concurrency = concurrency
        self.queue = queue
        self.partitions = QueuePartitions(store, queue, partitions)
        """The queue's partitions this worker writes tasks to and reads
        (:mod:`taskloom.engine.partitions`)."""
        self.timer_partitions = TimerPartitions(store, partitions)
        """The timer partitions this worker writes timers to and pops (as many as the
        queue's: one setting)."""
        self.lease_ttl = lease_ttl
        self.claim_ttl_ms = int(lease_ttl * 1000)
        self.worker_id = worker_id or consumer_name()
        self.shutdown_grace = shutdown_grace
        self.runs: dict[str, Execution] = {}
        self._free = concurrency
        self._slot_freed = asyncio.Event()
        self.prefetch = concurrency if prefetch is None else prefetch
        self.retry = retry
        self.clock = clock or SystemClock()
        self.dead_letters = DeadLetters(store)
        self.human_tasks = HumanTasks(store)
        self.payloads = payloads or Payloads(
            store, None, threshold=32 * 1024 * 1024, hard_limit=32 * 1024 * 1024
        )
        self.retention = retention
        self.resources: dict[str, Any] = {}
        """Per-worker objects the layers above the engine put here (the subagents'
        model clients, say); each one's ``aclose()`` runs when the worker stops."""
        self.metrics = metrics
        self._waiting: deque[Task] = deque()  # claimed, waiting for a slot
        self._mean_s: float | None = None  # recent activity duration (EWMA)
        self._stopping = asyncio.Event()
        self._refused: RedisRefusedError | None = None  # why the loops stopped, if Redis said no
        self.intake = Intake(self)
        """Reads deliveries off the queue, claims their steps, holds them for a slot."""
        self.activities = ActivityRunner(self)
        """Runs attempts in the slots and records their outcomes."""
        self.ownership = Ownership(self)
        """Takes, refreshes, evicts and heartbeats the runs held here."""
        self.maintenance = Maintenance(self)
        """The retry and maintenance loops (takeover, timers, sweep, gauges)."""
        self.lag = LoopLagMonitor(
            warn_after=lease_ttl / 2,
            observe=metrics.loop_lag if metrics is not None else None,
            what=f"worker {self.worker_id}",
        )
        """Watches this worker's event loop: a loop blocked for the lease loses it."""
        self.started = asyncio.Event()
        """Set once :meth:`run` serves."""
        self.loaded = asyncio.Event()
        """Set once :meth:`run` serves and every layer given to :meth:`defer` is
        installed: the worker is at rest, its imports done."""
        self.extensions: dict[type[WorkerExtension], WorkerExtension] = {}
        """The layers above the engine installed here (:meth:`extend`), by type."""
        self.context_type: type[Context] = Context
        """What this worker's workflows receive: the engine's :class:`Context`, or the
        subclass an extension gives them."""
        self._deferred: list[Callable[[], Callable[[Worker], object]]] = []
        for extension in extensions:
            self.extend(extension)

    def defer(self, load: Callable[[], Callable[[Worker], object]]) -> None:
        """Load a layer of definitions when the worker starts, off the event loop.

        ``load`` runs in a thread (imports: seconds of work a worker need not wait for)
        and returns the function that installs the layer on this worker, run on the loop.
        The worker serves meanwhile: a workflow or activity it does not know yet waits
        for the layers still loading before it is called unknown
        (:meth:`Registry.settle <taskloom.engine.definitions.Registry.settle>`)."""
        self._deferred.append(load)

    def extend(self, extension: ExtensionT) -> ExtensionT:
        """Install ``extension`` (a layer above the engine, such as the subagents that
        ``orch.worker`` installs) on this worker, once per type; returns it."""
        kind = type(extension)
        if kind in self.extensions:
            raise UserError(f"this worker already has a {kind.__name__}; install it once")
        context = kind.context
        if context is not None:
            if not issubclass(context, self.context_type):
                raise UserError(
                    f"{kind.__name__} gives workflows a {context.__name__}, which does not "
                    f"extend the {self.context_type.__name__} of an extension installed before"
                )
            self.context_type = context
        self.extensions[kind] = extension
        extension.install(self)
        return extension

    def extension(self, kind: type[ExtensionT]) -> ExtensionT | None:
        """The extension of type ``kind`` installed here, or ``None``."""
        found = self.extensions.get(kind)
        return found if isinstance(found, kind) else None

    @property
    def _held_msgs(self) -> set[str]:
        """The deliveries held here (:attr:`Intake.held_msgs`)."""
        return self.intake.held_msgs

    @property
    def _retry_due(self) -> asyncio.Event:
        """Set to move due retries now (:attr:`Maintenance.retry_due`)."""
        return self.maintenance.retry_due

    # -- slots (Host protocol) ----------------------------------------------------------
    def take_slot(self) -> bool:
        """Take a slot if one is free right now (used to run an owned activity here)."""
        if self._free > 0 and not self._stopping.is_set():
            self._free -= 1
            return True
        return False

    def give_slot(self) -> None:
        """Return a slot, or hand it straight to a prefetched activity."""
        if self._waiting and not self._stopping.is_set():
            self.activities.spawn(self._waiting.popleft())
            self._slot_freed.set()  # room to prefetch another
            return
        self._free += 1
        self._slot_freed.set()

    @property
    def prefetched(self) -> int:
        """Activities claimed by this worker and waiting for one of its slots."""
        return len(self._waiting)

    def _prefetch_room(self) -> int:
        """How many more deliveries to claim beyond the free slots."""
        if not self.prefetch or self._mean_s is None:
            return 0
        expected = int(self.concurrency * PREFETCH_HORIZON_S / max(self._mean_s, 1e-4))
        return max(0, min(self.prefetch, expected) - len(self._waiting))

    async def _wait_slot(self) -> None:
        while self._free <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self._free -= 1

    # -- runs and activities (Host protocol) --------------------------------------------
    async def take_run(self, run_id: str) -> None:
        """Look at ``run_id``: refresh it if held here, else try to own and resume it."""
        await self.ownership.take_run(run_id)

    def rolled_back(self, execution: Execution) -> None:
        """Redis lost writes that ``execution`` saw: forget what memory holds and replay
        the run from Redis now (a new epoch fences whatever the old one still sends)."""
        self.ownership.rolled_back(execution)

    def finished(self, execution: Execution, status: str | None = None) -> None:
        """The run ended with ``status`` (``None``: it was dropped here): forget it."""
        self.ownership.finished(execution, status)

    def evict_soon(self, execution: Execution) -> None:
        """Drop a run that waits only on timers or signals from memory, shortly."""
        self.ownership.evict_soon(execution)

    def run_local(
        self,
        run_id: str,
        seq: str,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        claimed: float,
    ) -> None:
        """Run an activity of an owned run here (its slot is already taken; its claim
        was sent at ``claimed``, ``time.monotonic()``)."""
        self.activities.claimed[(run_id, seq)] = claimed
        self.activities.spawn(Task(run_id, seq, name, args, kwargs))

    async def sweep(self) -> tuple[int, int]:
        """Delete runs that ended more than ``retention`` seconds ago, then the blobs no
        run references any more; returns ``(runs, blobs)`` deleted."""
        return await self.maintenance.sweep()

    # -- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to shut down gracefully (as SIGTERM does)."""
        self._stopping.set()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT with ``install_signal_handlers``).

        Raises:
            RedisRefusedError: Redis refused this worker (a password changed, a
                permission taken away): it stops at once, as no retry can help.
        """
        settle_memory()
        await self._ensure_groups()
        await self.partitions.sync()
        await self.timer_partitions.sync()  # before any timer is written to them
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        loops = [
            loop.create_task(self._guard(self.ownership.runq_loop), name="runq"),
            loop.create_task(self._guard(self.intake.queue_loop), name="queue"),
            loop.create_task(self._guard(self.ownership.wake_loop), name="wake"),
            loop.create_task(self._guard(self.maintenance.maintenance_loop), name="maintenance"),
            loop.create_task(self._guard(self.maintenance.retry_loop), name="retries"),
            loop.create_task(self.lag.run(), name="loop-lag"),
        ]
        _start(self.resources.values())
        if self._deferred:
            loops.append(loop.create_task(self.load(), name="load"))
            self.registry.loading = loops[-1]
        else:
            self.loaded.set()
        self.started.set()
        log.info(
            "worker %s serving queue %r, %d slots", self.worker_id, self.queue, self.concurrency
        )
        try:
            await self._stopping.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._shutdown()
        if self._refused is not None:
            raise self._refused

    async def load(self) -> None:
        """Load and install the layers given to :meth:`defer` now (:meth:`run` does it
        as it starts; a caller that looks at the worker without running it, for its
        roles say, awaits this first), then start what they added to
        :attr:`resources`."""
        try:
            while self._deferred:
                load = self._deferred.pop(0)
                before = set(self.resources)
                try:
                    install = await asyncio.to_thread(load)
                    install(self)
                except Exception:  # what needs the layer is then unknown here, and says so
                    log.exception("worker %s: could not load a layer", self.worker_id)
                if self.started.is_set():  # else run() starts them with the rest
                    _start(v for k, v in self.resources.items() if k not in before)
            gc.freeze()  # what was loaded lives as long as the process, as at start
        finally:
            self.registry.loading = None
            if self.started.is_set():
                self.loaded.set()

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run a loop forever, riding out Redis outages with capped backoff; a refusal
        stops the worker (:meth:`run` raises it)."""
        what = f"worker {self.worker_id}: Redis error"
        try:
            while not self._stopping.is_set():
                await ride_out(lambda: self._regrouping(body), what=what, log=log)
        except RedisRefusedError as exc:
            log.error("worker %s: stopping: %s", self.worker_id, exc)
            self._refused = self._refused or exc
            self._stopping.set()

    async def _regrouping(self, body: Callable[[], Awaitable[None]]) -> None:
        """``body()``; when Redis no longer knows the queues' consumer groups (it came back
        without its data: no persistence, or a replica promoted before it had them), make
        them again and say so; without them every read failed with NOGROUP for good."""
        try:
            await body()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning(
                "worker %s: Redis lost the queues' consumer groups (restarted without its "
                "data?); making them again (what was stored before is gone with them)",
                self.worker_id,
            )
            await self._ensure_groups()

    async def _ensure_groups(self) -> None:
        """Make the consumer groups this worker reads (idempotent): the run queue's and
        its activity queue's, every partition of it read here."""
        await self.store.ensure_groups(self.queue)
        await self.partitions.ensure_groups()

    async def _shutdown(self) -> None:
        store = self.store
        with contextlib.suppress(*_REDIS_TROUBLE):  # hand back deliveries not started yet
            prefetched, self._waiting = list(self._waiting), deque()
            inflight = self.activities.inflight
            for t in prefetched:
                inflight.pop((t.run_id, t.seq), None)
            waiting = [m for m in self.intake.held_msgs if m not in inflight.values()]
            if waiting:
                await self.intake.requeue(waiting)
            await self.store.unclaim([(t.run_id, t.seq) for t in prefetched], self.worker_id)
        if self.activities.tasks:
            _, pending = await asyncio.wait(self.activities.tasks, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
        for ex in list(self.runs.values()):
            await ex._drain()
            if ex.task is not None:
                ex.task.cancel()
            with contextlib.suppress(*_REDIS_TROUBLE):
                if (
                    await store.release(
                        ex.run_id, self.worker_id, ex.epoch, last_seen="", status="waiting"
                    )
                    == 1
                ):
                    await store.enqueue_run(ex.run_id, "released")
        self.runs.clear()
        with contextlib.suppress(*_REDIS_TROUBLE):
            await store.raw.delete(store.keys.wake(self.worker_id))
        self.activities.executor.shutdown(wait=False, cancel_futures=True)
        for resource in self.resources.values():
            close = getattr(resource, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self.resources.clear()
        log.info("worker %s stopped", self.worker_id)
