"""One running attempt of an activity: what it knows, its heartbeats, its timeouts.

Activity code reads :func:`activity_info` and reports progress with :func:`heartbeat`::

    @activity(heartbeat_timeout=30)
    async def crawl(urls: list[str]) -> int:
        done = activity_info().heartbeat_details or 0   # resume where the last attempt was
        for i, url in enumerate(urls[done:], start=done):
            await fetch(url)
            heartbeat(i + 1)
        return len(urls)

An attempt ends in one of four ways: it returns, it raises, it runs past a timeout
(start-to-close, or no heartbeat for ``heartbeat_timeout``: an
:class:`~taskloom.ActivityTimeoutError`, retried like any failure), or its run is
cancelled (async activities get :class:`asyncio.CancelledError` at their next
``await``; sync ones at their next :func:`heartbeat`). A sync activity cannot be
interrupted: past its timeout it is abandoned, and whatever it returns later is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from taskloom.engine.definitions import ActivityDef
from taskloom.engine.tasks import Task
from taskloom.errors import ActivityTimeoutError

__all__ = ["ActivityInfo", "Attempt", "activity_info", "heartbeat"]


@dataclass(frozen=True, slots=True)
class ActivityInfo:
    """What a running activity knows about itself."""

    run_id: str
    seq: str
    name: str
    worker_id: str
    attempt: int = 1
    """1 for the first attempt, 2 for the first retry, ..."""
    heartbeat_details: Any = None
    """What the previous attempt last passed to :func:`heartbeat`, to resume from."""

    @property
    def idempotency_key(self) -> str:
        """``run_id/seq``: pass it to external systems so a re-execution is harmless."""
        return f"{self.run_id}/{self.seq}"


class Attempt:
    """The state of one running attempt, shared by the activity and its worker."""

    def __init__(
        self,
        task: Task,
        info: ActivityInfo,
        *,
        now_ms: int,
        host: Any = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.task = task
        self.info = info
        self.host = host  # the worker running it (built-in activities use its resources)
        self.clock = clock or _wall_ms
        """The worker's clock (milliseconds), which heartbeats are stamped with."""
        self.started_ms = now_ms
        self.last_beat_ms = now_ms
        self.details: Any = info.heartbeat_details
        self.dirty = False  # details not yet saved to Redis
        self.stop_reason = ""  # why the worker stopped it: "heartbeat" | "timeout" | "cancelled"
        self._inner: asyncio.Future[Any] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[Any] | None = None

    def beat(self, details: Any, now_ms: int) -> None:
        """Record a heartbeat (from any thread)."""
        self.last_beat_ms = now_ms
        if details is not None:
            self.details, self.dirty = details, True

    def stop(self, reason: str) -> None:
        """Give the attempt up: the worker stops waiting for it at once; an async one is
        cancelled, a sync one is flagged (its next heartbeat raises). On the loop."""
        if self.stop_reason:
            return
        self.stop_reason = reason
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        if self._inner is not None and not self._inner.done():
            self._inner.cancel()
        if self._runner is not None:
            self._runner.cancel()

    @property
    def stopping(self) -> bool:
        """Whether the worker asked this attempt to stop (read from any thread)."""
        return bool(self.stop_reason)

    async def call(self, adef: ActivityDef, *, executor: Executor) -> Any:
        """Run the activity function; raises what it raises, or ActivityTimeoutError,
        or CancelledError when its run was cancelled."""
        task, loop = self.task, asyncio.get_running_loop()
        if adef.timeout is None and adef.heartbeat_timeout is None:
            return await self._call_direct(adef, executor)
        if adef.is_async:
            inner: asyncio.Future[Any] = asyncio.ensure_future(adef.fn(*task.args, **task.kwargs))
        else:
            ctx = contextvars.copy_context()
            inner = loop.run_in_executor(
                executor, lambda: ctx.run(adef.fn, *task.args, **task.kwargs)
            )
        self._inner, self._stopped = inner, loop.create_future()
        try:
            await asyncio.wait({inner, self._stopped}, return_when=FIRST_COMPLETED)
        except asyncio.CancelledError:  # the worker itself is going away
            inner.cancel()
            raise
        if inner.done() and not self.stop_reason:
            return inner.result()
        # Given up: whatever the activity does from now on is never recorded.
        inner.cancel()
        inner.add_done_callback(_consume)
        if self.stop_reason == "heartbeat":
            raise ActivityTimeoutError(
                f"activity {task.name!r} sent no heartbeat for {adef.heartbeat_timeout:g}s: "
                f"given up as hung",
                kind="heartbeat",
            )
        if self.stop_reason == "timeout":
            raise ActivityTimeoutError(
                f"activity {task.name!r} ran past its start-to-close timeout of {adef.timeout:g}s",
                kind="start_to_close",
            )
        raise asyncio.CancelledError(f"activity stopped: {self.stop_reason}")

    async def _call_direct(self, adef: ActivityDef, executor: Executor) -> Any:
        """The common case, no timeouts to watch: run it in this task (no extra task and
        wait per attempt); only a cancelled run stops it, by cancelling this task."""
        task = self.task
        self._runner = runner = asyncio.current_task()
        try:
            if adef.is_async:
                return await adef.fn(*task.args, **task.kwargs)
            ctx = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(
                executor, lambda: ctx.run(adef.fn, *task.args, **task.kwargs)
            )
        except asyncio.CancelledError:
            if not self.stop_reason or runner is None:
                raise  # the worker itself is going away
            runner.uncancel()  # our own stop: the outcome is still to be recorded
            raise asyncio.CancelledError(f"activity stopped: {self.stop_reason}") from None
        finally:
            self._runner = None


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned attempt's outcome, so asyncio does not log it as lost."""
    if not fut.cancelled():
        fut.exception()


_current: contextvars.ContextVar[Attempt] = contextvars.ContextVar("taskloom_attempt")


def _wall_ms() -> int:
    return int(time.time() * 1000)


def current() -> Attempt:
    """The running attempt (only inside an activity)."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("only available inside a running activity") from None


def enter(attempt: Attempt) -> contextvars.Token[Attempt]:
    """Make ``attempt`` the current one; returns the token that :func:`leave` takes."""
    return _current.set(attempt)


def leave(token: contextvars.Token[Attempt]) -> None:
    """Stop making an attempt the current one (``token``: from :func:`enter`)."""
    _current.reset(token)


def activity_info() -> ActivityInfo:
    """The running activity's :class:`ActivityInfo` (only inside an activity)."""
    return current().info


def heartbeat(details: Any = None) -> None:
    """Tell the worker this activity is alive, with optional progress ``details`` (JSON)
    that a later attempt reads as ``activity_info().heartbeat_details``.

    Raises :class:`asyncio.CancelledError` in a sync activity whose run was cancelled
    or which was given up as hung, so it stops at once.
    """
    attempt = current()
    attempt.beat(details, attempt.clock())
    if attempt.stopping:
        raise asyncio.CancelledError(f"activity stopped: {attempt.stop_reason}")
