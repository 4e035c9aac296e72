"""A model call's holds in one Redis round trip before it is sent and one after.

Before the call, :func:`admit` asks the model's shared rate limit
(:class:`~taskloom.agents.limits.RateLimiter`) and the run's budget
(:class:`~taskloom.agents.budget.Budgets`) together, in one pipeline; after it,
:func:`settle` settles both, with whatever else the caller adds to the same pipeline
(the run's blob references, say). Sent through a
:class:`~taskloom.agents.batching.PipelineBatch`, the calls of one event-loop tick
share one round trip. For a model without rate limits the rate part is a single
``EXISTS`` of its block key, sent once for all the calls of the tick.

The pipeline spans two hash slots (the limiter's ``{rl:MODEL}`` and the run's
``{RUN_ID}``); each script in it stays in one, so a Redis Cluster client sends each part
to its node. Both scripts are idempotent by reservation id, which the pipeline's
``NOSCRIPT`` recovery relies on (:mod:`taskloom.luascripts`).

The promises are those of the two parts: a call that the rate limit does not admit at
once gives its budget hold back and waits as :meth:`RateLimiter.reserve
<taskloom.agents.limits.RateLimiter.reserve>` does, then holds its budget again, so
nothing is held while it waits; a call the budget refuses gives its rate admission back.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any, Protocol

from .batching import Command, PipelineStep
from .budget import BudgetReservation, Budgets
from .limits import RateLimiter, RateReservation

__all__ = ["Send", "admit", "settle"]


class Send(Protocol):
    """Runs the commands a :data:`~taskloom.agents.batching.PipelineStep` adds to a
    pipeline (after ``shared``, whose reply comes first) and returns their replies:
    :meth:`PipelineBatch.send <taskloom.agents.batching.PipelineBatch.send>`, which
    shares the round trip (and ``shared``) with the other calls of a tick."""

    def __call__(
        self, build: PipelineStep, /, *, shared: Command | None = None
    ) -> Awaitable[list[Any]]: ...


async def admit(
    send: Send,
    limiter: RateLimiter | None,
    budgets: Budgets | None,
    *,
    run_id: str | None,
    tokens: int,
    usd: Decimal,
    key: str | None = None,
) -> tuple[RateReservation | None, BudgetReservation | None]:
    """Admit a call of ``tokens`` (``usd`` estimated) to ``limiter`` and hold it against
    the budget of ``run_id`` (none: not budgeted), in one round trip when it can be.
    ``key`` names the budget hold (see :meth:`Budgets.reserve
    <taskloom.agents.budget.Budgets.reserve>`). Raises what those raise."""
    ask = None
    if budgets is not None and run_id is not None:
        ask = budgets.ask(run_id, est_tokens=tokens, est_usd=usd, key=key)
    at_once = limiter is not None and not limiter.blocked_here()
    if limiter is not None:
        tokens = limiter.check(tokens)
    rid = uuid.uuid4().hex
    # A limiter with no rpm or tpm asks only whether the model is blocked: one read the
    # calls of a tick share.
    shared = limiter.block_check() if at_once and limiter is not None else None

    def build(pipe: Any) -> None:
        if at_once and shared is None:
            assert limiter is not None
            limiter.queue(pipe, tokens, rid)
        if ask is not None:
            assert budgets is not None
            budgets.queue(pipe, ask)

    replies = await send(build, shared=shared) if (at_once or ask is not None) else []
    rate = held = None
    try:
        if at_once:
            assert limiter is not None
            rate = limiter.admitted(_reply(replies[0]), tokens, rid)
        if ask is not None:
            assert budgets is not None
            held = budgets.held(ask, _reply(replies[-1]))
    except BaseException:
        await _undo(limiter, budgets, rate, replies[-1] if ask is not None else None, ask)
        raise
    if limiter is None or rate is not None:
        return rate, held
    return await _wait_for_rate(limiter, budgets, held, tokens, usd, key)


async def _wait_for_rate(
    limiter: RateLimiter,
    budgets: Budgets | None,
    held: BudgetReservation | None,
    tokens: int,
    usd: Decimal,
    key: str | None,
) -> tuple[RateReservation, BudgetReservation | None]:
    """The rate limit holds the call back: nothing stays held while it waits."""
    if held is None or budgets is None:
        return await limiter.reserve(tokens), None
    await budgets.release(held)
    rate = await limiter.reserve(tokens)
    try:
        held = await budgets.reserve(held.run_id, est_tokens=held.tokens, est_usd=usd, key=key)
    except BaseException:
        await limiter.settle(rate, 0)
        raise
    return rate, held


async def _undo(
    limiter: RateLimiter | None,
    budgets: Budgets | None,
    rate: RateReservation | None,
    budget_reply: Any,
    ask: Any,
) -> None:
    """Give back what an admission that failed half-way holds."""
    if rate is not None and limiter is not None:
        await limiter.settle(rate, 0)
    kept = (
        budgets is not None
        and ask is not None
        and not isinstance(budget_reply, Exception)
        and int(budget_reply[0]) != 0
    )
    if kept:
        assert budgets is not None
        await budgets.release(BudgetReservation(ask.id, ask.run_id, ask.tokens, Decimal(0)))


async def settle(
    send: Send,
    limiter: RateLimiter | None,
    budgets: Budgets | None,
    *,
    rate: RateReservation | None,
    held: BudgetReservation | None,
    tokens: int,
    usd: Decimal,
    also: PipelineStep | None = None,
) -> None:
    """Settle a call that used ``tokens`` costing ``usd`` (a budget hold with nothing
    spent is released), and run ``also``'s commands, in one round trip."""

    def build(pipe: Any) -> None:
        if rate is not None and limiter is not None:
            limiter.queue_settle(pipe, rate, tokens)
        if held is not None and budgets is not None:
            budgets.queue_settle(pipe, held, actual_tokens=tokens, actual_usd=usd)
        if also is not None:
            also(pipe)

    for reply in await send(build):
        _reply(reply)


def _reply(reply: Any) -> Any:
    """A pipeline's reply, raised if it is an error."""
    if isinstance(reply, Exception):
        raise reply
    return reply
