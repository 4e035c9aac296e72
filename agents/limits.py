"""Shared rate limits per (provider, model): requests and tokens per minute, in Redis.

Every process that calls a model asks the same Redis before sending, so all workers on
all machines stay under the provider's limits together::

    limiter = RateLimiter(client, model="openai:gpt-4.1-mini", prefix="tl",
                          limits=RateLimits(rpm=500, tpm=200_000))
    reservation = await limiter.reserve(estimated_tokens=prompt_tokens + max_tokens)
    response = await provider.complete(request)           # may raise on a 429
    await limiter.settle(reservation, response.usage.total)
    await limiter.observe_headers(response.headers)       # x-ratelimit-*, retry-after

**Algorithm: a sliding-window log.** Each admitted call is an entry (its admission
time and its tokens) in a sorted set; a call is admitted when the entries of the last 60
seconds plus this call stay within both limits. That makes the promise exact: *no
60-second window ever holds more requests than ``rpm`` or more tokens than ``tpm``*,
counting each call at its admission time with the tokens it finally settled. The
alternatives break that promise or the refunds: a token bucket (or GCRA with a burst)
admits a full burst just before a window boundary and refills during it, so a 60-s
window can see up to twice the limit; a sliding-window *counter* (two fixed windows,
weighted) only approximates; and neither can take back tokens a call did not use. The
log costs one small entry per call in the window, at most ``rpm`` of them, trimmed as
they expire; a refused call is told exactly when the oldest entries that block it leave
the window, so it sleeps that long (no polling) and asks once more.

The promise holds for what callers reserve and settle. A settle *above* the estimate
(an under-estimate) is counted in full, so later calls wait longer, but those tokens
were already sent; reserve the most a call can use (prompt + ``max_tokens``) to keep
the window exact, as providers do themselves. A settle after the call's entry has left
the window changes nothing: its minute is over.

**Time.** By default the scripts read the Redis server's clock, so machines whose clocks
disagree still share one timeline. Tests inject ``now`` (seconds, a callable) and
``sleep``; the script then uses the time passed in ARGV. Admission times never go
backwards (a caller whose clock lags uses the latest time seen), which the window
arithmetic relies on.

**Without limits.** A model with neither ``rpm`` nor ``tpm`` (and the server's clock)
has no window to count: a call is admitted by one ``EXISTS`` of the block key, and only
while a block is on does it run the admission script, which says how long to wait. Its
reservation's ``at`` is then this machine's clock.

**Blocking.** A 429 with ``Retry-After``, or ``x-ratelimit-remaining-*`` at zero, blocks
the limiter *for every process* until then (:meth:`RateLimiter.penalize`,
:meth:`RateLimiter.observe_headers`). The limiter blocks its own process at once,
before Redis hears of it: its calls do not slip through while the block is on its way
(or while its script is being loaded after a Redis restart, ``NOSCRIPT``).

Keys (one hash tag per limiter, so each script stays in one Redis Cluster slot)::

    {prefix}:{rl:PROVIDER:MODEL}:log     zset  reservation id -> admission time (ms)
    {prefix}:{rl:PROVIDER:MODEL}:tokens  hash  reservation id -> tokens
    {prefix}:{rl:PROVIDER:MODEL}:state   hash  sum (tokens in the window), last (ms)
    {prefix}:{rl:PROVIDER:MODEL}:block   str   blocked until (ms), expires on its own

The first three expire after two idle windows.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from taskloom.agents.errors import (
    ConfigurationError,
    RateLimitDeferredError,
    RequestExceedsRateLimitError,
    UserError,
)
from taskloom.luascripts import LuaScripts

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "RateLimiter",
    "RateLimiterKeys",
    "RateLimiters",
    "RateLimits",
    "RateReservation",
    "block_from_headers",
    "limits_for",
]

WINDOW_SECONDS = 60.0
_SCRIPTS = ("rl_reserve", "rl_settle", "rl_penalize")
_REASONS = {1: "blocked", 2: "requests per minute", 3: "tokens per minute"}


@dataclass(frozen=True)
class RateLimits:
    """Requests and tokens per minute for one model; ``None`` means unlimited.

    Example: ``RateLimits(rpm=500, tpm=200_000)``.
    """

    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigurationError(
                    f"RateLimits.{name} must be a whole number >= 1, or None for no limit "
                    f"(got {value!r})"
                )


DEFAULT_RATE_LIMITS: Mapping[str, RateLimits] = {
    # Usage tier 1 as published by OpenAI and Anthropic (the lowest paid tier), so a new
    # account is not flooded with 429s; set your own tier's limits per model.
    "openai:*": RateLimits(rpm=500, tpm=30_000),
    "anthropic:*": RateLimits(rpm=50, tpm=30_000),
    # Anything else (a local or OpenAI-compatible server, the fake): no limit.
    "*": RateLimits(),
}
"""Built-in limits by ``provider:*`` pattern; ``limits_for`` merges yours over them."""


def limits_for(model: str, table: Mapping[str, RateLimits] | None = None) -> RateLimits:
    """The limits for ``model`` (``provider:model``): an exact entry of ``table`` wins,
    then ``provider:*``, then ``*``; ``table`` is merged over :data:`DEFAULT_RATE_LIMITS`.

    Example::

        limits_for("openai:gpt-4o", {"openai:gpt-4o": RateLimits(rpm=5000, tpm=800_000)})
    """
    merged = {**DEFAULT_RATE_LIMITS, **(table or {})}
    provider = model.split(":", 1)[0] if ":" in model else None
    for key in (model, f"{provider}:*" if provider else None, "*"):
        if key is not None and key in merged:
            found = merged[key]
            if not isinstance(found, RateLimits):
                raise ConfigurationError(
                    f"rate limits for {key!r} must be a RateLimits(rpm=..., tpm=...), "
                    f"not {type(found).__name__}"
                )
            return found
    return RateLimits()


@dataclass(frozen=True)
class RateReservation:
    """A call admitted by a :class:`RateLimiter`; settle it once the call is done."""

    id: str
    model: str
    tokens: int
    """The tokens reserved (the estimate)."""
    at: float
    """Admission time, in seconds on the limiter's clock (the server's by default)."""
    waited: float
    """Seconds spent waiting for the limits to admit the call."""


class RateLimiterKeys:
    """Key names of one limiter; all share the ``{rl:PROVIDER:MODEL}`` hash tag."""

    __slots__ = ("base",)

    def __init__(self, prefix: str, model: str) -> None:
        if not model or any(c in model for c in "{}"):
            raise UserError(
                f"model name {model!r} cannot name a rate limiter: it must be non-empty "
                "and free of '{' and '}' (use 'provider:model', e.g. 'openai:gpt-4o')"
            )
        self.base = f"{prefix}:{{rl:{model}}}"

    @property
    def log(self) -> str:
        """Sorted set: reservation id -> admission time (ms)."""
        return f"{self.base}:log"

    @property
    def tokens(self) -> str:
        """Hash: reservation id -> tokens counted for it."""
        return f"{self.base}:tokens"

    @property
    def state(self) -> str:
        """Hash: ``sum`` of the tokens in the window, ``last`` admission clock (ms)."""
        return f"{self.base}:state"

    @property
    def block(self) -> str:
        """String: the time (ms) until which nobody may call this model."""
        return f"{self.base}:block"


class RateLimiter:
    """Requests- and tokens-per-minute limits of one model, shared through Redis.

    ``client`` is a redis-py asyncio client. ``limits`` default to
    :func:`limits_for` the model. ``now`` returns seconds (default: the Redis server's
    clock is used); ``sleep`` waits seconds on that same clock (default
    :func:`asyncio.sleep`). Two limiters on the same Redis, prefix and model share
    their limits, in one process or many.
    """

    def __init__(
        self,
        client: Any,
        *,
        model: str,
        prefix: str,
        limits: RateLimits | None = None,
        now: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        window: float = WINDOW_SECONDS,
        scripts: LuaScripts | None = None,
    ) -> None:
        if window <= 0:
            raise UserError(f"window must be > 0 seconds (got {window!r})")
        self.model = model
        self.limits = limits if limits is not None else limits_for(model)
        self.keys = RateLimiterKeys(prefix, model)
        self._client = client
        self._scripts = scripts or LuaScripts(client, package="taskloom.agents", names=_SCRIPTS)
        self._now = now
        self._sleep = sleep
        self._window_ms = int(window * 1000)
        self._blocked_until = 0.0  # on _local_clock(): this process's copy of the block

    def __repr__(self) -> str:
        return f"RateLimiter({self.model!r}, rpm={self.limits.rpm}, tpm={self.limits.tpm})"

    @property
    def light(self) -> bool:
        """Whether only a provider's block can hold a call back (no rpm, no tpm, the
        server's clock): admitting it is then one ``EXISTS`` of the block key (a block
        key outlives its block by a second; while it is there, the admission script
        says exactly how long to wait)."""
        return self.limits.rpm is None and self.limits.tpm is None and self._now is None

    def check(self, estimated_tokens: int) -> int:
        """``estimated_tokens`` checked as :meth:`reserve` checks it."""
        tokens = _whole(estimated_tokens, "estimated_tokens")
        tpm = self.limits.tpm
        if tpm is not None and tokens > tpm:
            raise RequestExceedsRateLimitError(
                f"{self.model}: a call estimated at {tokens:,} tokens can never fit its "
                f"tokens-per-minute limit of {tpm:,}; lower the call's max tokens or "
                f"split its input, or raise the limit (RateLimits(tpm=...))"
            )
        return tokens

    def blocked_here(self) -> bool:
        """Whether this process knows of a block still on (maybe not yet in Redis)."""
        return self._blocked_until > self._local_clock()

    def block_check(self) -> tuple[str, str] | None:
        """For a :attr:`light` limiter, the command whose reply :meth:`admitted` reads in
        place of :meth:`queue`'s (``EXISTS`` of the block key, the same for every call,
        so the calls of a tick can share it); else ``None``."""
        return ("EXISTS", self.keys.block) if self.light else None

    def queue(self, pipe: Any, tokens: int, rid: str) -> None:
        """Add one admission attempt of a call of ``tokens`` (checked, see :meth:`check`)
        under id ``rid`` to the pipeline ``pipe``; read its reply with :meth:`admitted`."""
        if self.light:
            pipe.exists(self.keys.block)
        else:
            self._scripts.queue(
                pipe, "rl_reserve", keys=self._reserve_keys(), args=self._reserve_args(tokens, rid)
            )

    def admitted(self, reply: Any, tokens: int, rid: str) -> RateReservation | None:
        """The reservation a reply to :meth:`queue` made, or ``None`` if the call must
        wait (then :meth:`reserve` waits as long as it must)."""
        if self.light:
            if int(reply) == 0:
                return RateReservation(rid, self.model, tokens, time.time(), 0.0)
            return None
        if int(reply[0]) == 1:
            return RateReservation(rid, self.model, tokens, int(reply[1]) / 1000, 0.0)
        return None

    async def reserve(
        self, estimated_tokens: int = 0, *, max_wait: float | None = None
    ) -> RateReservation:
        """Wait until both limits admit a call of ``estimated_tokens`` and reserve it.

        With ``max_wait`` (seconds), a wait longer than that raises
        :class:`~taskloom.agents.errors.RateLimitDeferredError` (retryable, with ``retry_after``)
        instead, so an activity can give its worker slot back and retry later.
        An estimate larger than the tokens-per-minute limit raises
        :class:`~taskloom.agents.errors.RequestExceedsRateLimitError`: no minute could admit it.
        """
        tokens = self.check(estimated_tokens)
        rid = uuid.uuid4().hex
        waited = 0.0
        light = self.light
        while True:
            blocked = self._blocked_until - self._local_clock()
            if blocked > 0:  # a block this process knows of, maybe not yet in Redis
                if max_wait is not None and waited + blocked > max_wait:
                    raise RateLimitDeferredError(
                        f"{self.model}: blocked by the provider for {blocked:.3g}s more, past "
                        f"max_wait={max_wait:g}s; retry then",
                        retry_after=blocked,
                    )
                await self._sleep(blocked)
                waited += blocked
                continue
            if light:  # no block key: admitted; else the script says how long to wait
                if not await self._client.exists(self.keys.block):
                    return RateReservation(rid, self.model, tokens, time.time(), waited)
                light = False
            reply = await self._scripts.call(
                "rl_reserve", keys=self._reserve_keys(), args=self._reserve_args(tokens, rid)
            )
            if int(reply[0]) == 1:
                return RateReservation(rid, self.model, tokens, int(reply[1]) / 1000, waited)
            wait = int(reply[1]) / 1000
            if max_wait is not None and waited + wait > max_wait:
                reason = _REASONS.get(int(reply[2]), "limits")
                raise RateLimitDeferredError(
                    f"{self.model}: the shared rate limit ({reason}) admits this call in "
                    f"{wait:.3g}s, past max_wait={max_wait:g}s; retry then",
                    retry_after=wait,
                )
            await self._sleep(max(wait, 0.001))  # the script always gives wait > 0
            waited += wait
            light = self.light

    def _reserve_keys(self) -> list[str]:
        return [self.keys.log, self.keys.tokens, self.keys.state, self.keys.block]

    def _reserve_args(self, tokens: int, rid: str) -> list[Any]:
        rpm, tpm = self.limits.rpm, self.limits.tpm
        return [
            self._now_arg(),
            self._window_ms,
            -1 if rpm is None else rpm,
            -1 if tpm is None else tpm,
            tokens,
            rid,
            2 * self._window_ms,
        ]

    async def settle(self, reservation: RateReservation, actual_tokens: int) -> None:
        """Count ``actual_tokens`` for a reserved call instead of its estimate: unused
        tokens go back to the window at once, extra ones make later calls wait.
        Settling again with the same number changes nothing."""
        if reservation.model != self.model:
            raise UserError(
                f"reservation for {reservation.model!r} settled on the limiter of "
                f"{self.model!r}; settle it on the limiter that made it"
            )
        if self.limits.tpm is None:
            return  # only a tokens-per-minute window counts tokens: nothing to correct
        keys, args = self._settle_call(reservation, actual_tokens)
        await self._scripts.call("rl_settle", keys=keys, args=args)

    def queue_settle(self, pipe: Any, reservation: RateReservation, actual_tokens: int) -> None:
        """:meth:`settle` added to the pipeline ``pipe`` (nothing without a tpm limit)."""
        if self.limits.tpm is not None:
            keys, args = self._settle_call(reservation, actual_tokens)
            self._scripts.queue(pipe, "rl_settle", keys=keys, args=args)

    def _settle_call(
        self, reservation: RateReservation, actual_tokens: int
    ) -> tuple[list[str], list[Any]]:
        if reservation.model != self.model:
            raise UserError(
                f"reservation for {reservation.model!r} settled on the limiter of "
                f"{self.model!r}; settle it on the limiter that made it"
            )
        keys = [self.keys.log, self.keys.tokens, self.keys.state]
        return keys, [reservation.id, _whole(actual_tokens, "actual_tokens")]

    async def penalize(self, retry_after_s: float) -> float:
        """Block this model for every process for ``retry_after_s`` seconds (a 429's
        Retry-After); a longer block already in place is kept. Returns the seconds the
        limiter stays blocked."""
        if not math.isfinite(retry_after_s) or retry_after_s < 0:
            raise UserError(f"retry_after_s must be a finite number >= 0 (got {retry_after_s!r})")
        # This process stops at once; the others when the script below has run.
        until = self._local_clock() + retry_after_s
        self._blocked_until = max(self._blocked_until, until)
        reply = await self._scripts.call(
            "rl_penalize",
            keys=[self.keys.state, self.keys.block],
            args=[self._now_arg(), math.ceil(retry_after_s * 1000)],
        )
        return int(reply) / 1000

    async def observe_headers(
        self, headers: Mapping[str, str], *, wall_now: float | None = None
    ) -> float | None:
        """Honour a provider's answer: ``retry-after`` / ``retry-after-ms``, and
        ``x-ratelimit-remaining-*`` (or Anthropic's ``anthropic-ratelimit-*``) at zero
        until their reset. Blocks the limiter for everyone and returns the seconds, or
        ``None`` when the headers ask for no wait. See :func:`block_from_headers`."""
        seconds = block_from_headers(headers, wall_now=wall_now)
        if seconds is None or seconds <= 0:
            return None
        return await self.penalize(seconds)

    def _local_clock(self) -> float:
        """Seconds on the injected clock, else this process's monotonic clock."""
        return self._now() if self._now is not None else time.monotonic()

    def _now_arg(self) -> str:
        return "" if self._now is None else str(int(self._now() * 1000))


class RateLimiters:
    """One :class:`RateLimiter` per model on one client, with limits from a table.

    Example::

        limiters = RateLimiters(client, prefix="tl",
                                limits={"openai:gpt-4o": RateLimits(rpm=5000, tpm=800_000)})
        reservation = await limiters.for_model("openai:gpt-4o").reserve(3_000)
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        limits: Mapping[str, RateLimits] | None = None,
        now: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        scripts: LuaScripts | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._table = dict(limits or {})
        for key in self._table:
            limits_for(key, self._table)  # a wrong value fails here, not at the first call
        self._now = now
        self._sleep = sleep
        self._scripts = scripts or LuaScripts(client, package="taskloom.agents", names=_SCRIPTS)
        self._limiters: dict[str, RateLimiter] = {}

    def for_model(self, model: str) -> RateLimiter:
        """The limiter of ``model`` (``provider:model``)."""
        limiter = self._limiters.get(model)
        if limiter is None:
            limiter = RateLimiter(
                self._client,
                model=model,
                prefix=self._prefix,
                limits=limits_for(model, self._table),
                now=self._now,
                sleep=self._sleep,
                scripts=self._scripts,
            )
            self._limiters[model] = limiter
        return limiter


def block_from_headers(
    headers: Mapping[str, str], *, wall_now: float | None = None
) -> float | None:
    """Seconds a provider's response headers ask everyone to wait, or ``None``.

    Reads ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date), OpenAI's
    ``x-ratelimit-remaining-{requests,tokens}`` with ``x-ratelimit-reset-*`` (durations
    like ``6m0s``, ``1.5s``, ``20ms``) and Anthropic's
    ``anthropic-ratelimit-*-remaining`` with ``anthropic-ratelimit-*-reset`` (RFC 3339
    times). A remaining count only blocks at zero. Dates are compared with
    ``wall_now`` (default: :func:`time.time`). The longest wait wins.
    """
    h = {k.lower(): v.strip() for k, v in headers.items()}
    wall = time.time() if wall_now is None else wall_now
    waits: list[float] = []
    if (ms := _number(h.get("retry-after-ms"))) is not None:
        waits.append(ms / 1000)
    elif (value := h.get("retry-after")) is not None:
        seconds = _number(value)
        waits.append(seconds if seconds is not None else _until_date(value, wall))
    for kind in ("requests", "tokens"):
        if _number(h.get(f"x-ratelimit-remaining-{kind}")) == 0:
            waits.append(_duration(h.get(f"x-ratelimit-reset-{kind}", "")))
    for name, value in h.items():
        m = re.fullmatch(r"anthropic-ratelimit-([a-z-]+)-remaining", name)
        if m and _number(value) == 0:
            waits.append(_until_date(h.get(f"anthropic-ratelimit-{m[1]}-reset", ""), wall))
    waits = [w for w in waits if w > 0]
    return max(waits) if waits else None


def _whole(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{name} must be a whole number of tokens >= 0 (got {value!r})")
    return value


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _duration(text: str) -> float:
    """``1h2m3.5s`` / ``6m0s`` / ``20ms`` / ``7`` (seconds) -> seconds; 0 if unreadable."""
    if (plain := _number(text)) is not None:
        return plain
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return 0.0
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _until_date(text: str, wall: float) -> float:
    """Seconds from ``wall`` until an RFC 3339 or HTTP date; 0 if unreadable or past."""
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return 0.0
    if when.tzinfo is None:
        return 0.0
    return max(0.0, when.timestamp() - wall)
