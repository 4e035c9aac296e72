"""Per-run budgets (tokens, USD) in Redis: reserve before a call, settle after.

A call holds its *estimated* tokens and cost against its run's budget before it is
sent; the check and the hold are one Lua script, so any number of concurrent callers,
in any number of processes, can never hold or spend more than the budget together.
When the call returns, :meth:`Budgets.settle` replaces the hold with what it actually
cost; when it fails without spending, :meth:`Budgets.release` gives the hold back::

    budgets = Budgets(client, prefix="tl")
    await budgets.set_limits("run-1", max_tokens=200_000, max_usd="2.50")
    r = await budgets.reserve("run-1", est_tokens=3_000, est_usd=price.cost(...))
    try:
        response = await provider.complete(request)
    except Exception:
        await budgets.release(r)
        raise
    await budgets.settle(r, actual_tokens=..., actual_usd=...)

A reservation that does not fit raises :class:`~taskloom.agents.errors.BudgetExceededError`
(non-retryable), which says the budget, what is spent and held, and what was asked.
A run whose limits were never set is unlimited but still accounted.

A hold whose caller died (between reserve and settle) lapses after ``hold_ttl``
seconds, so a crashed worker cannot freeze a run's budget; settling a lapsed or
released hold still charges what was spent. Amounts of USD are :class:`~decimal.Decimal`
and are kept in Redis as whole nano-dollars (estimates and actual costs rounded up), so
sums stay exact.

Keys (the ``{run_id}`` hash tag puts them in the run's Redis Cluster slot)::

    {prefix}:run:{RUN_ID}:budget          hash  max_tokens, max_nano, spent_tokens,
                                                spent_nano, held_tokens, held_nano;
                                                'r:ID' -> 'h TOKENS NANO' while reservation
                                                ID holds under a limit ('u TOKENS NANO
                                                TTL_MS' without one), then 's' / 'r' / 'x'
                                                / 't' (settled, released, lapsed, taken
                                                over); 'k:KEY' -> the id held under a key
    {prefix}:run:{RUN_ID}:budget:holds    hash  reservation id -> the same states, as
                                                older versions kept them (only read)
    {prefix}:run:{RUN_ID}:budget:expiry   zset  reservation id -> when its 'h' hold lapses;
                                                a settled id stays until that time passes
                                                (the sweeps skip what is not held)

A reservation and its settlement are one hash read and one hash write each: the holds
live in the budget hash itself, and settling leaves the expiry entry to the next sweep.
Under a limit a reservation also reads the server's clock, sweeps lapsed holds and adds
its expiry. Without one its hold ('u') has no expiry yet: setting a limit, or reading
the usage while anything is held, starts the TTL of each such hold then, so a dead
caller's hold lapses late (by up to the time until someone looks), never early.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, TypeAlias

from taskloom.agents.errors import BudgetExceededError, UserError
from taskloom.budgetkeys import BudgetKeys
from taskloom.luascripts import LuaScripts

__all__ = ["BudgetAsk", "BudgetKeys", "BudgetReservation", "BudgetUsage", "Budgets", "Money"]

Money: TypeAlias = Decimal | int | float | str
"""A USD amount as the API takes it; floats are read through ``str`` (``0.1`` is 0.1)."""

_NANO = Decimal(10) ** 9
_MAX_USD = Decimal(1_000_000)  # keeps nano-dollar sums exact in Lua's doubles
_SCRIPTS = ("budget_reserve", "budget_settle", "budget_release", "budget_usage", "budget_limits")


@dataclass(frozen=True)
class BudgetUsage:
    """A run's budget at one moment. ``None`` limits mean unlimited."""

    run_id: str
    max_tokens: int | None
    max_usd: Decimal | None
    spent_tokens: int
    spent_usd: Decimal
    held_tokens: int
    held_usd: Decimal

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens still free to reserve (``None``: no limit)."""
        if self.max_tokens is None:
            return None
        return max(0, self.max_tokens - self.spent_tokens - self.held_tokens)

    @property
    def remaining_usd(self) -> Decimal | None:
        """USD still free to reserve (``None``: no limit)."""
        if self.max_usd is None:
            return None
        return max(Decimal(0), self.max_usd - self.spent_usd - self.held_usd)


@dataclass(frozen=True, kw_only=True)
class BudgetAsk:
    """A checked reservation request (:meth:`Budgets.ask`), not yet sent."""

    run_id: str
    id: str
    tokens: int
    nano: int
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True)
class BudgetReservation:
    """A hold on a run's budget; settle or release it exactly once."""

    id: str
    run_id: str
    tokens: int
    usd: Decimal


