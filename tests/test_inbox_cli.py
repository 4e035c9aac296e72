"""`taskloom inbox ...` against real runs waiting on real escalations."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from taskloom import Context, Orchestrator, workflow
from taskloom.pipeline.edits import schema_errors
from taskloom.terminal.cli import main
from tests.helpers import ROOT, running, wait_until

pytestmark = pytest.mark.anyio

Cli = Callable[..., Awaitable[tuple[int, str, str]]]


class Summary(BaseModel):
    title: str
    points: list[str]
    score: int | None = None


TEXT = {"type": "string"}
DECISIONS = ["approve", "edit", "reject", "retry", "replan"]


@workflow(name="inbox.ask")
async def ask(ctx: Context, title: str, assignee: str | None, sla: float | None) -> Any:
    decision = await ctx.escalate(
        title,
        context={"order": "A-17", "amount": 120},
        decisions=["approve", "reject"],
        assignee=assignee,
        group="billing",
        sla=sla,
    )
    return {"decision": decision.decision, "by": decision.by, "note": decision.note}


@workflow(name="inbox.activity")
async def activity(ctx: Context, structured: bool) -> Any:
    """Escalates as the pipeline does, and goes on with what the person decided."""
    output: Any = {"title": "Heat pumps", "points": ["cheap"]} if structured else "A draft."
    decision = await ctx.escalate(
        "Activity 'pricing' needs a decision: verification is uncertain",
        context={
            "goal": "A market report on heat pumps",
            "activity": {
                "id": "pricing",
                "role": "analyst",
                "instructions": "Find the prices of the top models.",
                "inputs": ["models"],
            },
            "output": output,
            "verdicts": [
                {
                    "verifier": "judge",
                    "status": "uncertain",
                    "score": 0.55,
                    "reasons": ["prices lack sources"],
                    "evidence": {"quote": "cheap"},
                    "feedback": "cite a source for each price",
                }
            ],
            "history": [
                {"attempt": 1, "output": "first try", "status": "fail", "feedback": "too short"}
            ],
            "reason": "verification is uncertain: prices lack sources",
            "output_schema": Summary.model_json_schema() if structured else TEXT,
        },
        decisions=DECISIONS,
        assignee="ana",
    )
    edited = decision.data["output"] if decision.decision == "edit" else None
    if structured and edited is not None:
        edited = Summary.model_validate(edited).model_dump(mode="json")
    return {"decision": decision.decision, "by": decision.by, "output": edited}


@workflow(name="inbox.parallel")
async def parallel(ctx: Context, n: int) -> Any:
    decisions = await ctx.gather(
        *(ctx.escalate(f"part {i}", context={"part": i}, assignee="bo") for i in range(n))
    )
    return [(d.decision, d.by, d.note) for d in decisions]


@pytest.fixture
def cli(redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``taskloom inbox ARGS`` in-process on this test's Redis: (exit code, out, err)."""

    async def run(*args: str) -> tuple[int, str, str]:
        argv = ["--redis-url", redis_url, "--key-prefix", prefix, "inbox", *args]
        code = await asyncio.to_thread(main, argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def open_items(orch: Orchestrator, n: int, **filters: Any) -> list[Any]:
    async def listed() -> list[Any]:
        tasks = await orch.human_tasks.list(**filters)
        return tasks if len(tasks) >= n else []

    return await wait_until(listed, f"{n} open items")


async def test_list_filters_json_and_show(orch: Orchestrator, make_worker: Any, cli: Cli) -> None:
    async with running(make_worker(workflows=[ask, activity])):
        refund = await orch.start(ask, "Refund 120 EUR?", "ana", 3600)
        await open_items(orch, 1)
        overdue = await orch.start(ask, "Close the account?", "bo", 0.001)
        pipeline = await orch.start(activity, False)
        await open_items(orch, 3)

        code, out, _ = await cli("list")
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split() == ["ID", "AGE", "ASSIGNEE", "SLA", "TITLE"]
        assert f"{refund.run_id}/0" in lines[1] and "due in 59m" in lines[1]
        assert "Refund 120 EUR?" in lines[1] and "ana (billing)" in lines[1]
        assert f"{overdue.run_id}/0" in lines[2] and "OVERDUE by" in lines[2]
        assert lines[-1] == "3 open items"

        code, out, _ = await cli("list", "--json")
        items = json.loads(out)
        assert [i["id"] for i in items] == [f"{r.run_id}/0" for r in (refund, overdue, pipeline)]
        assert items[0]["context"] == {"order": "A-17", "amount": 120}
        assert items[2]["decisions"] == DECISIONS

        _, out, _ = await cli("list", "--assignee", "bo", "--json")
        assert [i["run_id"] for i in json.loads(out)] == [overdue.run_id]
        _, out, _ = await cli("list", "--run", pipeline.run_id)
        assert out.splitlines()[-1] == "1 open item (3 open in all)"
        _, out, _ = await cli("list", "--older-than", "1h", "--json")
        assert json.loads(out) == []
        _, out, _ = await cli("list", "--limit", "2")
        assert out.splitlines()[-1] == "2 open items shown of 3 open in all (--limit to see more)"
        code, _, err = await cli("list", "--status", "decided")
        assert code == 2 and "needs --run RUN_ID" in err

        code, out, _ = await cli("show", f"{pipeline.run_id}/0")
        assert code == 0
        for expected in [
            "goal:\n  A market report on heat pumps",
            "activity: pricing (role analyst)\n  Find the prices of the top models.",
            "inputs: models",
            "reason:\n  verification is uncertain: prices lack sources",
            "output:\n  A draft.",
            "  - judge: uncertain (score 0.55)\n      · prices lack sources",
            "feedback: cite a source for each price",
            "  - attempt 1: fail\n      feedback: too short\n      output: first try",
            "decisions: approve, edit, reject, retry, replan",
            "assignee:  ana",
            "output type: text",
        ]:
            assert expected in out, expected

        _, out, _ = await cli("show", f"{refund.run_id}/0")
        assert '"order": "A-17"' in out and "context:" in out and "SLA:" in out
        _, out, _ = await cli("show", f"{refund.run_id}/0", "--json")
        assert json.loads(out)["title"] == "Refund 120 EUR?"
        code, _, err = await cli("show", "nope/0")
        assert code == 2 and "no inbox item 'nope/0'" in err and "taskloom inbox list" in err


async def test_decide_once_and_a_second_decision_is_refused(
    orch: Orchestrator, make_worker: Any, cli: Cli
) -> None:
    async with running(make_worker(workflows=[ask])):
        handle = await orch.start(ask, "Refund 120 EUR?", "ana", None)
        await open_items(orch, 1)
        task_id = f"{handle.run_id}/0"

        code, _, err = await cli("decide", task_id, "retry")
        assert code == 2
        assert "'retry' is not a decision of" in err and "one of: approve, reject" in err
        assert (await orch.human_tasks.get(task_id)).status == "open"
        code, _, err = await cli("decide", "no-such-run/0", "approve")
        assert code == 2 and "taskloom inbox list" in err

        code, out, _ = await cli("decide", task_id, "approve", "--by", "ana", "--note", "ok")
        assert code == 0 and out.startswith(f"decided approve on {task_id}")
        assert await handle.result(timeout=10) == {"decision": "approve", "by": "ana", "note": "ok"}

        code, out, err = await cli("decide", task_id, "reject", "--by", "bo")
        assert code == 2 and out == ""
        assert f"{task_id} was already decided: 'approve' by ana at " in err
        assert "UTC (note: ok); nothing changed" in err and "Traceback" not in err
    task = await orch.human_tasks.get(task_id)
    assert task.decision is not None and task.decision["decision"] == "approve"
    events = [e.type for e in await orch.store.read_log(handle.run_id)]
    assert events.count("human_decided") == 1

    code, out, _ = await cli("list", "--run", handle.run_id, "--status", "decided")
    assert code == 0 and "STATUS" in out and "decided" in out.splitlines()[1]


async def test_batch_decisions_of_one_run(orch: Orchestrator, make_worker: Any, cli: Cli) -> None:
    async with running(make_worker(workflows=[parallel])):
        first = await orch.start(parallel, 3)
        second = await orch.start(parallel, 2)
        await open_items(orch, 5)
        ids = [t.id for t in await orch.human_tasks.list(run_id=first.run_id)]
        other = (await orch.human_tasks.list(run_id=second.run_id))[0].id

        code, _, err = await cli("decide", ids[0], other, "approve")
        assert code == 2 and "items of one run" in err and second.run_id in err
        assert await orch.human_tasks.count_open() == 5, "nothing was decided"

        code, out, _ = await cli("decide", *ids[:2], "approve", "--by", "cy", "--note", "fine")
        assert code == 0 and len(out.splitlines()) == 2
        code, _, err = await cli("decide", *ids, "reject", "--by", "cy")
        assert code == 2 and "nothing was decided" in err and err.count("already decided") == 2
        assert (await orch.human_tasks.get(ids[2])).status == "open"
        code, out, _ = await cli("decide", ids[2], "reject", "--by", "cy")
        assert code == 0
        assert await first.result(timeout=10) == [
            ["approve", "cy", "fine"],
            ["approve", "cy", "fine"],
            ["reject", "cy", ""],
        ]

        code, out, _ = await cli("decide", "--run", second.run_id, "reject", "--by", "dee")
        assert code == 0 and out.count("decided reject on") == 2
        assert await second.result(timeout=10) == [["reject", "dee", ""]] * 2
        code, _, err = await cli("decide", "--run", second.run_id, "approve", "--by", "dee")
        assert code == 2 and "no open inbox items" in err
        code, _, err = await cli("decide", ids[0], "edit")
        assert code == 2 and "taskloom inbox edit" in err


async def test_edit_from_a_file(
    orch: Orchestrator, make_worker: Any, cli: Cli, tmp_path: Path
) -> None:
    async with running(make_worker(workflows=[activity])):
        handle = await orch.start(activity, True)
        (task,) = await open_items(orch, 1)
        bad = tmp_path / "bad.json"
        for text, error in [
            ('{"title": "x",', "not JSON: Expecting"),
            ('{"title": 3, "points": "a", "extra": 1}', "title: expected string, got integer"),
            ('{"title": "x"}', "points: missing (required)"),
            ('{"title": "x", "points": ["a", 2]}', "points[1]: expected string, got integer"),
            ('{"title": "x", "points": [], "score": "high"}', "score: expected integer, got"),
            ('{"title": "x", "points": [], "score": NaN}', "NaN is not a JSON number"),
        ]:
            bad.write_text(text)
            code, out, err = await cli("edit", task.id, "--file", str(bad), "--by", "ana")
            assert code == 2 and error in err, err
            assert "the output (JSON Summary) is not valid; nothing recorded" in err
        assert (await orch.human_tasks.get(task.id)).status == "open"

        good = tmp_path / "good.json"
        good.write_text(json.dumps({"title": "Heat pumps", "points": ["A: 9k EUR"], "score": 4}))
        code, out, _ = await cli("edit", task.id, "--file", str(good), "--by", "ana")
        assert code == 0 and "recorded the new output as ana's decision" in out
        result = await handle.result(timeout=10)
    assert result == {
        "decision": "edit",
        "by": "ana",
        "output": {"title": "Heat pumps", "points": ["A: 9k EUR"], "score": 4},
    }
    code, _, err = await cli("edit", task.id, "--file", str(good), "--by", "bo")
    assert code == 2 and "already decided: 'edit' by ana" in err


def editor(tmp_path: Path, *outputs: str) -> Path:
    """A fake $EDITOR: copies what it was given to seen-N, then writes outputs[N]."""
    tmp_path.mkdir()
    for i, text in enumerate(outputs):
        (tmp_path / f"out-{i}").write_text(text)
    script = tmp_path / "editor.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'cd "{tmp_path}"\n'
        "n=$(ls seen-* 2>/dev/null | wc -l | tr -d ' ')\n"
        'cp "$1" "seen-$n"\n'
        'cat "out-$n" > "$1"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


class Terminal(io.StringIO):
    """Standard input as a person at a terminal types it."""

    def isatty(self) -> bool:
        return True


async def test_edit_in_the_editor(
    orch: Orchestrator,
    make_worker: Any,
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    prefix: str,
) -> None:
    async with running(make_worker(workflows=[activity])):
        first = await orch.start(activity, False)
        (task,) = await open_items(orch, 1)

        # Not at a terminal: an invalid edit is refused outright.
        monkeypatch.setenv("EDITOR", str(editor(tmp_path / "a", "  \n")))
        code, _, err = await cli("edit", task.id, "--by", "ana")
        assert code == 2 and "the output is empty" in err
        assert (tmp_path / "a" / "seen-0").read_text() == "A draft."
        assert (await orch.human_tasks.get(task.id)).status == "open"

        # At a terminal: the errors are shown, the editor opens again, the fix is kept.
        monkeypatch.setenv("EDITOR", str(editor(tmp_path / "b", "\n", "The final text.\n")))
        monkeypatch.setattr("sys.stdin", Terminal("y\n"))
        code, out, err = await cli("edit", task.id, "--by", "ana", "--note", "tightened")
        assert code == 0, err
        assert "the output is empty" in err and "re-open the editor?" in out
        assert (tmp_path / "b" / "seen-1").read_text() == "\n", "the second round sees the first"
        result = await first.result(timeout=10)
        assert result == {"decision": "edit", "by": "ana", "output": "The final text."}

        # Leaving the file as it was records nothing.
        second = await orch.start(activity, True)
        (task,) = await open_items(orch, 1)
        monkeypatch.setenv("EDITOR", "true")
        code, _, err = await cli("edit", task.id, "--by", "ana")
        assert code == 1 and "unchanged; nothing recorded" in err
        monkeypatch.setenv("EDITOR", "false")
        code, _, err = await cli("edit", task.id, "--by", "ana")
        assert code == 2 and "exited with status 1" in err
        assert (await orch.human_tasks.get(task.id)).status == "open"

        # Someone decides while the editor is open: the edit is refused, not applied.
        racer = tmp_path / "racer.sh"
        racer.write_text(
            "#!/bin/sh\n"
            f'PYTHONPATH="{ROOT}" "{sys.executable}" -m taskloom.terminal.cli --redis-url '
            f'"{redis_url}" --key-prefix "{prefix}" inbox decide "{task.id}" reject --by bo\n'
            """printf '{"title": "t", "points": []}' > "$1"\n"""
        )
        racer.chmod(racer.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("EDITOR", str(racer))
        code, _, err = await cli("edit", task.id, "--by", "ana")
        assert code == 2 and "already decided: 'reject' by bo" in err
        assert await second.result(timeout=10) == {"decision": "reject", "by": "bo", "output": None}


async def test_edit_needs_an_item_that_offers_it(
    orch: Orchestrator, make_worker: Any, cli: Cli
) -> None:
    async with running(make_worker(workflows=[ask])):
        handle = await orch.start(ask, "Refund?", None, None)
        (task,) = await open_items(orch, 1)
        code, _, err = await cli("edit", task.id, "--by", "ana")
        assert code == 2 and "'edit' is not a decision of" in err
        await orch.human_tasks.decide(task.id, "approve", by="ana")
        await handle.result(timeout=10)


def test_schema_errors_cover_what_pydantic_generates() -> None:
    class Item(BaseModel):
        name: str
        qty: int = 1

    class Order(BaseModel):
        items: list[Item]
        note: str | None = None
        kind: str = "std"

    schema = Order.model_json_schema()
    assert schema_errors({"items": [{"name": "a", "qty": 2}], "note": None}, schema) == []
    assert schema_errors({"items": [{"qty": "2"}], "note": 5}, schema) == [
        "items[0].name: missing (required)",
        "items[0].qty: expected integer, got string",
        "note: matches none of the allowed forms (note: expected string, got integer; "
        "or note: expected null, got integer)",
    ]
    assert schema_errors([], schema) == ["(the whole value): expected object, got array"]
    strict = {
        "type": "object",
        "properties": {"n": {"type": "number", "minimum": 0}, "s": {"maxLength": 2}},
        "additionalProperties": False,
    }
    assert schema_errors({"n": -1, "s": "abc", "x": 1}, strict) == [
        "n: must be at least 0",
        "s: at most 2 characters (has 3)",
        "x: not an allowed field (allowed: n, s)",
    ]
    assert schema_errors("", {"type": "string", "enum": ["a"]}) == [
        '(the whole value): must be one of "a"'
    ]
