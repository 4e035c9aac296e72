"""What the fake answers with: the listed steps in order, then the script function."""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from taskloom.agents.errors import UserError

from ._records import Request
from ._steps import Disconnect, ErrorReply, Reply, Step

__all__ = ["Script", "ScriptedSteps", "check_step"]

Script: TypeAlias = Sequence[Step] | Callable[[Request], Step | Awaitable[Step]]
"""Steps answered in order, or a function of the request (sync or async) that
returns the step; it may be called concurrently."""

_STEP_TYPES = (Reply, ErrorReply, Disconnect)


def check_step(step: object, where: str) -> Step:
    """``step`` if it is a step, else a :class:`UserError` naming ``where`` it came from."""
    if not isinstance(step, _STEP_TYPES):
        raise UserError(
            f"{where}: {step!r} is not a step; build steps with reply(), tool_calls(), "
            "error(), rate_limited(), disconnect() ..."
        )
    return step


class ScriptedSteps:
    """The fake's script: steps handed out in the order they were added, each once;
    once they are used up, the script function (if any) answers."""

    def __init__(self, script: Script | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[int, Step]] = deque()
        self._added = 0
        self._fallback: Callable[[Request], Step | Awaitable[Step]] | None = None
        if callable(script):
            self._fallback = script
        elif script is not None:
            self.add(*script)

    def add(self, *steps: Step) -> None:
        """Append ``steps`` (each checked first, so a bad one adds none)."""
        checked = [check_step(s, "FakeLLM.add()") for s in steps]
        with self._lock:
            for step in checked:
                self._queue.append((self._added, step))
                self._added += 1

    def answer_with(self, script: Callable[[Request], Step | Awaitable[Step]]) -> None:
        """Answer with ``script(request)`` once the listed steps are used up."""
        if not callable(script):
            raise UserError("FakeLLM.answer_with() takes a function of the request")
        self._fallback = script

    def unused(self) -> list[tuple[int, Step]]:
        """The listed steps not handed out yet, with their position in the script."""
        with self._lock:
            return list(self._queue)

    async def next_step(self, req: Request) -> Step | str:
        """The step that answers ``req``, or what went wrong."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()[1]
            fallback = self._fallback
        where = f"request {req.index} ({req.method} {req.path}, model {req.model!r})"
        if fallback is None:
            return f"{where}: the script has no step left; add steps or a script function"
        try:
            result = fallback(req)
            step = await result if inspect.isawaitable(result) else result
            return check_step(step, "the script function")
        except Exception as e:
            return f"{where}: the script function failed: {e!r}"
