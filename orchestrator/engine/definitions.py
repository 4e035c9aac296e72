"""``@workflow`` and ``@activity``: named definitions, collected into a :class:`Registry`.

Decorating registers nothing globally: a definition is a value that a worker is given
(``Worker(workflows=[...], activities=[...])``) or finds in the modules it imports, so
two workers in one process can serve different code and tests never share state.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, overload

from taskloom.engine.retries import RetryPolicy
from taskloom.errors import UnknownActivityError, UnknownWorkflowError, UserError

__all__ = ["ActivityDef", "Registry", "WorkflowDef", "activity", "workflow"]


@dataclass(frozen=True)
class ActivityDef:
    """A function that does real work (an LLM call, an API request), run by any worker."""

    name: str
    fn: Callable[..., Any]
    is_async: bool = field(default=False)
    retry: RetryPolicy | None = None
    """Its retry policy; ``None``: the worker's default."""
    timeout: float | None = None
    """Start-to-close: seconds one attempt may run."""
    schedule_to_start: float | None = None
    """Seconds a queued attempt may wait for a worker before it fails (not retried)."""
    heartbeat_timeout: float | None = None
    """Seconds without a :func:`~taskloom.heartbeat` after which an attempt is hung."""
    compensate: ActivityDef | None = None
    """Undoes this activity when its run fails or is cancelled: called with this
    activity's result, then its arguments."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (outside any workflow), e.g. in a unit test."""
        return self.fn(*args, **kwargs)


