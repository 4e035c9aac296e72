"""A reply lost on the wire: redis-py sends the call again on a new connection (the
client taskloom makes retries connection errors), so the owner's append may run twice on
the server. The second must return the first reply, not write the events again.

Found by the Valkey SIGKILL test (issue 12): an append that claimed a step to run here
ran, its reply died with the server, the re-sent call found the step's claim taken (by
this very worker) and answered 'busy'; the step never ran and its run hung.

A relay on loopback (tests.helpers.Relay) forwards to the suite's Redis and, once armed,
swallows the reply to the first request that carries a marker and closes that connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from taskloom.engine.connection import make_client
from taskloom.engine.dlq import DeadLetter, DeadLetters
from taskloom.engine.store import Op, Store
from taskloom.errors import DeadLetterNotFoundError
from tests.helpers import Relay

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxied(redis_url: str, prefix: str) -> AsyncIterator[tuple[Store, Relay]]:
    async with Relay.to(redis_url) as proxy:
        db = int(urlparse(redis_url).path.lstrip("/") or 0)
        client = make_client(proxy.url(db))  # the client taskloom makes: it retries a lost call
        try:
            yield Store(client, prefix=prefix), proxy
        finally:
            await client.aclose()


async def owned_run(store: Store, run_id: str) -> str:
    """A new run whose lease worker ``w1`` holds; its epoch."""
    await store.create_run(run_id, workflow="wf", input_json='{"args":[],"kwargs":{}}')
    state, epoch = await store.acquire(run_id, "w1", ttl_ms=30_000)
    assert state == "acquired"
    return epoch


async def test_an_append_sent_again_returns_its_first_reply(
    proxied: tuple[Store, Relay],
) -> None:
    store, proxy = proxied
    epoch = await owned_run(store, "r1")
    scheduled = {"type": "activity_scheduled", "seq": "0.0.0", "name": "a", "ts": 1}

    proxy.arm(b"activity_scheduled")
    first = await store.append(
        "r1",
        "w1",
        epoch,
        [Op(event=scheduled, mode="sched", seq="0.0.0", claim=True)],
        claim_ttl_ms=30_000,
    )
    assert proxy.dropped == 1 and proxy.seen >= 2  # ran, its reply lost, sent again
    assert "-" in first[0], f"the step claimed to run here came back {first[0]!r}"
    assert await store.raw.get(store.keys.claim("r1", "0.0.0")) == "w1"

    completed = {"type": "run_completed", "result": 7, "ts": 2}
    proxy.arm(b"run_completed")
    await store.append(  # sent again after the run ended: still its first reply
        "r1", "w1", epoch, [Op(event=completed)], claim_ttl_ms=30_000, status="completed"
    )
    assert proxy.dropped == 2 and proxy.seen >= 4
    types = [e.type for e in await store.read_log("r1")]
    assert types == ["run_created", "activity_scheduled", "run_completed"]
    assert (await store.run_info("r1")).status == "completed"


async def test_a_new_append_is_not_taken_for_a_resent_one(
    proxied: tuple[Store, Relay],
) -> None:
    """Two appends of the same events are two writes: only a re-sent call is the same."""
    store, _ = proxied
    epoch = await owned_run(store, "r2")
    note = Op(event={"type": "note", "ts": 1})
    for _ in range(2):
        await store.append("r2", "w1", epoch, [note], claim_ttl_ms=30_000)
    assert [e.type for e in await store.read_log("r2")] == ["run_created", "note", "note"]


async def test_a_signal_sent_again_is_delivered_once(
    proxied: tuple[Store, Relay],
) -> None:
    store, proxy = proxied
    await store.create_run("r3", workflow="wf", input_json='{"args":[],"kwargs":{}}')
    event = {"type": "signal_received", "name": "go", "payload": 1, "ts": 1}
    proxy.arm(b"signal_received")
    first = await store.external("r3", event)
    assert proxy.dropped == 1 and proxy.seen >= 2
    # a caller that retries with its own request id: delivered once as well
    again = [await store.external("r3", event, request_id="req-7") for _ in range(2)]
    assert first.status == "ok" and again[0].entry_id == again[1].entry_id
    signals = [e for e in await store.read_log("r3") if e.type == "signal_received"]
    assert [e.id for e in signals] == [first.entry_id, again[0].entry_id]


async def test_a_redrive_sent_again_answers_with_the_entry_it_took(
    proxied: tuple[Store, Relay],
) -> None:
    """The operator whose redrive went through is not told it was "just taken" by
    someone else, and the activity goes back on its queue once."""
    store, proxy = proxied
    await store.create_run("r4", workflow="wf", input_json='{"args":[],"kwargs":{}}')
    dead_letters = DeadLetters(store)
    entry = DeadLetter(
        id="r4/0.0.0",
        run_id="r4",
        seq="0.0.0",
        activity="charge",
        queue="resend",
        args=[1],
        kwargs={},
        attempts=[{"attempt": 3, "error": {"type": "E", "message": "no"}}],
        error={"type": "E", "message": "no"},
        status="paused",
    )
    await dead_letters.put(entry)
    proxy.arm(b"dlqtaken")
    redriven = await dead_letters.redrive("r4/0.0.0")
    assert proxy.dropped == 1 and proxy.seen >= 2  # taken, its reply lost, sent again
    assert redriven.id == "r4/0.0.0"
    assert await store.raw.xlen(store.keys.queue("resend")) == 1
    assert await dead_letters.list() == []
    with pytest.raises(DeadLetterNotFoundError):  # a second operator's call is another call
        await dead_letters.redrive("r4/0.0.0")
