"""The sign-in throttle: wrong inbox tokens (and wrong ``/metrics`` bearers) are counted
per client address and for everyone together, in Redis, so every ``taskloom serve``
process behind one address shares the counts::

    throttle = SigninThrottle(store, limits=SigninLimits(), clock=clock)
    attempt = await throttle.take("203.0.113.7")     # SigninThrottledError: 429
    if token_is_right:
        await throttle.refund(attempt)                 # only failures count

Windows are fixed (``now // window``) and read from the injectable clock, like GitHub's
API limits: a client gets ``failures`` wrong tokens per window, then every attempt,
even with the right token, is refused with 429 and ``Retry-After`` until the window
ends; all clients together get ``failures_all``, so a guesser with many addresses is
slowed too (at the price that such a guesser can hold off new sign-ins of others for a
window; sessions already made are not affected). An attempt is counted *before* the
token is compared and given back when it was right, so parallel guesses cannot slip
past the limit. IPv6 clients are counted per /64, the block one subscriber holds.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from taskloom.engine.clock import Clock
from taskloom.engine.store import Store
from taskloom.errors import UserError
from taskloom.settings import Settings

__all__ = ["Attempt", "SigninLimits", "SigninThrottle", "SigninThrottledError", "client_scope"]

log = logging.getLogger("taskloom.web")


class SigninThrottledError(UserError):
    """Too many failed sign-ins from this client (or from everyone) in the current
    window; ``retry_after`` is the number of seconds until it ends (the web inbox
    answers 429 with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, kw_only=True)
class SigninLimits:
    """How many failed sign-ins are allowed per ``window`` seconds: ``failures`` from
    one client address, ``failures_all`` from all of them together."""

    failures: int = 10
    failures_all: int = 100
    window: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SigninLimits:
        """The limits ``settings`` configure (TASKLOOM_SIGNIN_*)."""
        return cls(
            failures=settings.signin_failures,
            failures_all=settings.signin_failures_all,
            window=settings.signin_window,
        )


@dataclass(frozen=True)
class Attempt:
    """One counted attempt, to :meth:`SigninThrottle.refund` if the token was right."""

    client: str
    count: int
    """This client's attempts in the window so far, this one included."""
    keys: tuple[str, str]


def client_scope(host: str | None) -> str:
    """What a client is counted as: its IPv4 address, its IPv6 /64, else the text."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SigninThrottle:
    """Counts sign-in attempts in Redis (keys under ``{signin}``); see the module."""

    def __init__(self, store: Store, *, limits: SigninLimits, clock: Clock) -> None:
        self.store, self.limits, self.clock = store, limits, clock
        self._window_ms = max(1, int(limits.window * 1000))

    async def take(self, client: str | None) -> Attempt:
        """Count an attempt by ``client`` (its address), or raise
        :class:`SigninThrottledError` if it is over a limit this window."""
        scope = client_scope(client)
        now = self.clock.now_ms()
        window = now // self._window_ms
        left_ms = (window + 1) * self._window_ms - now
        keys = self.store.keys
        counters = (keys.signin_attempts(f"c:{scope}", window), keys.signin_attempts("all", window))
        limits = self.limits
        verdict, count = await self.store.scripts.call(
            "signin_take",
            counters,
            [limits.failures, limits.failures_all, left_ms + self._window_ms],
        )
        if verdict == 0:
            return Attempt(scope, int(count), counters)
        wait = max(1, -(-left_ms // 1000))
        if verdict == 1:
            if count == limits.failures + 1:  # once per window, not once per guess
                log.warning(
                    "sign-in throttled: %d failed attempts from %s in %gs; refusing it for %ds",
                    limits.failures,
                    scope,
                    limits.window,
                    wait,
                )
            raise SigninThrottledError(
                f"too many failed sign-in attempts from your address; try again in {_span(wait)}",
                retry_after=wait,
            )
        if count == limits.failures_all + 1:
            log.warning(
                "sign-in throttled for everyone: %d failed attempts from all addresses in %gs "
                "(last from %s); refusing sign-ins for %ds",
                limits.failures_all,
                limits.window,
                scope,
                wait,
            )
        raise SigninThrottledError(
            f"too many failed sign-in attempts on this inbox; try again in {_span(wait)}",
            retry_after=wait,
        )

    async def refund(self, attempt: Attempt) -> None:
        """Give ``attempt`` back: its token was right, so it is no failure."""
        await self.store.scripts.call("signin_refund", attempt.keys, [])


def _span(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{-(-seconds // 60)} minutes"
