"""Event-loop lag: how late a worker's event loop wakes, and what held it.

A worker does everything on one event loop: renewing its leases included. Anything
that blocks the loop (a sync call in an ``async`` activity, an import, a big JSON
parse) for longer than the lease hands the worker's runs to another worker, and the
steps in flight are run twice. :class:`LoopLagMonitor` sleeps ``interval`` seconds in a
loop and measures how late it wakes: every measure goes to ``observe`` (the worker's
``taskloom_event_loop_lag_seconds`` histogram), and a lag of ``warn_after`` or more is
logged with what blocked.

What blocked can only be seen while it blocks, so a watchdog thread looks at the
loop's thread: once the loop has been silent for ``warn_after``, it takes the stack of
the loop's thread (``sys._current_frames()``) and the name of the task it was running.
The loop's own warning, when it wakes, carries that sample; a loop still blocked after
``STUCK_FACTOR`` times ``warn_after`` is reported by the watchdog itself.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

__all__ = ["STUCK_FACTOR", "LoopLagMonitor"]

log = logging.getLogger("taskloom.engine.worker")

STUCK_FACTOR = 10.0
"""The watchdog reports a loop blocked this many times ``warn_after``, still blocked."""
_FRAMES = 12  # the innermost frames of a sample: enough to find the caller
_DISPATCH = str(Path("asyncio", "events.py"))  # where asyncio calls each callback


class LoopLagMonitor:
    """Measures the lag of the running event loop until cancelled (see the module).

    Example::

        monitor = LoopLagMonitor(warn_after=0.5, observe=metrics.loop_lag, what="worker w1")
        task = asyncio.create_task(monitor.run())
    """

    def __init__(
        self,
        *,
        warn_after: float,
        interval: float = 0.1,
        observe: Callable[[float], None] | None = None,
        what: str = "worker",
    ) -> None:
        self.warn_after = warn_after
        self.interval = interval
        self.observe = observe
        self.what = what
        self.last_sample: str | None = None
        """What blocked the loop the last time it lagged ``warn_after`` or more."""
        self._beat = time.monotonic()
        self._sample: tuple[float, str] | None = None  # (the beat it follows, the stack)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0

    async def run(self) -> None:
        """Measure until cancelled (a watchdog thread runs meanwhile)."""
        self._loop, self._thread_id = asyncio.get_running_loop(), threading.get_ident()
        self._beat = time.monotonic()
        stop = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(stop,), name="taskloom-loop-watchdog", daemon=True
        )
        watchdog.start()
        try:
            while True:
                before = self._beat
                await asyncio.sleep(self.interval)
                self._beat = now = time.monotonic()
                lag = max(0.0, now - before - self.interval)
                if self.observe is not None:
                    self.observe(lag)
                if lag >= self.warn_after:
                    self._warn(lag, before)
        finally:
            stop.set()

    def _warn(self, lag: float, beat: float) -> None:
        sample = self._sample
        self._sample = None
        where = sample[1] if sample is not None and sample[0] == beat else "(not seen)"
        self.last_sample = where
        log.warning(
            "%s: event loop blocked for %.2fs (warning at %.2fs, half the lease): leases "
            "lapse and steps run twice when it reaches the lease; run blocking work in a "
            "thread (a sync activity, asyncio.to_thread). It was blocked in:\n%s",
            self.what,
            lag,
            self.warn_after,
            where,
        )

    def _watch(self, stop: threading.Event) -> None:
        """The watchdog: sample the loop's thread once it has been silent too long."""
        stuck_reported = 0.0
        while not stop.wait(self.interval):
            beat = self._beat
            silent = time.monotonic() - beat - self.interval
            if silent < self.warn_after:
                continue
            if self._sample is None or self._sample[0] != beat:
                self._sample = (beat, self._where())
            if silent >= STUCK_FACTOR * self.warn_after and stuck_reported != beat:
                stuck_reported = beat
                log.error(
                    "%s: event loop blocked for %.1fs and counting, in:\n%s",
                    self.what,
                    silent,
                    self._sample[1],
                )

    def _where(self) -> str:
        """The task the loop is running and its thread's innermost frames."""
        frame = sys._current_frames().get(self._thread_id)
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        head = f"task {task.get_name()!r}" if task is not None else "no task (a callback)"
        if frame is None:
            return head
        frames = list(traceback.extract_stack(frame))
        # The frames below the loop's dispatch of the callback are the loop's own.
        starts = [i for i, f in enumerate(frames) if f.filename.endswith(_DISPATCH)]
        ours = frames[starts[-1] + 1 :] if starts else frames
        stack = "".join(traceback.format_list(ours[-_FRAMES:]))
        return f"{head}, at:\n{stack.rstrip()}"