class Budgets:
    """The budgets of all runs under one key prefix, on a redis-py asyncio client.

    ``now`` returns seconds and only times hold expiry (default: the Redis server's
    clock); ``hold_ttl`` is how long an unsettled hold lasts, in seconds. ``scripts``:
    the :class:`~taskloom.luascripts.LuaScripts` to run (one shared with a
    :class:`~taskloom.agents.limits.RateLimiters` lets a caller pipeline both).
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        now: Callable[[], float] | None = None,
        hold_ttl: float = 900.0,
        scripts: LuaScripts | None = None,
    ) -> None:
        if hold_ttl <= 0:
            raise UserError(f"hold_ttl must be > 0 seconds (got {hold_ttl!r})")
        self.keys = BudgetKeys(prefix)
        self._scripts = scripts or LuaScripts(client, package="taskloom.agents", names=_SCRIPTS)
        self._now = now
        self._hold_ttl = hold_ttl

    @staticmethod
    def check_limits(*, max_tokens: int | None = None, max_usd: Money | None = None) -> None:
        """Raise the :class:`~taskloom.agents.errors.UserError` :meth:`set_limits` would, before
        anything is written (a run is not created with limits it cannot have)."""
        if max_tokens is not None:
            _tokens(max_tokens, "max_tokens")
        if max_usd is not None:
            _nano(max_usd, "max_usd")

    async def set_limits(
        self, run_id: str, *, max_tokens: int | None = None, max_usd: Money | None = None
    ) -> BudgetUsage:
        """Set (or, with ``None``, lift) the run's limits; spent and held stay.
        Lowering a limit below what is spent stops new calls; it undoes nothing.
        Returns the run's usage under them."""
        await self.write_limits(run_id, max_tokens=max_tokens, max_usd=max_usd)
        return await self.usage(run_id)

    async def write_limits(
        self, run_id: str, *, max_tokens: int | None = None, max_usd: Money | None = None
    ) -> None:
        """:meth:`set_limits` without reading the usage back."""
        tokens = None if max_tokens is None else _tokens(max_tokens, "max_tokens")
        nano = None if max_usd is None else _nano(max_usd, "max_usd")
        await self._scripts.call(
            "budget_limits",
            keys=list(self.keys.all(run_id)),
            args=["" if tokens is None else tokens, "" if nano is None else nano, self._now_arg()],
        )

    async def reserve(
        self,
        run_id: str,
        *,
        est_tokens: int,
        est_usd: Money,
        hold_ttl: float | None = None,
        key: str | None = None,
    ) -> BudgetReservation:
        """Hold ``est_tokens`` and ``est_usd`` against the run's budget.

        Raises :class:`~taskloom.agents.errors.BudgetExceededError` when spent + held + asked
        would pass a limit; nothing is held then. ``key`` (say, an activity attempt's
        idempotency key) names the call: a hold still held under the same key, left by
        a caller that died before settling, is given back first (were that caller
        alive after all, its settle still charges what it spent).
        """
        ask = self.ask(run_id, est_tokens=est_tokens, est_usd=est_usd, hold_ttl=hold_ttl, key=key)
        reply = await self._scripts.call("budget_reserve", keys=ask.keys, args=ask.args)
        return self.held(ask, reply)

    def ask(
        self,
        run_id: str,
        *,
        est_tokens: int,
        est_usd: Money,
        hold_ttl: float | None = None,
        key: str | None = None,
    ) -> BudgetAsk:
        """A checked :meth:`reserve` request, to send in a pipeline of one's own
        (:meth:`queue`, then :meth:`held` with its reply)."""
        tokens = _tokens(est_tokens, "est_tokens")
        nano = _nano(est_usd, "est_usd")
        ttl = self._hold_ttl if hold_ttl is None else hold_ttl
        if ttl <= 0:
            raise UserError(f"hold_ttl must be > 0 seconds (got {hold_ttl!r})")
        rid = uuid.uuid4().hex
        return BudgetAsk(
            run_id=run_id,
            id=rid,
            tokens=tokens,
            nano=nano,
            keys=list(self.keys.all(run_id)),
            args=[rid, tokens, nano, self._now_arg(), int(ttl * 1000), key or ""],
        )

    def queue(self, pipe: Any, ask: BudgetAsk) -> None:
        """Add ``ask``'s reservation to the pipeline ``pipe`` (one of this object's
        :class:`~taskloom.luascripts.LuaScripts`)."""
        self._scripts.queue(pipe, "budget_reserve", keys=ask.keys, args=ask.args)

    def held(self, ask: BudgetAsk, reply: Any) -> BudgetReservation:
        """The reservation ``reply`` (to ``ask``) made; raises
        :class:`~taskloom.agents.errors.BudgetExceededError` when refused."""
        if int(reply[0]) == 0:
            raise _exceeded(_usage(ask.run_id, reply[1:7]), int(reply[7]), ask.tokens, ask.nano)
        return BudgetReservation(ask.id, ask.run_id, ask.tokens, Decimal(ask.nano) / _NANO)

    async def settle(
        self, reservation: BudgetReservation, *, actual_tokens: int, actual_usd: Money
    ) -> BudgetUsage:
        """Replace the reservation's hold with what the call spent. The actual amount
        is charged even past the budget (the money is gone): the next reservation is
        refused instead. Settling twice charges once."""
        keys, args = self._settle_call(reservation, actual_tokens, actual_usd)
        reply = await self._scripts.call("budget_settle", keys=keys, args=args)
        return _usage(reservation.run_id, reply[1:7])

    def queue_settle(
        self, pipe: Any, reservation: BudgetReservation, *, actual_tokens: int, actual_usd: Money
    ) -> None:
        """:meth:`settle` (spent), or :meth:`release` when nothing was spent, added to
        the pipeline ``pipe``."""
        if actual_tokens == 0 and not _nano(actual_usd, "actual_usd"):
            self._scripts.queue(
                pipe,
                "budget_release",
                keys=list(self.keys.all(reservation.run_id)),
                args=[reservation.id],
            )
            return
        keys, args = self._settle_call(reservation, actual_tokens, actual_usd)
        self._scripts.queue(pipe, "budget_settle", keys=keys, args=args)

    def _settle_call(
        self, reservation: BudgetReservation, actual_tokens: int, actual_usd: Money
    ) -> tuple[list[str], list[Any]]:
        args = [
            reservation.id,
            _tokens(actual_tokens, "actual_tokens"),
            _nano(actual_usd, "actual_usd"),
        ]
        return list(self.keys.all(reservation.run_id)), args

    async def release(self, reservation: BudgetReservation) -> BudgetUsage:
        """Give the reservation's hold back (the call failed before spending).
        Releasing twice, or after settling, changes nothing."""
        reply = await self._scripts.call(
            "budget_release",
            keys=list(self.keys.all(reservation.run_id)),
            args=[reservation.id],
        )
        return _usage(reservation.run_id, reply[1:7])

    async def usage(self, run_id: str) -> BudgetUsage:
        """The run's limits, spent and held totals (lapsed holds dropped first)."""
        reply = await self._scripts.call(
            "budget_usage", keys=list(self.keys.all(run_id)), args=[self._now_arg()]
        )
        return _usage(run_id, reply)

    def _now_arg(self) -> str:
        return "" if self._now is None else str(int(self._now() * 1000))


