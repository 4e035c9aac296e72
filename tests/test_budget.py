"""Run budgets (taskloom.agents.budget) on a real Redis: concurrent reservations never overspend."""

from __future__ import annotations

import asyncio
import pickle
import random
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from taskloom import Orchestrator, RunNotFoundError
from taskloom.agents.budget import BudgetKeys, BudgetReservation, Budgets
from taskloom.agents.errors import BudgetExceededError, NonRetryableError, UserError
from taskloom.engine.connection import make_client

pytestmark = pytest.mark.anyio

CENT = Decimal("0.01")


async def _try_reserve(
    budgets: Budgets, run_id: str, tokens: int, usd: Decimal
) -> BudgetReservation | None:
    try:
        return await budgets.reserve(run_id, est_tokens=tokens, est_usd=usd)
    except BudgetExceededError:
        return None


async def test_fifty_concurrent_calls_under_a_budget_for_twenty(
    client: Redis, redis_url: str, prefix: str
) -> None:
    other = make_client(redis_url)  # as another worker would
    try:
        mine, theirs = Budgets(client, prefix=prefix), Budgets(other, prefix=prefix)
        await mine.set_limits("run-1", max_usd=20 * CENT)
        results = await asyncio.gather(
            *(_try_reserve((mine, theirs)[i % 2], "run-1", 1_000, CENT) for i in range(50))
        )
        held = [r for r in results if r is not None]
        assert len(held) == 20
        usage = await theirs.usage("run-1")
        assert usage.held_usd == 20 * CENT and usage.held_tokens == 20_000
        assert usage.spent_usd == 0 and usage.remaining_usd == 0
        await asyncio.gather(*(mine.settle(r, actual_tokens=1_000, actual_usd=CENT) for r in held))
        usage = await mine.usage("run-1")
        assert usage.spent_usd == 20 * CENT and usage.held_usd == 0
        assert await _try_reserve(theirs, "run-1", 1, Decimal("0.000000001")) is None
    finally:
        await other.aclose()


async def test_concurrent_callers_never_overspend(client: Redis, prefix: str) -> None:
    """Fifty callers reserve, "call" and settle (actual <= estimate) until the budget
    refuses them; the money and tokens spent never pass the budget."""
    budgets = Budgets(client, prefix=prefix)
    max_usd, max_tokens = Decimal("1.00"), 400_000
    await budgets.set_limits("run-2", max_usd=max_usd, max_tokens=max_tokens)
    rng = random.Random(7)
    seen_over = False

    async def caller() -> None:
        nonlocal seen_over
        refused = 0
        while refused < 3:
            est_usd = Decimal(rng.randint(1_000, 30_000)) / 1_000_000
            est_tokens = rng.randint(100, 5_000)
            r = await _try_reserve(budgets, "run-2", est_tokens, est_usd)
            if r is None:
                refused += 1
                await asyncio.sleep(0.001)
                continue
            await asyncio.sleep(rng.uniform(0, 0.003))  # the call
            if rng.random() < 0.1:
                await budgets.release(r)  # it failed before spending
                continue
            actual_usd = est_usd * Decimal(rng.randint(20, 100)) / 100
            usage = await budgets.settle(
                r, actual_tokens=rng.randint(0, est_tokens), actual_usd=actual_usd
            )
            seen_over |= usage.spent_usd > max_usd or usage.spent_tokens > max_tokens

    await asyncio.gather(*(caller() for _ in range(50)))
    usage = await budgets.usage("run-2")
    assert not seen_over
    assert usage.spent_usd <= max_usd and usage.spent_tokens <= max_tokens
    assert usage.held_usd == 0 and usage.held_tokens == 0
    assert usage.spent_usd > max_usd / 2  # the budget was really used up to its limit


async def test_the_token_limit_holds_on_its_own(client: Redis, prefix: str) -> None:
    budgets = Budgets(client, prefix=prefix)
    await budgets.set_limits("run-3", max_tokens=10_000)
    results = await asyncio.gather(
        *(_try_reserve(budgets, "run-3", 3_000, Decimal(0)) for _ in range(10))
    )
    assert sum(r is not None for r in results) == 3
    with pytest.raises(BudgetExceededError) as caught:
        await budgets.reserve("run-3", est_tokens=1_001, est_usd=0)
    assert caught.value.details["exceeded"] == ["tokens"]


