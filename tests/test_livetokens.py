"""Reading live token streams as a page does: the end of the latest attempt's text
(bounded, read from the stream's end) and more of it for several steps at once."""

from __future__ import annotations

import asyncio

import pytest

from taskloom.engine.follow import StreamFollower
from taskloom.engine.store import Store
from taskloom.pipeline.livetokens import LiveText, LiveTokens

pytestmark = pytest.mark.anyio


async def test_the_latest_text_is_the_end_of_the_latest_attempt_however_long(store: Store) -> None:
    live = LiveTokens(store)
    first = live.sink("r1", "2.1", 1)
    for word in ("lost ", "words "):
        await first("lost " + word)
    await live.finish("r1", "2.1", 1, failed=True)
    retry = live.sink("r1", "2.1", 2)
    words = [f"w{n:04d} " for n in range(700)]  # 4,200 characters in 700 entries
    for word in words:
        await retry(word)

    text = await live.latest("r1", "2.1", tail=100)
    assert text.text == "".join(words)[-100:] and text.attempt == 2 and not text.ended
    whole = await live.latest("r1", "2.1", tail=10_000)
    assert whole.text == "".join(words)  # not a piece of the failed attempt
    nothing = await live.latest("r1", "9.9")
    assert nothing == LiveText() and nothing.cursor == "0-0"


@pytest.mark.parametrize("shared", [False, True], ids=["own-read", "follower"])
async def test_watching_several_steps_brings_each_ones_new_text_and_its_end(
    store: Store, shared: bool
) -> None:
    """On a read of its own, and through a StreamFollower (as the web's run pages do)."""
    follower = StreamFollower(store.client) if shared else None
    live = LiveTokens(store, follower=follower)
    a, b = live.sink("r2", "2.1", 1), live.sink("r2", "2.2", 1)
    await a("Once ")
    texts = {step: await live.latest("r2", step, tail=12) for step in ("2.1", "2.2")}
    assert await live.watch("r2", texts, block_ms=1) == []  # nothing new yet

    watching = asyncio.ensure_future(live.watch("r2", texts, block_ms=10_000))
    await b("Far ")  # wakes the wait
    assert await watching == ["2.2"]
    await a("upon a time")
    await live.finish("r2", "2.1", 1)
    assert await live.watch("r2", texts, block_ms=10_000) == ["2.1"]
    assert texts["2.1"].text == " upon a time" and texts["2.1"].ended  # the last 12 characters
    assert texts["2.2"].text == "Far " and not texts["2.2"].ended
    if follower is not None:
        assert follower.waiting == 0  # the reads that did not answer were given up
        await follower.aclose()
