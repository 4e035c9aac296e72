"""Any Python callable as a verifier."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, overload

import anyio.to_thread

from .base import Check, Tools, Verifier
from .errors import VerifierConfigError
from .verdict import Verdict

__all__ = ["FunctionVerifier", "verifier"]

CheckFunction = Callable[..., Any]
"""``fn(output)`` or ``fn(output, check)``, sync or async."""


class FunctionVerifier(Verifier):
    """A verifier from a function of ``(output)`` or ``(output, check)``, sync or async.

    What it returns decides the verdict:

    - ``True`` or ``None``: pass; ``False``: fail.
    - ``(ok, reason)``: pass or fail, with ``reason`` (the feedback when it fails).
    - a string: non-empty is a failure and the string its feedback; ``""`` passes.
    - a :class:`~taskloom.verifiers.Verdict`: used as it is.

    A sync function runs in a worker thread, so a slow one cannot stall the event loop
    and its timeout holds (a thread that never returns is abandoned, not killed).
    Anything it raises is an ``"error"`` verdict, not a failure.

    Example::

        def totals_add_up(output: dict) -> tuple[bool, str]:
            ok = sum(output["lines"]) == output["total"]
            return ok, "" if ok else "The lines do not add up to the total; recompute it."

        FunctionVerifier(totals_add_up)
    """

    def __init__(
        self, fn: CheckFunction, *, name: str | None = None, timeout: float = 30.0
    ) -> None:
        if not callable(fn):
            raise VerifierConfigError(f"FunctionVerifier takes a callable, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        self.timeout = timeout
        self._takes_check = _takes_two(fn)
        self._async = inspect.iscoroutinefunction(fn)

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Call the function and read its answer (see the class docstring)."""
        args = (check.output, check) if self._takes_check else (check.output,)
        if self._async:
            result = await self.fn(*args)
        else:
            result = await anyio.to_thread.run_sync(partial(self.fn, *args), abandon_on_cancel=True)
            if inspect.isawaitable(result):  # e.g. an object with an async __call__
                result = await result
        return self._verdict(result)

    def _verdict(self, result: Any) -> Verdict:
        if isinstance(result, Verdict):
            return result
        if result is None or result is True:
            return Verdict(verifier=self.name, status="pass")
        if result is False:
            return self._fail(f"the {self.name} check rejected the output")
        if isinstance(result, str):
            return self._fail(result) if result else Verdict(verifier=self.name, status="pass")
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
            ok, reason = result[0], str(result[1] or "")
            if ok:
                return Verdict(
                    verifier=self.name, status="pass", reasons=[reason] if reason else []
                )
            return self._fail(reason or f"the {self.name} check rejected the output")
        raise TypeError(
            f"verifier {self.name!r} returned {result!r}; return a bool, (bool, reason), "
            "a str (failure feedback), None or a Verdict"
        )

    def _fail(self, feedback: str) -> Verdict:
        return Verdict(verifier=self.name, status="fail", reasons=[feedback], feedback=feedback)


@overload
def verifier(fn: CheckFunction, /) -> FunctionVerifier: ...
@overload
def verifier(
    *, name: str | None = None, timeout: float = 30.0
) -> Callable[[CheckFunction], FunctionVerifier]: ...
def verifier(
    fn: CheckFunction | None = None, /, *, name: str | None = None, timeout: float = 30.0
) -> FunctionVerifier | Callable[[CheckFunction], FunctionVerifier]:
    """Make a function a verifier, as a decorator with or without options.

    Example::

        @verifier
        def has_sources(output: dict) -> bool:
            return bool(output.get("sources"))

        @verifier(name="fresh", timeout=5)
        async def cites_this_year(output: str, check: Check) -> str:
            return "" if "2025" in output else "Cite at least one source from 2025."
    """
    if fn is not None:
        return FunctionVerifier(fn, name=name, timeout=timeout)
    return partial(FunctionVerifier, name=name, timeout=timeout)


def _takes_two(fn: CheckFunction) -> bool:
    """Whether ``fn`` accepts ``(output, check)`` positionally."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume (output)
        return False
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2