async def test_settle_replaces_the_estimate_and_release_gives_it_back(
    client: Redis, prefix: str
) -> None:
    budgets = Budgets(client, prefix=prefix)
    await budgets.set_limits("run-4", max_usd="0.15")
    first = await budgets.reserve("run-4", est_tokens=100, est_usd="0.10")
    assert await _try_reserve(budgets, "run-4", 100, Decimal("0.10")) is None
    usage = await budgets.settle(first, actual_tokens=40, actual_usd="0.04")
    assert (usage.spent_usd, usage.held_usd, usage.spent_tokens) == (
        Decimal("0.04"),
        Decimal(0),
        40,
    )
    again = await budgets.settle(first, actual_tokens=40, actual_usd="0.04")
    assert again.spent_usd == Decimal("0.04")  # settling twice charges once
    second = await budgets.reserve("run-4", est_tokens=100, est_usd="0.10")
    assert (await budgets.usage("run-4")).held_usd == Decimal("0.10")
    usage = await budgets.release(second)
    assert usage.held_usd == 0 and usage.spent_usd == Decimal("0.04")
    assert (await budgets.release(second)).held_usd == 0  # releasing twice: nothing
    assert (await budgets.release(first)).spent_usd == Decimal("0.04")  # after settle: nothing
    assert (await budgets.usage("run-4")).remaining_usd == Decimal("0.11")


async def test_settling_above_the_budget_charges_and_stops_new_calls(
    client: Redis, prefix: str
) -> None:
    budgets = Budgets(client, prefix=prefix)
    await budgets.set_limits("run-5", max_usd="1")
    r = await budgets.reserve("run-5", est_tokens=10, est_usd="0.50")
    usage = await budgets.settle(r, actual_tokens=10, actual_usd="1.25")  # an under-estimate
    assert usage.spent_usd == Decimal("1.25") and usage.remaining_usd == 0
    with pytest.raises(BudgetExceededError):
        await budgets.reserve("run-5", est_tokens=1, est_usd="0.000000001")


async def test_the_error_says_budget_spent_held_and_asked(client: Redis, prefix: str) -> None:
    budgets = Budgets(client, prefix=prefix)
    await budgets.set_limits("run-6", max_usd="2.50", max_tokens=50_000)
    spent = await budgets.reserve("run-6", est_tokens=10_000, est_usd="1.00")
    await budgets.settle(spent, actual_tokens=9_000, actual_usd="0.75")
    await budgets.reserve("run-6", est_tokens=20_000, est_usd="1.50")
    with pytest.raises(BudgetExceededError) as caught:
        await budgets.reserve("run-6", est_tokens=1_000, est_usd="0.40")
    err = caught.value
    message = str(err)
    for text in ("'run-6'", "USD budget", "$2.5", "spent $0.75", "held $1.5", "asked $0.4"):
        assert text in message, (text, message)
    assert "token budget 50,000, spent 9,000, held 20,000, asked 1,000" in message
    assert "set_limits" in message
    assert isinstance(err, NonRetryableError) and err.code == "budget_exceeded"
    assert err.details["exceeded"] == ["USD"]
    assert err.to_dict()["retryable"] is False
    assert err.to_dict()["details"]["asked_usd"] == "0.4"
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == message and copy.details == err.details


async def test_a_dead_callers_hold_lapses(client: Redis, prefix: str) -> None:
    clock = [1_000.0]
    budgets = Budgets(client, prefix=prefix, now=lambda: clock[0], hold_ttl=60)
    await budgets.set_limits("run-7", max_usd="1")
    lost = await budgets.reserve("run-7", est_tokens=5, est_usd="0.80")  # then the worker dies
    assert await _try_reserve(budgets, "run-7", 5, Decimal("0.50")) is None
    clock[0] += 61
    assert (await budgets.usage("run-7")).held_usd == 0
    r = await budgets.reserve("run-7", est_tokens=5, est_usd="0.50")
    # A late settle of the lapsed hold still charges what was spent, once.
    usage = await budgets.settle(lost, actual_tokens=5, actual_usd="0.30")
    assert (usage.spent_usd, usage.held_usd) == (Decimal("0.30"), Decimal("0.50"))
    await budgets.settle(r, actual_tokens=5, actual_usd="0.50")
    assert (await budgets.usage("run-7")).spent_usd == Decimal("0.80")


