"""What workflow code sees: :class:`Context`, the deterministic API of a run.

Every call takes the next step number of its *scope*. Branches of :meth:`Context.gather`
get scopes of their own (``"4.0."``, ``"4.1."``, ...), so the numbers a branch's calls
get do not depend on the order in which other branches finish: replay after a crash
assigns exactly the numbers the first execution did, however the activities raced.
"""

from __future__ import annotations

import asyncio
import hashlib
import random as _random
import uuid
from collections.abc import Awaitable, Coroutine, Sequence
from contextvars import ContextVar, copy_context
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from taskloom.engine import serde
from taskloom.engine.definitions import ActivityDef, WorkflowDef
from taskloom.engine.extensions import ExtensionT
from taskloom.engine.human import Decision, Fallback, task_spec
from taskloom.errors import UserError

if TYPE_CHECKING:
    from taskloom.engine.execution import Execution

__all__ = ["Context"]

T = TypeVar("T")


class _Scope:
    __slots__ = ("counter", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counter = 0

    def next(self) -> str:
        seq = f"{self.prefix}{self.counter}"
        self.counter += 1
        return seq


_scope: ContextVar[_Scope] = ContextVar("taskloom_scope")


async def _in_scope(scope: _Scope, aw: Awaitable[T]) -> T:
    _scope.set(scope)
    return await aw


def _branch(loop: asyncio.AbstractEventLoop, prefix: str, aw: Awaitable[T]) -> asyncio.Future[T]:
    """``aw`` as a task of its own, in a step scope of its own: a coroutine (the common
    case, ``ctx.run(...)``) runs in a copy of the context with the scope set, with no
    wrapper coroutine that every resumption of the branch passes through."""
    scope = _Scope(prefix)
    if isinstance(aw, Coroutine):
        context = copy_context()
        context.run(_scope.set, scope)
        return loop.create_task(aw, context=context)
    return asyncio.ensure_future(_in_scope(scope, aw))


class Context:
    """The handle a workflow function receives as its first argument.

    Use it for everything that must survive a crash: activities, timers, signals,
    child workflows, and the current time or randomness (never ``time.time()`` or
    ``random`` directly in workflow code: replay would see different values).
    """

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._ex.run_id

    @property
    def workflow(self) -> str:
        """This run's workflow name."""
        return self._ex.workflow_name

    @property
    def is_replaying(self) -> bool:
        """True while the run re-executes steps whose results are already in its log."""
        return self._ex.replaying

    def extension(self, kind: type[ExtensionT]) -> ExtensionT | None:
        """The :class:`~taskloom.engine.extensions.WorkerExtension` of type ``kind`` on
        the worker running this workflow, or ``None``: how a Context subclass that an
        extension gives workflows finds its extension."""
        return self._ex.host.extension(kind)

    if not TYPE_CHECKING:  # a type checker still reports a misspelt method

        def __getattr__(self, name: str) -> Any:
            """Say where a method of the layers above the engine comes from."""
            if name.startswith("_"):
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            raise AttributeError(
                f"ctx.{name} is not a method of this worker's {type(self).__name__}: methods "
                f"such as ctx.agent come from the extensions of workers made with "
                f"orch.worker(...) (taskloom.engine.extensions)"
            )

    def _next(self) -> str:
        try:
            return _scope.get().next()
        except LookupError:
            raise RuntimeError(
                "Context methods must be called from the workflow's own task; spawn "
                "concurrent work with ctx.gather(...), not asyncio.create_task"
            ) from None

    async def run(self, activity: ActivityDef | str, *args: Any, **kwargs: Any) -> Any:
        """Run an activity (on this or any worker) and return its recorded result.

        Raises :class:`~taskloom.errors.ActivityError` if the activity failed.
        """
        name = activity if isinstance(activity, str) else activity.name
        if isinstance(activity, ActivityDef):
            self._ex.host.registry.add(activity)
        return await self._ex.activity(self._next(), name, list(args), kwargs)

    async def gather(self, *aws: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        """Run awaitables concurrently (fan-out) and return their results in order (fan-in).

        Each awaitable gets its own step scope, so branches may hold several steps.
        """
        base, loop = self._next(), asyncio.get_running_loop()
        tasks = [_branch(loop, f"{base}.{i}.", aw) for i, aw in enumerate(aws)]
        try:
            return list(await asyncio.gather(*tasks, return_exceptions=return_exceptions))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def sleep(self, seconds: float) -> None:
        """A durable timer: survives worker restarts; the run holds no slot meanwhile."""
        await self._ex.sleep(self._next(), seconds)

    async def wait_for_signal(self, name: str) -> Any:
        """Wait for the next signal called ``name`` and return its payload."""
        return await self._ex.wait_for_signal(self._next(), name)

    async def escalate(
        self,
        title: str,
        *,
        context: Any = None,
        decisions: Sequence[str] = ("approve", "reject"),
        assignee: str | None = None,
        group: str | None = None,
        sla: float | None = None,
        fallback: Sequence[Fallback] = (),
    ) -> Decision:
        """Ask a person to decide, and wait (the run holds no worker slot meanwhile).

        ``context`` (JSON) is what they need to decide; ``decisions`` what they may
        answer; ``sla`` seconds until the next ``fallback`` step applies
        (:class:`~taskloom.Reassign`, :class:`~taskloom.Decide`,
        :class:`~taskloom.Expire`). Returns the :class:`~taskloom.Decision`;
        raises :class:`~taskloom.HumanTaskExpiredError` if a fallback gave up.
        """
        spec = task_spec(
            title=title,
            context=context,
            decisions=decisions,
            assignee=assignee,
            group=group,
            sla=sla,
            fallback=fallback,
        )
        serde.dumps(spec, what=f"context of human task {title!r}")
        return await self._ex.escalate(self._next(), spec)

    async def child(self, workflow: WorkflowDef | str, *args: Any) -> Any:
        """Run a sub-workflow as its own run and return its result."""
        name = workflow if isinstance(workflow, str) else workflow.name
        if isinstance(workflow, WorkflowDef):
            self._ex.host.registry.add(workflow)
        return await self._ex.child(self._next(), name, list(args))

    def now(self) -> datetime:
        """The current time, recorded once and replayed as the same value."""
        return datetime.fromtimestamp(self._ex.now(self._next()) / 1000, tz=UTC)

    def record(self, name: str, value: Any) -> Any:
        """Record a value computed outside the log (a flag, a reading) as a step.

        The first execution records ``value`` and returns it; a replay returns the
        recorded value, so code that branches on it takes the same path again. The
        value must be JSON; ``name`` labels the event (``value_recorded``) in the log.
        """
        if not name:
            raise UserError("record() needs a name that says what the value is")
        return self._ex.record(self._next(), name, value)

    def _seed(self) -> bytes:
        return hashlib.sha256(f"{self.run_id}/{self._next()}".encode()).digest()

    def uuid4(self) -> uuid.UUID:
        """A random-looking UUID that is the same on every replay of this run."""
        return uuid.UUID(bytes=self._seed()[:16], version=4)

    def random(self) -> _random.Random:
        """A random generator seeded identically on every replay of this run."""
        return _random.Random(self._seed())
