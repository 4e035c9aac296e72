"""Shared rate limits (taskloom.agents.limits) on a real Redis: limiters standing for separate
processes (and two real processes) never exceed a limit in any 60-second window."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from taskloom.agents.errors import (
    ConfigurationError,
    NonRetryableError,
    RateLimitDeferredError,
    RequestExceedsRateLimitError,
    RetryableError,
    UserError,
)
from taskloom.agents.limits import (
    DEFAULT_RATE_LIMITS,
    RateLimiter,
    RateLimiters,
    RateLimits,
    block_from_headers,
    limits_for,
)
from taskloom.engine.clustering import is_cluster
from taskloom.engine.connection import make_client
from taskloom.luascripts import LuaScripts
from tests.helpers import ROOT

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-test"
WINDOW_MS = 60_000


class ManualTime:
    """A clock that moves only when told to; ``sleep`` moves it (nothing really waits)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


class FastTime:
    """Real time sped up ``speed`` times, the same in every process started from the
    same ``epoch`` (a real ``time.time()``): a minute passes in 60/speed seconds."""

    def __init__(self, speed: float, epoch: float) -> None:
        self.speed = speed
        self.epoch = epoch

    def now(self) -> float:
        return 1_000_000.0 + (time.time() - self.epoch) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)


def window_violations(admissions: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """(start ms, tokens) of every 60-s window [t, t + 60 s) holding more than ``limit``
    tokens; ``admissions`` are (admitted at ms, tokens finally counted). The windows
    starting at an admission are enough: any heavier window can slide right to one."""
    items = sorted(admissions)
    bad = []
    for i, (start, _) in enumerate(items):
        total = 0
        for at, tokens in items[i:]:
            if at >= start + WINDOW_MS:
                break
            total += tokens
        if total > limit:
            bad.append((start, total))
    return bad


def test_the_window_check_finds_an_overfull_window() -> None:
    ok = [(0, 600), (30_000, 400), (60_000, 600), (119_999, 400)]
    assert window_violations(ok, 1000) == []
    assert window_violations([*ok, (59_999, 1)], 1000) == [(0, 1001), (30_000, 1001)]


async def _workload(
    limiter: RateLimiter,
    clock: Any,
    *,
    seconds: float,
    tasks: int,
    seed: int,
) -> list[tuple[int, int, float]]:
    """``tasks`` callers reserving, "calling" and settling (actual <= estimate) until
    ``seconds`` of the clock have passed; returns (admitted ms, actual tokens, waited)."""
    rng = random.Random(seed)
    end = clock.now() + seconds
    out: list[tuple[int, int, float]] = []

    async def caller() -> None:
        while clock.now() < end:
            estimate = rng.randint(300, 2_000)
            r = await limiter.reserve(estimate)
            await clock.sleep(rng.uniform(0.2, 2.0))  # the call itself
            actual = rng.randint(estimate // 3, estimate)
            await limiter.settle(r, actual)
            out.append((round(r.at * 1000), actual, r.waited))

    await asyncio.gather(*(caller() for _ in range(tasks)))
    return out


async def test_two_limiters_never_admit_more_than_the_tpm_in_any_window(
    client: Redis, redis_url: str, prefix: str
) -> None:
    tpm = 6_000
    clock = FastTime(speed=300, epoch=time.time())
    other = make_client(redis_url)  # as a second process would
    try:
        limiters = [
            RateLimiter(
                c, model=MODEL, prefix=prefix, limits=RateLimits(tpm=tpm),
                now=clock.now, sleep=clock.sleep,
            )
            for c in (client, other)
        ]  # fmt: skip
        minutes = 4
        runs = await asyncio.gather(
            *(
                _workload(lim, clock, seconds=60 * minutes, tasks=6, seed=i)
                for i, lim in enumerate(limiters)
            )
        )
    finally:
        await other.aclose()
    admissions = [(at, actual) for run in runs for at, actual, _ in run]
    assert all(runs), "both limiters made calls"
    assert window_violations(admissions, tpm) == []
    # The limit was what held the callers back: they waited, and the window was used.
    assert sum(1 for run in runs for *_, waited in run if waited > 0) > 10
    assert sum(a for _, a in admissions) > 0.6 * tpm * minutes


async def test_without_a_limit_the_same_workload_overfills_windows(
    client: Redis, prefix: str
) -> None:
    """The control for the test above: its check does catch an unlimited workload."""
    clock = FastTime(speed=300, epoch=time.time())
    limiter = RateLimiter(
        client, model=MODEL, prefix=prefix, limits=RateLimits(), now=clock.now, sleep=clock.sleep
    )
    run = await _workload(limiter, clock, seconds=60, tasks=6, seed=1)
    assert window_violations([(at, actual) for at, actual, _ in run], 6_000) != []


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from taskloom.agents.limits import RateLimiter, RateLimits
    from taskloom.engine.connection import make_client
    from tests.test_limits import FastTime, _workload

    async def main(url, prefix, model, tpm, speed, epoch, start, seconds, seed):
        clock = FastTime(speed, epoch)
        client = make_client(url)
        limiter = RateLimiter(client, model=model, prefix=prefix,
                              limits=RateLimits(tpm=tpm), now=clock.now, sleep=clock.sleep)
        await asyncio.sleep(max(0.0, (start - clock.now()) / speed))
        out = await _workload(limiter, clock, seconds=seconds, tasks=6, seed=seed)
        await client.aclose()
        print(json.dumps(out))

    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), float(a[4]), float(a[5]), float(a[6]),
                     float(a[7]), int(a[8])))
    """
)


async def test_two_processes_share_the_tpm_limit(redis_url: str, prefix: str) -> None:
    tpm, speed, seconds = 6_000, 300.0, 180.0
    clock = FastTime(speed, epoch=time.time())
    start = clock.now() + 2.0 * speed  # both start together, once both have imported
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, redis_url, prefix, MODEL, str(tpm), str(speed),
             str(clock.epoch), str(start), str(seconds), str(seed)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in (11, 12)
    ]  # fmt: skip
    runs = []
    for p in procs:
        out, err = await asyncio.to_thread(p.communicate, timeout=60)
        assert p.returncode == 0, err
        runs.append([(at, actual) for at, actual, _ in json.loads(out)])
    assert all(runs), "both processes made calls"
    admissions = [a for run in runs for a in run]
    assert window_violations(admissions, tpm) == []
    assert sum(a for _, a in admissions) > 0.6 * tpm * seconds / 60


def _limiter(client: Redis, prefix: str, clock: ManualTime, **limits: int | None) -> RateLimiter:
    return RateLimiter(
        client,
        model=MODEL,
        prefix=prefix,
        limits=RateLimits(**limits),
        now=clock.now,
        sleep=clock.sleep,
    )


async def _deferred_for(limiter: RateLimiter, tokens: int = 0) -> float:
    with pytest.raises(RateLimitDeferredError) as caught:
        await limiter.reserve(tokens, max_wait=0)
    assert caught.value.retry_after is not None
    return caught.value.retry_after


async def test_rpm_is_shared_and_the_wait_is_computed_not_polled(
    client: Redis, redis_url: str, prefix: str
) -> None:
    clock = ManualTime()
    t0 = clock.t
    other = make_client(redis_url)
    try:
        a, b = _limiter(client, prefix, clock, rpm=3), _limiter(other, prefix, clock, rpm=3)
        for who in (a, b, a):
            await who.reserve()
            clock.t += 10
        assert await _deferred_for(b) == pytest.approx(30.0)  # the call at t0 leaves at t0+60
        r = await b.reserve()  # waits through the injected sleep: one wait, then admitted
        assert clock.slept == [pytest.approx(30.0)]
        assert r.waited == pytest.approx(30.0) and r.at == pytest.approx(t0 + 60)
        assert await _deferred_for(a) == pytest.approx(10.0)  # next to leave: t0+10
    finally:
        await other.aclose()


async def test_settle_refunds_unused_tokens_and_charges_extra(client: Redis, prefix: str) -> None:
    clock = ManualTime()
    a, b = _limiter(client, prefix, clock, tpm=1_000), _limiter(client, prefix, clock, tpm=1_000)
    first = await a.reserve(800)
    assert await _deferred_for(b, 300) == pytest.approx(60.0)
    await a.settle(first, 500)  # 300 of the 800 were not used
    second = await b.reserve(300)  # fits now: 500 + 300
    await b.settle(second, 300)
    await b.settle(second, 300)  # settling again changes nothing
    assert await _deferred_for(a, 201) == pytest.approx(60.0)
    clock.t += 5
    await a.reserve(200)
    await a.settle(first, 900)  # an under-estimate: the extra 400 counts, later calls wait
    assert await _deferred_for(b, 1) == pytest.approx(55.0)
    clock.t += 55
    assert await _deferred_for(b, 801) == pytest.approx(5.0)  # the one at t0+5 holds 200
    await b.reserve(800)


async def test_an_estimate_above_the_tpm_can_never_fit(client: Redis, prefix: str) -> None:
    limiter = _limiter(client, prefix, ManualTime(), tpm=1_000)
    with pytest.raises(RequestExceedsRateLimitError, match=r"1,001 tokens.*1,000") as caught:
        await limiter.reserve(1_001)
    assert isinstance(caught.value, NonRetryableError)
    await limiter.reserve(1_000)


async def test_penalize_blocks_every_limiter_of_the_model(
    client: Redis, redis_url: str, prefix: str
) -> None:
    clock = ManualTime()
    other = make_client(redis_url)
    try:
        a, b = _limiter(client, prefix, clock, rpm=100), _limiter(other, prefix, clock, rpm=100)
        unrelated = RateLimiter(
            client, model="openai:another", prefix=prefix, now=clock.now, sleep=clock.sleep
        )
        assert await a.penalize(30) == pytest.approx(30.0)
        with pytest.raises(RateLimitDeferredError, match="blocked") as caught:
            await b.reserve(10, max_wait=5)
        assert isinstance(caught.value, RetryableError)
        assert caught.value.retry_after == pytest.approx(30.0)
        assert await a.penalize(5) == pytest.approx(30.0)  # a shorter block keeps the longer
        await unrelated.reserve(10, max_wait=0)  # another model is not blocked
        clock.t += 12
        r = await b.reserve(10)  # waits out the rest of the block
        assert r.waited == pytest.approx(18.0)
    finally:
        await other.aclose()


async def test_provider_headers_block_everyone(client: Redis, prefix: str) -> None:
    clock = ManualTime()
    a, b = _limiter(client, prefix, clock), _limiter(client, prefix, clock)
    assert await a.observe_headers({"x-ratelimit-remaining-tokens": "12"}) is None
    await b.reserve(10, max_wait=0)
    blocked = await a.observe_headers(
        {"X-RateLimit-Remaining-Tokens": "0", "X-RateLimit-Reset-Tokens": "1m30s"}
    )
    assert blocked == pytest.approx(90.0)
    assert await _deferred_for(b) == pytest.approx(90.0)
    assert await a.observe_headers({"Retry-After": "120"}) == pytest.approx(120.0)
    assert await _deferred_for(b) == pytest.approx(120.0)


def test_block_from_headers_reads_every_form() -> None:
    wall = 1_700_000_000.0
    assert block_from_headers({}) is None
    assert block_from_headers({"retry-after": "7"}) == 7.0
    assert block_from_headers({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert block_from_headers(
        {"retry-after": "Tue, 14 Nov 2023 22:13:40 GMT"}, wall_now=wall
    ) == pytest.approx(20.0)
    assert block_from_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    ) == pytest.approx(360.0)
    assert block_from_headers(
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "250ms"}
    ) == pytest.approx(0.25)
    assert (
        block_from_headers({"x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "9s"})
        is None
    )
    anthropic = {
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:14:05Z",
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:20:00Z",
    }
    assert block_from_headers(anthropic, wall_now=wall) == pytest.approx(45.0)
    assert block_from_headers({"retry-after": "soon"}) is None


async def test_admission_times_never_go_backwards(client: Redis, prefix: str) -> None:
    ahead, behind = ManualTime(1_000_100.0), ManualTime(1_000_000.0)
    a = _limiter(client, prefix, ahead, rpm=10)
    b = _limiter(client, prefix, behind, rpm=10)
    assert (await a.reserve()).at == pytest.approx(1_000_100.0)
    assert (await b.reserve()).at == pytest.approx(1_000_100.0)  # the latest time seen


async def test_keys_share_one_hash_tag_and_expire(client: Redis, prefix: str) -> None:
    limiter = _limiter(client, prefix, ManualTime(), rpm=5, tpm=5_000)
    await limiter.reserve(100)
    await limiter.penalize(1)
    keys = sorted(await client.keys(f"{prefix}:*"))
    tag = "{rl:" + MODEL + "}"
    assert keys == sorted(f"{prefix}:{tag}:{k}" for k in ("log", "tokens", "state", "block"))
    for key in keys:
        assert 0 < await client.pttl(key) <= 2 * WINDOW_MS


async def test_unlimited_and_limits_from_a_table(client: Redis, prefix: str) -> None:
    limiters = RateLimiters(
        client, prefix=prefix, limits={"local:*": RateLimits(), "openai:gpt-x": RateLimits(rpm=7)}
    )
    assert limiters.for_model("openai:gpt-x").limits == RateLimits(rpm=7)
    assert limiters.for_model("openai:gpt-x") is limiters.for_model("openai:gpt-x")
    assert limiters.for_model("openai:other").limits == DEFAULT_RATE_LIMITS["openai:*"]
    local = limiters.for_model("local:llama")
    for _ in range(50):
        await local.reserve(10**9, max_wait=0)
    assert await client.keys(f"{prefix}:*log") == []  # nothing to count, nothing kept


def test_limit_configuration_errors() -> None:
    assert limits_for("anthropic:claude-x") == DEFAULT_RATE_LIMITS["anthropic:*"]
    assert limits_for("vllm:llama") == RateLimits()
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigurationError, match="rpm"):
            RateLimits(rpm=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="RateLimits"):
        limits_for("a:b", {"a:b": {"rpm": 5}})  # type: ignore[dict-item]


async def test_bad_arguments_are_user_errors(client: Redis, prefix: str) -> None:
    limiter = _limiter(client, prefix, ManualTime(), tpm=100)
    with pytest.raises(UserError, match="estimated_tokens"):
        await limiter.reserve(-1)
    with pytest.raises(UserError, match="retry_after_s"):
        await limiter.penalize(float("nan"))
    with pytest.raises(UserError, match="free of"):
        RateLimiter(client, model="openai:{x}", prefix=prefix)
    r = await limiter.reserve(10)
    elsewhere = RateLimiter(client, model="openai:other", prefix=prefix)
    with pytest.raises(UserError, match="settle it on the limiter that made it"):
        await elsewhere.settle(r, 5)


async def test_scripts_load_themselves_after_noscript(
    client: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script the server has never seen (as after a restart) is loaded on NOSCRIPT."""
    package = f"tl_lua_{uuid.uuid4().hex[:8]}"
    (tmp_path / package / "lua").mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    marker = uuid.uuid4().hex  # makes the script, and so its SHA, new to the server
    (tmp_path / package / "lua" / "echo.lua").write_text(f"-- {marker}\nreturn ARGV[1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    scripts = LuaScripts(client, package=package)
    assert scripts.names == ["echo"]
    assert await client.script_exists(scripts.sha("echo")) == [False]
    assert await scripts.call("echo", keys=[], args=["hello"]) == "hello"
    replies = await scripts.pipeline(lambda p: scripts.queue(p, "echo", keys=[], args=["x"]))
    assert replies == ["x"]
    with pytest.raises(UserError, match="no Lua script 'nope'"):
        await scripts.call("nope", keys=[], args=[])
    with pytest.raises(UserError, match="not found"):
        LuaScripts(client, package=package, names=["missing"])


async def test_waiting_callers_sleep_instead_of_polling(client: Redis, prefix: str) -> None:
    """Ten callers queued behind a full window ask Redis a bounded number of times."""
    clock = ManualTime()
    limiter = _limiter(client, prefix, clock, rpm=2)
    calls = 0
    real_call = limiter._scripts.call

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real_call(*args, **kwargs)

    limiter._scripts.call = counting  # type: ignore[method-assign]
    for _ in range(10):
        await limiter.reserve()  # each waits at most once for a slot, then goes
    assert calls <= 2 * 10
    assert clock.t >= 1_000_000.0 + 4 * 60  # 10 calls at 2 per minute


async def test_a_block_whose_script_must_be_loaded_first_lets_no_call_through(
    client: Redis, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429's Retry-After arrives when the server has lost the block script (NOSCRIPT,
    as after a restart): no call of this process gets through while it is loaded, and
    once it is, the block holds for every process."""
    package = f"tl_lua_{uuid.uuid4().hex[:8]}"
    (tmp_path / package / "lua").mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    for name in ("rl_reserve", "rl_settle", "rl_penalize"):
        source = (ROOT / "agents" / "lua" / f"{name}.lua").read_text()
        if name == "rl_penalize":  # new to the server: its first EVALSHA gets NOSCRIPT
            source = f"-- {uuid.uuid4().hex}\n{source}"
        (tmp_path / package / "lua" / f"{name}.lua").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    scripts = LuaScripts(client, package=package)
    clock = ManualTime()
    limiter = RateLimiter(
        client,
        model=MODEL,
        prefix=prefix,
        limits=RateLimits(rpm=100),
        now=clock.now,
        sleep=clock.sleep,
        scripts=scripts,
    )
    await limiter.reserve(1)  # the admission script is loaded; the block script is not
    await asyncio.gather(*(client.ping() for _ in range(3)))  # connections ready for both
    assert not await _loaded(client, scripts.sha("rl_penalize"))
    blocked, meanwhile = await asyncio.gather(
        limiter.penalize(30), limiter.reserve(1, max_wait=1), return_exceptions=True
    )
    assert blocked == 30
    assert isinstance(meanwhile, RateLimitDeferredError), "a call slipped through the 429"
    assert meanwhile.retry_after == pytest.approx(30)
    assert await _loaded(client, scripts.sha("rl_penalize"))
    elsewhere = _limiter(client, prefix, clock, rpm=100)  # another process
    assert await _deferred_for(elsewhere) == pytest.approx(30)


async def _loaded(client: Redis, sha: str) -> bool:
    """Whether the script ``sha`` is in the server's cache (on a cluster: in some
    primary's, the one of the keys it ran on; each node has a cache of its own)."""
    if not is_cluster(client):
        return bool((await client.script_exists(sha)) == [True])
    nodes = client.get_primaries()  # type: ignore[attr-defined]
    replies = [await client.execute_command("SCRIPT EXISTS", sha, target_nodes=n) for n in nodes]
    return any(bool(reply[0]) for reply in replies)
