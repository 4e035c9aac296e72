"""``taskloom chat`` and ``taskloom run`` driven through a real terminal (a pty), against
the fake LLM server on loopback and the test's Redis."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from taskloom.agents.fake_llm import FakeLLM
from taskloom.engine.keys import Keys
from taskloom.terminal import liveview
from taskloom.terminal.liveview import LiveView
from taskloom.testing.simulated import SimulatedTeam, task_of
from tests.cluster import sync_client
from tests.conftest import worker_env
from tests.helpers import TASKLOOM, act
from tests.helpers import taskloom as run_cli
from tests.terminal import Terminal

MODEL = "openai:gpt-4.1-mini"


def sent(team: SimulatedTeam, part: str) -> int:
    return sum(1 for r in team.requests.get("work", []) if task_of(r).endswith(f"part {part}"))


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture
def env(fake: FakeLLM, redis_url: str, prefix: str) -> dict[str, str]:
    return worker_env(
        redis_url,
        prefix,
        OPENAI_BASE_URL=fake.openai_url,
        OPENAI_API_KEY="sk-test",
        TASKLOOM_MODEL=MODEL,
        TERM="xterm",
    )


def taskloom(*args: str, env: dict[str, str]) -> Terminal:
    return Terminal([*TASKLOOM, *args], env=env)


def test_chat_answers_an_escalation_in_place_and_a_follow_up_reuses_finished_work(
    fake: FakeLLM, env: dict[str, str]
) -> None:
    unsure = {"judge": {"rubric": "sourced", "threshold": 0.8}}
    team = SimulatedTeam(
        plans=[
            {"activities": [act("a"), act("b", verify=unsure)]},
            {"activities": [act("a"), act("b", verify=unsure), act("c", "a")]},
        ],
        judge=lambda output, rubric: {"score": 0.7, "reasons": ["one claim unsourced"]},
    )
    fake.answer_with(team)
    term = taskloom("chat", env=env)
    term.expect("you> ")
    term.send("write a two-part report")
    shown = term.expect("decide> ")
    assert "escalated" in shown and "done" in shown  # the live table: a done, b waiting
    assert "one claim unsourced" in shown and "approve" in shown
    term.send("approve looks right")
    answer = term.expect("you> ")
    assert "taskloom> [simulated] Integrated answer." in answer
    assert "looks right: approve" in answer  # the person's decision, with their note
    term.send("add a part c")
    follow_up = term.expect("you> ")
    assert follow_up.count("reused: no new call") >= 2
    assert (sent(team, "a"), sent(team, "b"), sent(team, "c")) == (1, 1, 1)
    assert team.calls["judge"] == 1, "b's verdict was reused, not asked again"
    term.send("/cost")
    assert "spent $" in term.expect("you> ")
    term.send("/runs")
    listed = term.expect("you> ").splitlines()
    header = next(i for i, line in enumerate(listed) if line.split()[:4] == HEADER)
    rows = [
        line.split()
        for line in listed[header + 1 :]
        if line.strip().startswith(tuple("0123456789abcdef"))
    ]
    assert [r[1] for r in rows] == ["completed", "completed"], listed  # both runs, with status
    assert "write a two-part report" in listed[header + 1]  # and the goal
    term.send("/quit")
    term.expect("taskloom chat --resume")
    assert term.wait() == 0


HEADER = ["run", "status", "cost", "goal"]


def test_chat_resume_after_the_process_was_killed_finishes_the_run_without_resending(
    fake: FakeLLM, env: dict[str, str]
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a"), act("b", "a")]}], latency={"work": 0.5})
    fake.answer_with(team)
    term = taskloom("chat", env=env)
    term.expect("you> ")
    term.send("a slow report")
    deadline = time.monotonic() + 30
    while sent(team, "b") == 0 and time.monotonic() < deadline:  # a accepted, b under way
        time.sleep(0.02)
    term.kill()  # SIGKILL: the chat and its in-process worker die mid-run
    assert sent(team, "a") == 1
    again = taskloom("chat", "--resume", env=env)
    shown = again.expect("you> ")
    assert "was not finished; following it" in shown
    assert "user: a slow report" in shown and "[simulated] Integrated answer." in shown
    assert sent(team, "a") == 1, "a was recorded before the kill: never sent again"
    assert sent(team, "b") >= 1 and team.calls["planner"] == 1
    again.send("/quit")
    assert again.wait() == 0


def test_run_shows_the_live_view_and_leaves_an_escalation_in_the_inbox(
    fake: FakeLLM, env: dict[str, str]
) -> None:
    unsure = {"pii": "escalate"}
    team = SimulatedTeam(
        plans=[{"activities": [act("a", verify=unsure)]}],
        work=lambda task, fb: "mail ana@example.com",
    )
    fake.answer_with(team)
    term = taskloom("run", "contact list", "--no-interactive", env=env)
    screen = term.expect("waiting on a person")
    assert "plan v1 (planner)" in screen and "escalated" in screen
    hint = term.expect("`taskloom worker`")  # the item's own decisions, and who resumes it
    assert "taskloom inbox decide" in hint and "approve|" in hint
    assert term.wait() == 3


def test_run_answers_in_place_then_result_and_runs_show_the_answer_and_cost(
    fake: FakeLLM, env: dict[str, str]
) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a"), act("b", "a")]}])
    fake.answer_with(team)
    term = taskloom("run", "two linked parts", "--yes", env=env)
    screen = term.expect("cost: $")
    assert "2/2 done" in screen and "run completed" in screen
    run_id = screen.split("run ", 1)[1].split(":", 1)[0]
    assert term.wait() == 0
    result = run_cli("result", run_id, env=env)
    assert result.returncode == 0 and "[simulated] Integrated answer." in result.stdout
    runs = run_cli("runs", env=env)
    line = next(x for x in runs.stdout.splitlines() if x.startswith(run_id))
    assert "completed" in line and "$0.0" in line


def test_ctrl_c_during_run_asks_and_cancels_the_run(fake: FakeLLM, env: dict[str, str]) -> None:
    team = SimulatedTeam(plans=[{"activities": [act("a")]}], latency={"work": 30})
    fake.answer_with(team)
    term = taskloom("run", "a slow goal", env=env)
    run_id = term.expect(": a slow goal").split("run ", 1)[1].split(":", 1)[0]
    term.expect("running")  # the live table shows a under way
    os.killpg(term.proc.pid, signal.SIGINT)
    term.expect("cancel the run, or leave it running? [c/L]")
    term.send("c")
    term.expect(f"run {run_id} cancelled")
    assert term.wait() == 130
    status = run_cli("status", run_id, "--json", env=env)
    assert '"status": "cancelled"' in status.stdout


@pytest.mark.anyio
async def test_yes_never_answers_edit_or_retry_which_would_only_ask_again() -> None:
    from taskloom.engine.human import HumanTask
    from taskloom.terminal.console import auto_approve

    def task(*decisions: str) -> HumanTask:
        return HumanTask(id="r/0", run_id="r", seq="0", title="t", decisions=list(decisions))

    assert (await auto_approve(task("approve", "edit", "reject"))).decision == "approve"
    assert (await auto_approve(task("edit", "reject", "retry", "replan"))).decision == "reject"
    assert (await auto_approve(task("retry", "edit", "reject"))).decision == "reject"
    assert (await auto_approve(task("ship", "hold"))).decision == "ship"


def test_run_in_a_terminal_shows_markup_in_the_goal_and_answers_as_written(
    fake: FakeLLM, env: dict[str, str]
) -> None:
    """Square brackets are text on a terminal: a goal with ``[/]`` and ``[bold]``, and
    answers and verdicts with markup in them, show as written, no crash."""
    unsure = {"judge": {"rubric": "sourced", "threshold": 0.8}}
    team = SimulatedTeam(
        plans=[{"activities": [act("a", verify=unsure)]}],
        work=lambda task, fb: "see [red]x[/] and [link=http://a]y",
        judge=lambda output, rubric: {"score": 0.7, "reasons": ["unsure [/]"]},
    )
    fake.answer_with(team)
    goal = "compare [bold]a[/bold] and [/] b"
    term = taskloom("run", goal, "--yes", env=env)
    screen = term.expect("run completed")
    screen += term.expect("cost: $")
    code = term.wait()
    assert "Traceback" not in screen and "MarkupError" not in screen, screen
    assert code == 0, screen
    assert f"{goal} — plan v1 (planner)" in screen, "the goal as typed, in the table's title"
    assert "see [red]x[/] and [link=http://a]y" in screen


def test_the_live_view_styles_every_state_and_shows_text_as_written() -> None:
    """Each state an activity's row can take (the pipeline's, and queued) renders with
    a style of its own; ids, roles, notes and lines above the table stay text."""
    out = io.StringIO()
    view = LiveView("goal [/] with [bold]markup", out)
    plan = {"activities": [act("a", role="writer"), act("b", "a", role="[red]x")]}
    view.update({"event": "planned", "version": 1, "by": "planner [/]", "plan": plan})
    events = {
        "started": {"attempt": 1},
        "verified": {"status": "uncertain"},
        "retrying": {"feedback": "fix [/] this"},
        "escalated": {"reason": "unsure [bold]"},
        "decided": {"by": "ana [/]", "decision": "approve"},
        "accepted": {"by": "verifier [/]", "tokens": 3},
        "blocked": {"by": "a"},
        "cancelled": {},
        "reused": {},
        "decomposed": {"why": "too big [/]"},
    }
    assert set(events) == set(liveview._STATE), "every state the live view knows is tried"
    console = Console(file=io.StringIO(), width=200, force_terminal=True)
    for state, data in events.items():
        view.update({"event": "activity", "id": "b", "state": state} | data)
        row = view.rows["b"]
        assert row.state in liveview._STYLE, f"state {state!r} shows as {row.state!r}, unstyled"
        console.print(view.render())
    view.print("a line with [/] in it")
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "goal [/] with [bold]markup" in Text.from_ansi(shown).plain
    assert "fix [/] this" in Text.from_ansi(shown).plain
    assert "ana [/]: approve" in Text.from_ansi(shown).plain
    assert "a line with [/] in it" in out.getvalue()


def test_log_lines_go_to_a_file_not_into_the_prompt(
    fake: FakeLLM, env: dict[str, str], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """The chat's worker loses a run's lease mid-run (its epoch moved on, as when
    another worker took it over): the warning it logs goes to the data directory's log
    file, not onto the terminal the person types in; the chat says where it went."""
    team = SimulatedTeam(plans=[{"activities": [act("a")]}], latency={"work": 2.0})
    fake.answer_with(team)
    term = taskloom("chat", env=env | {"TASKLOOM_DATA_DIR": str(tmp_path)})
    term.expect("you> ")
    term.send("a slow report")
    client = sync_client(redis_url)
    deadline = time.monotonic() + 30
    while sent(team, "a") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    (run_id,) = client.zrange(Keys(prefix).index("running"), 0, -1)
    client.hincrby(Keys(prefix).meta(run_id), "epoch", 1)  # the lease is lost
    shown = term.expect("you> ")
    assert "[simulated] Integrated answer." in shown, "the run still finished"
    term.send("/quit")
    shown += term.expect("taskloom chat --resume")
    assert "lease lost" not in shown and "STALE" not in shown, shown
    term.expect("warning(s) logged to")
    assert term.wait() == 0
    # Worded "lease lost", or "STALE lease" when the loss is seen on a write first.
    logged = (tmp_path / "taskloom.log").read_text()
    assert f"run {run_id}" in logged and "WARNING" in logged, logged
