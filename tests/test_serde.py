"""JSON in and out of Redis: a part encoded once is spliced in, not encoded again."""

from __future__ import annotations

from typing import Any

import pytest

from taskloom import Context, Orchestrator, RunFailedError, workflow
from taskloom.engine import serde
from tests.helpers import running

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "value",
    [
        {"type": "run_completed", "ts": 5},
        {},
        {"type": 'é " \\ \n', "n": [1, 2.5, None, True]},
    ],
)
def test_a_spliced_part_reads_back_as_if_encoded_with_the_rest(value: dict[str, Any]) -> None:
    result = {"answer": "x" * 10, "rows": [{"a": 1}, {"b": [None, "ü"]}]}
    text = serde.dumps_spliced(value, "result", serde.dumps(result))
    assert serde.loads(text) == {**value, "result": result}
    # what the key held before is not kept: the spliced text is its value
    assert serde.loads(serde.dumps_spliced({**value, "result": 1}, "result", "2")) == {
        **value,
        "result": 2,
    }


@workflow(name="test.serde.big_result")
async def big_result(ctx: Context, n: int) -> dict[str, Any]:
    ctx.record("rows", [{"i": i, "text": "é" * 20} for i in range(n)])
    return {"rows": [{"i": i, "text": "ü" * 20} for i in range(n)], "n": n}


async def test_a_run_result_and_a_recorded_value_written_from_their_one_encoding_read_back(
    orch: Orchestrator,
) -> None:
    """The run's end writes its result (status and ``run_completed`` event) and a recorded
    value from the text made when each was checked: what is read back is the value."""
    async with running(orch.worker(workflows=[big_result])):
        handle = await orch.start(big_result, 2000)
        result = await handle.result(timeout=30)
    expected = {"rows": [{"i": i, "text": "ü" * 20} for i in range(2000)], "n": 2000}
    assert result == expected
    events = [e async for e in handle.events(follow=False)]
    ended = [e for e in events if e.type == "run_completed"]
    recorded = [e for e in events if e.type == "value_recorded"]
    assert len(ended) == 1 and ended[0].data["result"] == expected
    assert recorded[0].data["value"] == [{"i": i, "text": "é" * 20} for i in range(2000)]


@workflow(name="test.serde.bad_record")
async def bad_record(ctx: Context) -> str:
    ctx.record("bad", {"when": object()})
    return "unreachable"


async def test_a_value_that_cannot_be_stored_fails_the_run_saying_which(
    orch: Orchestrator,
) -> None:
    async with running(orch.worker(workflows=[bad_record])):
        handle = await orch.start(bad_record)
        with pytest.raises(RunFailedError, match=r"recorded value 'bad' cannot be stored"):
            await handle.result(timeout=30)
    events = [e async for e in handle.events(follow=False)]
    assert not [e for e in events if e.type == "value_recorded"]  # nothing half-written