async def test_unlimited_runs_are_still_accounted(client: Redis, prefix: str) -> None:
    budgets = Budgets(client, prefix=prefix)
    r = await budgets.reserve("run-8", est_tokens=10**6, est_usd=999)
    usage = await budgets.settle(r, actual_tokens=123, actual_usd=0.1)
    assert usage.max_usd is None and usage.remaining_usd is None
    assert (usage.spent_tokens, usage.spent_usd) == (123, Decimal("0.1"))
    usage = await budgets.set_limits("run-8", max_usd="0.1")
    assert usage.remaining_usd == 0
    usage = await budgets.set_limits("run-8", max_usd=None)  # lifted again
    assert usage.max_usd is None and usage.spent_usd == Decimal("0.1")


async def test_keys_live_next_to_the_run(client: Redis, prefix: str) -> None:
    keys = BudgetKeys(prefix)
    assert keys.budget("r9") == f"{prefix}:run:{{r9}}:budget"
    budgets = Budgets(client, prefix=prefix)
    r = await budgets.reserve("r9", est_tokens=1, est_usd="0.01")
    await budgets.settle(r, actual_tokens=1, actual_usd="0.01")
    await budgets.reserve("r9", est_tokens=1, est_usd="0.01")
    stored = set(await client.keys(f"{prefix}:*"))
    assert stored == {keys.budget("r9")}  # holds: only older versions'; no limit: no expiry
    assert set(keys.all("r9")) >= stored and all("{r9}" in k for k in keys.all("r9"))


async def test_a_settled_hold_whose_expiry_passes_is_not_given_back_again(
    client: Redis, prefix: str
) -> None:
    """Settling leaves the reservation in the expiry set until its time; the sweep then
    drops only holds still held."""
    clock = [1_000.0]
    budgets = Budgets(client, prefix=prefix, now=lambda: clock[0], hold_ttl=60)
    await budgets.set_limits("r11", max_usd="1")
    first = await budgets.reserve("r11", est_tokens=10, est_usd="0.20")
    await budgets.settle(first, actual_tokens=10, actual_usd="0.10")
    clock[0] += 30
    second = await budgets.reserve("r11", est_tokens=10, est_usd="0.30")
    clock[0] += 31  # first's time has passed, second's not
    usage = await budgets.usage("r11")
    assert (usage.held_usd, usage.spent_usd) == (Decimal("0.30"), Decimal("0.10"))
    assert await _try_reserve(budgets, "r11", 1, Decimal("0.61")) is None  # 0.1 + 0.3 held
    assert await budgets.settle(second, actual_tokens=5, actual_usd="0.30")
    clock[0] += 31  # second's too: it is settled, nothing to give back
    usage = await budgets.usage("r11")
    assert (usage.held_usd, usage.spent_usd, usage.spent_tokens) == (0, Decimal("0.40"), 15)
    assert await client.zcard(BudgetKeys(prefix).expiry("r11")) == 0


async def test_a_hold_an_older_version_kept_is_settled_once_or_lapses(
    client: Redis, prefix: str
) -> None:
    """Holds an older version wrote (in the holds hash) still settle, release and lapse."""
    keys = BudgetKeys(prefix)
    clock = [1_000.0]
    budgets = Budgets(client, prefix=prefix, now=lambda: clock[0], hold_ttl=60)
    await budgets.set_limits("r12", max_usd="1")
    await client.hset(keys.budget("r12"), mapping={"held_tokens": 30, "held_nano": 600_000_000})
    await client.hset(keys.holds("r12"), mapping={"a": "h 10 200000000", "b": "h 20 400000000"})
    await client.zadd(keys.expiry("r12"), {"a": 61_000, "b": 61_000})
    a = BudgetReservation("a", "r12", 10, Decimal("0.2"))
    usage = await budgets.settle(a, actual_tokens=7, actual_usd="0.15")
    assert (usage.held_usd, usage.spent_usd) == (Decimal("0.4"), Decimal("0.15"))
    usage = await budgets.settle(a, actual_tokens=7, actual_usd="0.15")
    assert (usage.held_usd, usage.spent_usd) == (Decimal("0.4"), Decimal("0.15"))
    clock[0] += 61
    usage = await budgets.usage("r12")
    assert (usage.held_usd, usage.held_tokens, usage.spent_usd) == (0, 0, Decimal("0.15"))
    b = BudgetReservation("b", "r12", 20, Decimal("0.4"))
    assert (await budgets.release(b)).held_usd == 0  # lapsed already: nothing to give back