@dataclass(frozen=True)
class WorkflowDef:
    """An ``async def fn(ctx, *args)`` whose steps are recorded and replayed."""

    name: str
    fn: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (needs a :class:`~taskloom.Context` first)."""
        return self.fn(*args, **kwargs)


def _name_of(fn: Callable[..., Any], name: str | None) -> str:
    return name or getattr(fn, "__qualname__", None) or fn.__name__


@overload
def activity(fn: Callable[..., Any], /) -> ActivityDef: ...
@overload
def activity(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    schedule_to_start: float | None = None,
    heartbeat_timeout: float | None = None,
    compensate: ActivityDef | None = None,
) -> Callable[[Callable[..., Any]], ActivityDef]: ...
def activity(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    schedule_to_start: float | None = None,
    heartbeat_timeout: float | None = None,
    compensate: ActivityDef | None = None,
) -> ActivityDef | Callable[[Callable[..., Any]], ActivityDef]:
    """Declare an activity; sync functions run in a thread, async ones on the loop.

    Example::

        @activity
        async def fetch(url: str) -> str: ...

        @activity(name="billing.refund")
        def refund(charge: dict, order_id: str) -> None: ...

        @activity(name="billing.charge", retry=RetryPolicy(max_attempts=5),
                  timeout=30, heartbeat_timeout=10, compensate=refund)
        def charge(order_id: str) -> dict: ...
    """
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise UserError(f"retry= takes a RetryPolicy, not {type(retry).__name__}")
    if compensate is not None and not isinstance(compensate, ActivityDef):
        raise UserError("compensate= takes an @activity, declared before this one")
    for option, value in (
        ("timeout", timeout),
        ("schedule_to_start", schedule_to_start),
        ("heartbeat_timeout", heartbeat_timeout),
    ):
        if value is not None and not value > 0:
            raise UserError(f"{option}= must be a positive number of seconds (got {value!r})")

    def wrap(f: Callable[..., Any]) -> ActivityDef:
        if isinstance(f, ActivityDef | WorkflowDef):
            raise UserError(f"{f.name!r} is already decorated; apply @activity once")
        return ActivityDef(
            name=_name_of(f, name),
            fn=f,
            is_async=inspect.iscoroutinefunction(f),
            retry=retry,
            timeout=timeout,
            schedule_to_start=schedule_to_start,
            heartbeat_timeout=heartbeat_timeout,
            compensate=compensate,
        )

    return wrap(fn) if fn is not None else wrap


@overload
def workflow(fn: Callable[..., Any], /) -> WorkflowDef: ...
@overload
def workflow(*, name: str | None = None) -> Callable[[Callable[..., Any]], WorkflowDef]: ...
def workflow(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None
) -> WorkflowDef | Callable[[Callable[..., Any]], WorkflowDef]:
    """Declare a workflow: ``async def fn(ctx: Context, *args)``.

    Example::

        @workflow
        async def report(ctx: Context, topic: str) -> str:
            parts = await ctx.gather(*(ctx.run(write, topic, i) for i in range(3)))
            return "\\n".join(parts)
    """

    def wrap(f: Callable[..., Any]) -> WorkflowDef:
        if not inspect.iscoroutinefunction(f):
            raise UserError(
                f"@workflow needs an `async def` function; {_name_of(f, name)!r} is not"
            )
        return WorkflowDef(name=_name_of(f, name), fn=f)

    return wrap(fn) if fn is not None else wrap


class Registry:
    """The workflows and activities one worker (or client) knows by name."""

    def __init__(
        self, *, workflows: Iterable[WorkflowDef] = (), activities: Iterable[ActivityDef] = ()
    ) -> None:
        self._workflows: dict[str, WorkflowDef] = {}
        self._activities: dict[str, ActivityDef] = {}
        self.modules: list[ModuleType] = []
        """The modules :meth:`add_module` imported, in order: worker extensions read
        their own specs there (the subagents' agents)."""
        self.loading: asyncio.Future[None] | None = None
        """Set while definitions are still being loaded off the event loop
        (:meth:`Worker.defer <taskloom.engine.worker.Worker.defer>`): a name not known
        yet may be among them (:meth:`settle`)."""
        for w in workflows:
            self.add(w)
        for a in activities:
            self.add(a)

    def add(self, definition: WorkflowDef | ActivityDef) -> None:
        """Register one definition; a different one under a taken name is an error."""
        table: dict[str, Any] = (
            self._workflows if isinstance(definition, WorkflowDef) else self._activities
        )
        known = table.get(definition.name)
        if known is not None and known.fn is not definition.fn:
            raise UserError(
                f"two different definitions are named {definition.name!r}; give one of them "
                f"an explicit name=..."
            )
        table[definition.name] = definition
        if isinstance(definition, ActivityDef) and definition.compensate is not None:
            self.add(definition.compensate)  # whoever may run it may have to undo it

    def add_module(self, module: ModuleType | str) -> None:
        """Register every workflow and activity defined at the top level of ``module``
        (and keep it in :attr:`modules`)."""
        if isinstance(module, str):
            try:
                module = importlib.import_module(module)
            except ImportError as exc:
                raise UserError(
                    f"cannot import {module!r} ({exc}); pass a dotted module name that is "
                    f"importable from the current directory or PYTHONPATH"
                ) from exc
        for value in vars(module).values():
            if isinstance(value, WorkflowDef | ActivityDef):
                self.add(value)
        self.modules.append(module)

    async def settle(self, name: str) -> None:
        """If ``name`` is not known and definitions are still loading, wait until they
        are loaded (then :meth:`workflow` / :meth:`activity` find it, or say it is
        unknown); at once otherwise."""
        loading = self.loading
        if loading is not None and name not in self._workflows and name not in self._activities:
            await asyncio.shield(loading)

    def workflow(self, name: str) -> WorkflowDef:
        """The workflow called ``name``."""
        try:
            return self._workflows[name]
        except KeyError:
            raise UnknownWorkflowError(
                f"workflow {name!r} is not registered with this worker (known: "
                f"{sorted(self._workflows) or 'none'}); pass it in workflows=[...] or start "
                f"the worker with --import <module defining it>"
            ) from None

    def find_activity(self, name: str) -> ActivityDef | None:
        """The activity called ``name``, or ``None``."""
        return self._activities.get(name)

    def activity(self, name: str) -> ActivityDef:
        """The activity called ``name``."""
        try:
            return self._activities[name]
        except KeyError:
            raise UnknownActivityError(
                f"activity {name!r} is not registered with this worker (known: "
                f"{sorted(self._activities) or 'none'}); pass it in activities=[...] or "
                f"start the worker with --import <module defining it>"
            ) from None

    @property
    def workflow_names(self) -> list[str]:
        """Registered workflow names."""
        return sorted(self._workflows)

    @property
    def activity_names(self) -> list[str]:
        """Registered activity names."""
        return sorted(self._activities)
