"""Crash injection against real worker processes: kill them at awkward moments, resume,
and check every result is recorded exactly once and side effects run at most as often
as promised (at-least-once, bounded by what was in flight)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from taskloom import LeaseLostError, Orchestrator, Store, Worker
from taskloom.engine import serde
from taskloom.engine.store import Event, Op, now_ms
from tests import durable_workflows
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

MODULE = "tests.durable_workflows"
Spawn = Callable[..., subprocess.Popen[str]]


async def start_worker(
    spawn_worker: Spawn, *, module: str = MODULE, **options: Any
) -> subprocess.Popen[str]:
    """Spawn a worker process, drain its output (a full pipe would block it), and wait
    until it says it is serving."""
    proc = spawn_worker(module, **options)
    ready, lines = threading.Event(), []
    proc.output = lines  # type: ignore[attr-defined]

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if " slots " in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not await asyncio.to_thread(ready.wait, 20):
        raise AssertionError(f"worker did not start: {''.join(lines)}")
    return proc


async def stop_worker(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> int:
    proc.send_signal(sig)
    return await asyncio.to_thread(proc.wait, 30)


def executions(path: Path) -> list[tuple[int, str]]:
    """``(index, worker_id)`` for every execution the activities noted."""
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(r[0]), r[2]) for r in rows]


async def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    return await wait_until(check, what, timeout)


async def wait_for_events(store: Store, run_id: str, kind: str, count: int) -> None:
    seen: list[Event] = []

    async def enough() -> bool:
        seen.extend(await store.read_log(run_id, after=seen[-1].id if seen else ""))
        return sum(e.type == kind for e in seen) >= count

    await wait_for(enough, f"{count} {kind} events on run {run_id}")


async def assert_recorded_once(store: Store, run_id: str) -> dict[str, Event]:
    """Every scheduled activity has exactly one recorded outcome, and the run's steps
    hash (the exactly-once guard) agrees with the log."""
    events = await store.read_log(run_id)
    scheduled = {e.seq for e in events if e.type == "activity_scheduled"}
    outcomes = Counter(e.seq for e in events if e.type in ("activity_completed", "activity_failed"))
    twice = {seq: n for seq, n in outcomes.items() if n > 1}
    assert not twice, f"outcomes recorded more than once: {twice}"
    # ``<=``: a queued task may be done before its owner logs it (then it is not logged).
    assert scheduled <= set(outcomes), f"unrecorded steps: {sorted(scheduled - set(outcomes))}"
    assert not any(e.type == "activity_failed" for e in events)
    steps = await store.raw.hgetall(store.keys.steps(run_id))
    by_seq = {e.seq: e for e in events if e.type == "activity_completed"}
    for seq, event in by_seq.items():
        assert steps.get(seq) == event.id, f"steps hash disagrees with the log at {seq}"
    assert sum(e.type == "run_completed" for e in events) == 1
    return by_seq


def assert_side_effects(path: Path, expected: list[int], *, max_repeats: int) -> Counter[int]:
    """Every index ran at least once; at most ``max_repeats`` ran again."""
    counts = Counter(i for i, _ in executions(path))
    assert set(counts) == set(expected), f"never executed: {sorted(set(expected) - set(counts))}"
    again = {i: n for i, n in counts.items() if n > 1}
    assert sum(n - 1 for n in again.values()) <= max_repeats, f"re-executed: {again}"
    return counts


# -- 1. SIGKILL in the middle of a large fan-out ------------------------------------------
async def test_sigkill_mid_fan_out_another_worker_resumes_exactly_once(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path
) -> None:
    path, n, slots = tmp_path / "exec.log", 200, 4
    a = await start_worker(spawn_worker, concurrency=slots, lease_ttl=1.0)
    handle = await orch.start("durable.fan_out", n, str(path), 0.01)
    await wait_for(lambda: len(executions(path)) >= 40, "40 executions on worker A")
    assert await stop_worker(a) == -signal.SIGKILL
    done_by_a = {w for _, w in executions(path)}
    assert len(done_by_a) == 1
    assert len(executions(path)) < n, "worker A was killed mid-run, not after it"

    await start_worker(spawn_worker, concurrency=slots, lease_ttl=1.0)
    assert await handle.result(timeout=30) == list(range(n)), "nothing lost, order kept"

    recorded = await assert_recorded_once(orch.store, handle.run_id)
    assert len(recorded) == n
    assert sorted(e.data["result"] for e in recorded.values()) == list(range(n))
    # At most what worker A had in flight runs again: its running activities (slots)
    # and the finished ones whose results were still waiting for the recorder's next
    # write, which holds no slot, from deliveries prefetched ahead (prefetch = slots).
    assert_side_effects(path, list(range(n)), max_repeats=2 * slots)
    assert {w for _, w in executions(path)} - done_by_a, "worker B did the rest"


# -- 2. SIGKILL right after each kind of persisted step ---------------------------------
@pytest.mark.parametrize(
    ("phase", "kind", "count"),
    [
        ("scheduled", "activity_scheduled", 1),
        ("some completed", "activity_completed", 12),
        ("sleeping", "timer_started", 1),
        ("second fan-out", "timer_fired", 1),
    ],
)
async def test_kill_at_an_awkward_moment_then_resume(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path, phase: str, kind: str, count: int
) -> None:
    path, n, slots = tmp_path / "exec.log", 24, 4
    a = await start_worker(spawn_worker, concurrency=slots, lease_ttl=1.0)
    handle = await orch.start("durable.phased", n, str(path), 0.03, 1.5)
    await wait_for_events(orch.store, handle.run_id, kind, count)
    assert await stop_worker(a) == -signal.SIGKILL
    assert (await handle.info()).status != "completed", f"killed {phase}, not after the end"

    await start_worker(spawn_worker, concurrency=slots, lease_ttl=1.0)
    assert await handle.result(timeout=30) == list(range(2 * n))
    recorded = await assert_recorded_once(orch.store, handle.run_id)
    assert len(recorded) == 2 * n
    events = await orch.store.read_log(handle.run_id)
    assert [e.type for e in events].count("timer_fired") == 1, "the timer fired once"
    assert_side_effects(path, list(range(2 * n)), max_repeats=2 * slots)  # as above


# -- 3. Fencing: two live workers competing for the same runs ---------------------------
async def test_a_paused_owner_loses_its_runs_and_cannot_write_over_the_new_owner(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path
) -> None:
    path, runs, steps, slots = tmp_path / "exec.log", 20, 5, 4
    workers = [await start_worker(spawn_worker, concurrency=slots, lease_ttl=0.5) for _ in "ab"]
    by_id = {p.output[0].split()[1].rstrip(":"): p for p in workers}  # type: ignore[attr-defined]
    handles = [
        await orch.start("durable.chain", 100 * k, steps, str(path), 0.05) for k in range(runs)
    ]

    async def held() -> dict[str, dict[str, int]]:
        metas = [await orch.store.get_meta(h.run_id) for h in handles]
        out: dict[str, dict[str, int]] = {}
        for m in metas:
            if m["status"] == "running" and m["owner"]:
                out.setdefault(m["owner"], {})[m["run_id"]] = int(m["epoch"])
        return out if sum(map(len, out.values())) >= 5 else {}

    owners = await wait_for(held, "workers to own runs")
    victim_id = max(owners, key=lambda w: len(owners[w]))
    victim, taken = by_id[victim_id], owners[victim_id]
    # SIGSTOP: the owner is alive but silent, its leases lapse and the other worker takes
    # its runs over. On SIGCONT it carries on with stale state: the fencing tokens must
    # stop every write it still tries.
    victim.send_signal(signal.SIGSTOP)
    try:

        async def all_taken_over() -> bool:
            metas = [await orch.store.get_meta(r) for r in taken]
            return all(int(m["epoch"]) > taken[m["run_id"]] for m in metas)

        await wait_for(all_taken_over, "the other worker to take the paused owner's runs")
    finally:
        victim.send_signal(signal.SIGCONT)

    results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
    for k, result in enumerate(results):
        assert result == [100 * k + i for i in range(steps + 3)]
    for h in handles:
        assert len(await assert_recorded_once(orch.store, h.run_id)) == steps + 3
        info = await h.info()
        assert (info.status, info.owner) == ("completed", "")
    expected = [100 * k + i for k in range(runs) for i in range(steps + 3)]
    # Only what the paused worker had claimed may run again (its claims lapsed too).
    assert_side_effects(path, expected, max_repeats=2 * slots)
    assert victim.poll() is None, "the paused worker survives losing its leases"


async def test_a_stalled_owner_resuming_late_cannot_write(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path
) -> None:
    path, flag = tmp_path / "exec.log", tmp_path / "stalled"
    for _ in "ab":
        await start_worker(spawn_worker, concurrency=2, lease_ttl=0.5)
    handle = await orch.start("durable.stall", str(path), str(flag), 1.5)
    await wait_for(flag.exists, "the first owner to stall")
    # The other worker takes the run over and parks it on the signal...
    await wait_for(lambda: _evicted(handle.info()), "a takeover while the owner is frozen")
    assert not Path(f"{flag}.resumed").exists(), "the takeover happened during the stall"
    # ... then the frozen owner wakes up and tries to log its timer_started at once.
    await wait_for(Path(f"{flag}.resumed").exists, "the stalled owner to resume", timeout=10)
    await handle.signal("go", "ok")
    assert await handle.result(timeout=20) == [0, "ok"]
    events = await orch.store.read_log(handle.run_id)
    timers = [e for e in events if e.type == "timer_started"]
    assert len(timers) == 1, f"a stale owner wrote to the log: {timers}"
    assert [e.type for e in events][-1] == "run_completed"
    assert int((await orch.store.get_meta(handle.run_id))["epoch"]) >= 2
    await assert_recorded_once(orch.store, handle.run_id)
    assert Counter(i for i, _ in executions(path)) == {0: 1}


async def test_a_stale_epoch_cannot_write_renew_or_release(store: Store) -> None:
    run_id = "fenced"
    await store.create_run(run_id, workflow="durable.nap", input_json='{"args":[],"kwargs":{}}')
    state, old_epoch = await store.acquire(run_id, "w1", ttl_ms=200)
    assert state == "acquired"
    assert await store.acquire(run_id, "w2", ttl_ms=200) == ("held", "w1")
    assert await store.renew([(run_id, old_epoch)], "w1", ttl_ms=200) == [True]

    async def taken_by_w2() -> tuple[str, str] | None:
        res = await store.acquire(run_id, "w2", ttl_ms=5000)
        return res if res[0] == "acquired" else None

    _, new_epoch = await wait_for(taken_by_w2, "w1's lease to expire", timeout=5)
    assert int(new_epoch) > int(old_epoch), "a takeover gets a higher fencing token"

    stale = Op(event={"type": "marker", "by": "w1"})
    with pytest.raises(LeaseLostError):
        await store.append(run_id, "w1", old_epoch, [stale], claim_ttl_ms=1000)
    with pytest.raises(LeaseLostError):  # even w1 re-using the new epoch is not w2
        await store.append(run_id, "w1", new_epoch, [stale], claim_ttl_ms=1000)
    assert await store.renew([(run_id, old_epoch)], "w1", ttl_ms=200) == [False]
    assert await store.release(run_id, "w1", old_epoch, last_seen="", status="waiting") == 0

    fresh = Op(event={"type": "marker", "by": "w2"})
    assert len(await store.append(run_id, "w2", new_epoch, [fresh], claim_ttl_ms=1000)) == 1
    assert await store.renew([(run_id, new_epoch)], "w2", ttl_ms=5000) == [True]
    markers = [e.data["by"] for e in await store.read_log(run_id) if e.type == "marker"]
    assert markers == ["w2"], "only the current owner's write reached the log"
    info = await store.run_info(run_id)
    assert (info.owner, info.status) == ("w2", "running")


# -- 4. A durable sleep survives a worker restart ----------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_durable_sleep_survives_a_worker_restart(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path, sig: int
) -> None:
    path = tmp_path / "exec.log"
    a = await start_worker(spawn_worker, concurrency=2, lease_ttl=1.0)
    handle = await orch.start("durable.nap", str(path), 3.0)
    await wait_for_events(orch.store, handle.run_id, "timer_started", 1)
    if sig == signal.SIGTERM:  # graceful: wait until the sleeping run left memory
        info = await wait_for(
            lambda: _evicted(handle.info()), "the sleeping run to be evicted", timeout=5
        )
        assert info.status == "waiting"
        assert await stop_worker(a, sig) == 0
    else:
        assert await stop_worker(a, sig) == -signal.SIGKILL

    await start_worker(spawn_worker, concurrency=2, lease_ttl=1.0)
    assert await handle.result(timeout=20) == [0, 1]
    events = await orch.store.read_log(handle.run_id)
    (timer,) = [e for e in events if e.type == "timer_started"]
    assert [e.type for e in events].count("timer_fired") == 1
    recorded = await assert_recorded_once(orch.store, handle.run_id)
    second = next(e for e in recorded.values() if e.data["result"] == 1)
    assert second.data["started_ms"] >= timer.data["due_ms"], "woke before the timer was due"
    assert Counter(i for i, _ in executions(path)) == {0: 1, 1: 1}, "nothing ran twice"


async def _evicted(info_coro: Any) -> Any:
    info = await info_coro
    return info if (info.status, info.owner) == ("waiting", "") else None


# -- 5. A signal reaches a run that no worker holds --------------------------------------
async def test_signal_to_an_evicted_run_with_no_worker_alive(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "exec.log"
    a = await start_worker(spawn_worker, concurrency=2, lease_ttl=1.0)
    handle = await orch.start("durable.approval", str(path))
    await wait_for(lambda: _evicted(handle.info()), "the waiting run to be evicted", timeout=10)
    assert await stop_worker(a) == -signal.SIGKILL

    payload = {"approved": True, "by": "ada", "note": "ship it"}
    await handle.signal("approve", payload)
    info = await handle.info()
    assert (info.status, info.owner) == ("waiting", ""), "no one holds it; the log keeps it"

    await start_worker(spawn_worker, concurrency=2, lease_ttl=1.0)
    assert await handle.result(timeout=20) == {"first": 0, "decision": payload}
    events = await orch.store.read_log(handle.run_id)
    assert [e.type for e in events].count("signal_taken") == 1
    await assert_recorded_once(orch.store, handle.run_id)
    assert Counter(i for i, _ in executions(path)) == {0: 1}, "replay did not re-run step 0"


# -- Regression: a dead owner's local step whose claim outlives its lease -------------
# (Once dropped on takeover: the re-dispatch found the claim 'busy' and gave up.)
async def test_takeover_runs_a_local_activity_once_the_dead_claim_expires(
    store: Store, tmp_path: Path
) -> None:
    run_id, path, seq = "orphan", str(tmp_path / "exec.log"), "0.0.0"
    args = [1, path, 0.0]
    await store.create_run(
        run_id, workflow="durable.fan_out", input_json=serde.dumps({"args": args, "kwargs": {}})
    )
    # A "ghost" owner schedules step 0 to run locally, then dies: in the real engine its
    # claim is renewed after its lease, so it always outlives the lease by a little;
    # here by 500 ms, to hit that window deterministically.
    _, epoch = await store.acquire(run_id, "ghost", ttl_ms=100)
    scheduled = {"type": "activity_scheduled", "seq": seq, "name": "durable.mark"}
    scheduled |= {"dispatch": "local", "args": [0, path, 0.0], "kwargs": {}, "ts": now_ms()}
    op = Op(event=scheduled, mode="sched", seq=seq, claim=True)
    await store.append(run_id, "ghost", epoch, [op], claim_ttl_ms=600)
    worker = Worker(store, modules=[durable_workflows], lease_ttl=1.0)
    async with running(worker):

        async def completed() -> bool:
            return (await store.run_info(run_id)).status == "completed"

        await wait_for(completed, "the orphaned step to run once its claim lapsed", timeout=5)
    assert (await store.run_info(run_id)).result == [0]
    assert Counter(i for i, _ in executions(Path(path))) == {0: 1}