async def test_amounts_are_exact_and_validated(client: Redis, prefix: str) -> None:
    budgets = Budgets(client, prefix=prefix)
    await budgets.set_limits("r10", max_usd="0.3")
    for _ in range(3):
        await budgets.reserve("r10", est_tokens=0, est_usd=0.1)  # 0.1 + 0.1 + 0.1 == 0.3
    assert (await budgets.usage("r10")).held_usd == Decimal("0.3")
    for bad in (-1, "abc", float("inf"), True, 10**9):
        with pytest.raises(UserError, match="est_usd"):
            await budgets.reserve("r10", est_tokens=1, est_usd=bad)
    with pytest.raises(UserError, match="est_tokens"):
        await budgets.reserve("r10", est_tokens=-1, est_usd=0)
    with pytest.raises(UserError, match="hold_ttl"):
        Budgets(client, prefix=prefix, hold_ttl=0)


@pytest.mark.parametrize("limits", [{"budget_tokens": -1}, {"budget_usd": "lots"}])
async def test_a_run_with_a_budget_it_cannot_have_is_refused_before_it_exists(
    orch: Orchestrator, limits: dict[str, Any]
) -> None:
    with pytest.raises(UserError, match="max_"):
        await orch.start("budgeted", run_id="refused-budget", **limits)
    with pytest.raises(RunNotFoundError):
        await orch.store.get_meta("refused-budget")


async def test_a_dead_callers_hold_without_a_limit_lapses_once_someone_looks(
    client: Redis, prefix: str
) -> None:
    """A hold made without a limit has no expiry until the usage is read (or a limit is
    set) while it is held: from then on it lapses after its TTL."""
    clock = [1_000.0]
    budgets = Budgets(client, prefix=prefix, now=lambda: clock[0], hold_ttl=60)
    lost = await budgets.reserve("r13", est_tokens=5, est_usd="0.80")  # then the worker dies
    done = await budgets.reserve("r13", est_tokens=5, est_usd="0.10")
    await budgets.settle(done, actual_tokens=5, actual_usd="0.10")
    clock[0] += 600
    assert (await budgets.usage("r13")).held_usd == Decimal("0.80")  # its TTL starts now
    clock[0] += 59
    assert (await budgets.usage("r13")).held_usd == Decimal("0.80")
    clock[0] += 2
    usage = await budgets.usage("r13")
    assert (usage.held_usd, usage.held_tokens, usage.spent_usd) == (0, 0, Decimal("0.10"))
    usage = await budgets.settle(lost, actual_tokens=5, actual_usd="0.30")  # alive after all
    assert (usage.held_usd, usage.spent_usd) == (0, Decimal("0.40"))


async def test_holds_made_without_a_limit_count_and_lapse_once_one_is_set(
    client: Redis, prefix: str
) -> None:
    clock = [1_000.0]
    budgets = Budgets(client, prefix=prefix, now=lambda: clock[0], hold_ttl=60)
    first = await budgets.reserve("r14", est_tokens=5, est_usd="0.50")
    lost = await budgets.reserve("r14", est_tokens=5, est_usd="0.30")  # then its caller dies
    clock[0] += 600
    await budgets.set_limits("r14", max_usd="1")  # their TTL starts now
    assert await _try_reserve(budgets, "r14", 1, Decimal("0.21")) is None
    await budgets.settle(first, actual_tokens=5, actual_usd="0.40")
    clock[0] += 61
    r = await budgets.reserve("r14", est_tokens=1, est_usd="0.60")  # lost's hold lapsed
    usage = await budgets.usage("r14")
    assert (usage.held_usd, usage.spent_usd) == (Decimal("0.60"), Decimal("0.40"))
    await budgets.release(r)
    await budgets.release(lost)  # lapsed already: nothing to give back
    assert (await budgets.usage("r14")).held_usd == 0