def _tokens(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{name} must be a whole number of tokens >= 0 (got {value!r})")
    if value >= 2**53:
        raise UserError(f"{name} is too large ({value!r})")
    return value


def _nano(value: Money, name: str) -> int:
    """USD -> whole nano-dollars, rounded up."""
    if isinstance(value, bool):
        raise UserError(f"{name} must be a USD amount, not {value!r}")
    try:
        usd = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise UserError(
            f"{name} must be a USD amount like 0.25 or '0.25' (got {value!r})"
        ) from None
    if not usd.is_finite() or usd < 0:
        raise UserError(f"{name} must be a finite USD amount >= 0 (got {value!r})")
    if usd > _MAX_USD:
        raise UserError(f"{name} of ${usd} is above the largest budget amount, ${_MAX_USD}")
    return int((usd * _NANO).to_integral_value(rounding=ROUND_CEILING))


def _usage(run_id: str, r: Sequence[Any]) -> BudgetUsage:
    max_t, max_n = int(r[0]), int(r[1])
    return BudgetUsage(
        run_id=run_id,
        max_tokens=None if max_t < 0 else max_t,
        max_usd=None if max_n < 0 else Decimal(max_n) / _NANO,
        spent_tokens=int(r[2]),
        spent_usd=Decimal(int(r[3])) / _NANO,
        held_tokens=int(r[4]),
        held_usd=Decimal(int(r[5])) / _NANO,
    )


def _usd(amount: Decimal | None) -> str:
    return "no limit" if amount is None else f"${amount.normalize():f}"


def _count(tokens: int | None) -> str:
    return "no limit" if tokens is None else f"{tokens:,}"


def _exceeded(u: BudgetUsage, over: int, tokens: int, nano: int) -> BudgetExceededError:
    asked_usd = Decimal(nano) / _NANO
    which = [w for bit, w in ((1, "tokens"), (2, "USD")) if over & bit]
    message = (
        f"run {u.run_id!r} is over its {' and '.join(which)} budget: "
        f"USD budget {_usd(u.max_usd)}, spent {_usd(u.spent_usd)}, held {_usd(u.held_usd)}, "
        f"asked {_usd(asked_usd)}; token budget {_count(u.max_tokens)}, spent "
        f"{u.spent_tokens:,}, held {u.held_tokens:,}, asked {tokens:,}. "
        "No new call starts until calls in flight settle or the budget is raised "
        "(Budgets.set_limits)."
    )
    details = {
        "run_id": u.run_id,
        "exceeded": which,
        "max_tokens": u.max_tokens,
        "max_usd": None if u.max_usd is None else str(u.max_usd),
        "spent_tokens": u.spent_tokens,
        "spent_usd": str(u.spent_usd),
        "held_tokens": u.held_tokens,
        "held_usd": str(u.held_usd),
        "asked_tokens": tokens,
        "asked_usd": str(asked_usd),
    }
    return BudgetExceededError(message, details=details)
