"""The terminal's rough edges a newcomer hit (issue 16), each through the command line as
a person runs it: a subprocess, or a pseudo-terminal (tests/terminal.py)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from taskloom import (
    ActivityError,
    Context,
    NonRetryableError,
    Orchestrator,
    RetryPolicy,
    activity,
    workflow,
)
from taskloom.agents.fake_llm import FakeLLM
from taskloom.pipeline.templates import BUILTIN_TEMPLATES
from taskloom.terminal.liveview import LiveView
from taskloom.testing.simulated import SimulatedTeam
from tests.conftest import embedded_env, stop_embedded, worker_env
from tests.helpers import ROOT, TASKLOOM, running, taskloom
from tests.terminal import Terminal

pytestmark = pytest.mark.anyio


@activity(name="tc.refused", retry=RetryPolicy(max_attempts=1))
async def refused(what: str) -> str:
    raise NonRetryableError(f"{what}: not like that")


@workflow(name="tc.recovers")
async def recovers(ctx: Context, what: str) -> str:
    """Its first step fails for good (a dead letter); the run goes on and completes."""
    try:
        return await ctx.run(refused, what)
    except ActivityError:
        return "done another way"


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


# -- bad URL, closed pipe ---------------------------------------------------------------
def test_a_bad_redis_url_is_an_error_naming_the_fix_not_a_traceback(redis_url: str) -> None:
    env = worker_env(redis_url, "unused")
    proc = taskloom("--redis-url", "notaurl", "runs", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--redis-url 'notaurl' is not a Redis URL" in proc.stderr
    assert "redis://" in proc.stderr
    env["TASKLOOM_REDIS_URL"] = "http://user:secret@example.invalid/"
    proc = taskloom("runs", env=env)
    assert proc.returncode == 2 and "TASKLOOM_REDIS_URL" in proc.stderr, proc.stderr
    assert "secret" not in proc.stderr, "the password stays out of the message"


@pytest.mark.parametrize("command", [["runs"], ["runs", "--json"], ["dlq", "list"]])
def test_a_closed_pipe_ends_quietly_with_the_sigpipe_status(
    redis_url: str, prefix: str, command: list[str]
) -> None:
    """`taskloom runs | head`: the reader is gone before anything is written (its end is
    closed first, so the write fails every time, not only when `head` wins a race)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*TASKLOOM, *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=worker_env(redis_url, prefix),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 141  # 128 + SIGPIPE, as `cat` or `git log` end


# -- tables with headers; dead letters of completed runs --------------------------------
async def test_dlq_list_has_a_header_and_hides_entries_of_runs_that_completed(
    orch: Orchestrator, make_worker: Any, redis_url: str, prefix: str
) -> None:
    worker = make_worker(workflows=[recovers], activities=[refused])
    async with running(worker):
        handle = await orch.start(recovers, "plan")
        assert await handle.result(timeout=30) == "done another way"
    env = worker_env(redis_url, prefix)
    shown = taskloom("dlq", "list", env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"{handle.run_id}/0" not in shown.stdout
    assert "1 entry of runs that completed anyway" in shown.stdout
    assert "--completed" in shown.stdout
    every = taskloom("dlq", "list", "--completed", env=env)
    header, row = _rows(every.stdout)
    assert header[:5] == ["entry", "status", "run", "activity", "tries"]
    assert row[:5] == [f"{handle.run_id}/0", "failed", "completed", "tc.refused", "1"]
    listed = json.loads(taskloom("dlq", "list", "--json", env=env).stdout)
    assert [(e["id"], e["run_status"]) for e in listed] == [(f"{handle.run_id}/0", "completed")]
    assert listed[0]["activity"] == "tc.refused", "the entry's own fields are all still there"


async def test_runs_has_a_header(orch: Orchestrator, redis_url: str, prefix: str) -> None:
    await orch.start("tc.never_served", run_id="tc-run-1")
    out = taskloom("runs", env=worker_env(redis_url, prefix))
    header, row = _rows(out.stdout)
    assert header == ["run", "status", "workflow", "started", "cost", "goal"]
    assert row[:3] == ["tc-run-1", "pending", "tc.never_served"]


# -- status and history, for a person and for scripts -----------------------------------
@pytest.fixture(scope="module")
def finished_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A demo run kept in its namespace (on its own embedded Redis), with a retry and
    an escalation: what `status` and `history` show of a real pipeline run."""
    data_dir = tmp_path_factory.mktemp("tc-demo")
    env = embedded_env(data_dir)
    try:
        demo = taskloom("demo", "--yes", "--keep", "--no-live", env=env, timeout=120)
        assert demo.returncode == 0, demo.stderr
        namespace = next(w for w in demo.stdout.split() if w.startswith("tl-demo-"))
        env["TASKLOOM_KEY_PREFIX"] = namespace
        (run,) = json.loads(taskloom("runs", "--json", env=env).stdout)
        yield {"env": env, "run_id": run["run_id"]}
    finally:
        stop_embedded(data_dir)  # the commands leave it running


def test_status_reads_as_a_summary_with_a_row_per_activity(
    finished_pipeline: dict[str, Any],
) -> None:
    env, run_id = finished_pipeline["env"], finished_pipeline["run_id"]
    out = taskloom("status", run_id, env=env).stdout
    assert '{"goal"' not in out, "not the result's JSON on one line"
    assert "goal:     Compare three vector databases" in out
    assert "escalation(s)" in out and "cost:     $" in out
    rows = {r[0]: r for r in _rows(out) if len(r) >= 5}
    assert rows["activity"] == [
        "activity", "role", "state", "attempts", "time", "verdict", "tokens", "cost",
    ]  # fmt: skip
    assert rows["qdrant"][1:4] == ["researcher", "done", "2"], "the retried activity"
    assert rows["milvus"][5] == "uncertain", "the verdict that escalated it"
    assert f"taskloom result {run_id}" in out


def test_status_json_keeps_its_fields_and_adds_the_activities(
    finished_pipeline: dict[str, Any],
) -> None:
    env, run_id = finished_pipeline["env"], finished_pipeline["run_id"]
    status = json.loads(taskloom("status", run_id, "--json", env=env).stdout)
    for key in ("run_id", "workflow", "status", "created_ms", "updated_ms", "owner", "result"):
        assert key in status
    assert status["result"]["answer"].startswith("[simulated]")
    by_id = {a["id"]: a for a in status["activities"]}
    assert by_id["qdrant"]["attempts"] == 2 and by_id["qdrant"]["verdict"] == "pass"
    assert by_id["milvus"]["verdict"] == "uncertain"
    assert all(a["tokens"] > 0 and a["seconds"] is not None for a in by_id.values())


def test_history_names_each_step_by_its_activity(finished_pipeline: dict[str, Any]) -> None:
    env, run_id = finished_pipeline["env"], finished_pipeline["run_id"]
    lines = taskloom("history", run_id, env=env).stdout.splitlines()
    assert lines[0].split() == ["time", "step", "activity", "what", "happened"]
    milvus = [ln for ln in lines if " 2.3." in ln]
    assert milvus and all("milvus" in ln for ln in milvus), lines
    assert any("retrying:" in ln for ln in lines if "qdrant" in ln)
    assert any("planner" in ln and "tokens" in ln for ln in lines)
    assert not any(ln.split()[0].endswith("-0") for ln in lines), "no stream ids"
    as_json = [
        json.loads(ln) for ln in taskloom("history", run_id, "--json", env=env).stdout.splitlines()
    ]
    assert as_json[0]["type"] == "run_created" and "-" in as_json[0]["id"]


# -- templates and roles -----------------------------------------------------------------
def test_templates_and_roles_list_what_exists(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = worker_env(redis_url, prefix)
    templates = taskloom("templates", env=env)
    assert templates.returncode == 0, templates.stderr
    rows = {r[0]: " ".join(r[1:]) for r in _rows(templates.stdout)}
    assert rows["template"] == "description"
    for t in BUILTIN_TEMPLATES:
        assert rows[t.name] == t.description
    (tmp_path / "tc_agents.py").write_text(
        "from taskloom import Agent\n"
        "pricer = Agent(name='pricer', role='a pricer who states the cost of each option')\n"
    )
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    roles = taskloom("roles", "--import", "tc_agents", env=env)
    assert roles.returncode == 0, roles.stderr
    listed = {r[0]: r for r in _rows(roles.stdout)}
    assert listed["role"][:3] == ["role", "output", "tools"]
    assert {"researcher", "analyst", "writer", "reviewer", "pricer"} <= set(listed)
    assert "a pricer who states the cost of each option" in roles.stdout
    assert not any(name.startswith("taskloom.") for name in listed), "no internal agents"
    as_json = json.loads(taskloom("roles", "--json", env=env).stdout)
    assert {r["name"] for r in as_json} == {"researcher", "analyst", "writer", "reviewer"}


# -- errors worded for the command line --------------------------------------------------
def test_errors_name_the_flag_or_variable_to_set(redis_url: str, prefix: str) -> None:
    env = {k: v for k, v in worker_env(redis_url, prefix).items() if k != "TASKLOOM_MODEL"}
    no_model = taskloom("run", "a goal", env=env)
    assert no_model.returncode == 2
    assert "--model" in no_model.stderr and "TASKLOOM_MODEL" in no_model.stderr
    assert "model='" not in no_model.stderr, no_model.stderr
    no_goal = taskloom("run", "  ", "--model", "openai:gpt-4.1-mini", env=env)
    assert no_goal.returncode == 2 and "submit()" not in no_goal.stderr
    assert 'taskloom run "' in no_goal.stderr, no_goal.stderr
    budget = taskloom("run", "a goal", "--budget-usd=-1", env=env)
    assert budget.returncode == 2 and "--budget-usd" in budget.stderr
    assert "budget_usd=" not in budget.stderr
    template = taskloom("run", "a goal", "--template", "nope", env=env)
    assert template.returncode == 2 and "research_report" in template.stderr
    assert "Template(" not in template.stderr, template.stderr


# -- the exit-3 hint -----------------------------------------------------------------------
def test_the_waiting_hint_offers_what_a_planner_item_takes_and_says_a_worker_must_run(
    redis_url: str, prefix: str
) -> None:
    bad = {"activities": [{"id": "a", "role": "nobody", "instructions": "do it"}]}
    with FakeLLM() as fake:
        fake.answer_with(SimulatedTeam(plans=[bad] * 20))
        env = worker_env(
            redis_url,
            prefix,
            OPENAI_BASE_URL=fake.openai_url,
            OPENAI_API_KEY="sk-test",
            TASKLOOM_MODEL="openai:gpt-4.1-mini",
        )
        proc = taskloom("run", "a goal", "--no-interactive", "--no-live", env=env, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (item,) = json.loads(taskloom("inbox", "list", "--json", env=env).stdout)
    assert f"taskloom inbox decide {item['id']} retry|reject" in proc.stdout
    assert f"taskloom inbox edit {item['id']}" in proc.stdout
    assert "approve" not in proc.stdout.split("waiting on a person")[-1], proc.stdout
    assert "only while a worker runs" in proc.stdout and "taskloom worker" in proc.stdout


# -- the live view and chat ----------------------------------------------------------------
def _screen(view: LiveView) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(view.render())
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_live_view_clips_the_goal_with_an_ellipsis_and_heads_every_column() -> None:
    goal = "Compare three vector databases for a ten-million-document search service, with costs"
    view = LiveView(goal, io.StringIO())
    plan = {"activities": [{"id": "a", "role": "writer", "instructions": "x", "inputs": []}]}
    view.update({"event": "planned", "version": 1, "by": "planner", "plan": plan})
    view.update({"event": "activity", "id": "a", "state": "escalated", "reason": "unsure"})
    shown = _screen(view)
    assert goal[:60] in shown and "…" in shown.splitlines()[0]
    header = next(ln for ln in shown.splitlines() if "activity" in ln and "role" in ln)
    assert header.split("┃")[-2].strip() == "note", header
    assert "(no goal given)" in _screen(LiveView("", io.StringIO()))


def test_a_long_note_keeps_the_live_view_readable_in_a_120_column_terminal() -> None:
    """Seen in tmux: the note column got 7 characters, so an escalation's reasons stood
    one word a line, ~25 lines for one row. The inputs wrap too now, and a note is at
    most NOTE_LIMIT characters (the decision prompt shows it whole)."""
    names = ("pgvector", "qdrant", "milvus")
    acts = [{"id": "requirements", "role": "analyst", "instructions": "x", "inputs": []}]
    acts += [
        {"id": n, "role": "researcher", "instructions": "x", "inputs": ["requirements"]}
        for n in names
    ]
    acts.append({"id": "recommendation", "role": "writer", "instructions": "x", "inputs": names})
    view = LiveView("a goal", io.StringIO())
    view.update({"event": "planned", "version": 1, "by": "planner", "plan": {"activities": acts}})
    for n in ("requirements", "pgvector"):
        view.update({"event": "activity", "id": n, "state": "running", "attempt": 1})
        done = {"state": "accepted", "tokens": 1234, "cost_usd": 0.0012, "by": "verifier"}
        view.update({"event": "activity", "id": n} | done)
    reason = "verification is uncertain: openai:gpt-4.1-mini scored 0.70; " + "one claim " * 20
    view.update({"event": "activity", "id": "milvus", "state": "escalated", "reason": reason})
    console = Console(file=io.StringIO(), width=120)
    console.print(view.render())
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all(len(line.rstrip()) <= 120 for line in lines)
    row = next(i for i, line in enumerate(lines) if "└ milvus " in line)
    below = [ln for ln in lines[row + 1 :] if ln.startswith("│") and ln.split("│")[1].strip() == ""]
    assert len(below) <= 4, "\n".join(lines)


@pytest.fixture
def chat_env(redis_url: str, prefix: str) -> Iterator[tuple[FakeLLM, dict[str, str]]]:
    with FakeLLM() as fake:
        env = worker_env(
            redis_url,
            prefix,
            OPENAI_BASE_URL=fake.openai_url,
            OPENAI_API_KEY="sk-test",
            TASKLOOM_MODEL="openai:gpt-4.1-mini",
            TERM="xterm",
        )
        yield fake, env


def test_the_clock_runs_while_planning_and_the_chat_table_is_titled_with_the_goal(
    chat_env: tuple[FakeLLM, dict[str, str]],
) -> None:
    fake, env = chat_env
    plan = {"activities": [{"id": "a", "role": "writer", "instructions": "x", "inputs": []}]}
    fake.answer_with(SimulatedTeam(plans=[plan], latency={"planner": 2.0}))
    term = Terminal([*TASKLOOM, "chat"], env=env)
    term.expect("you> ")
    term.send("a slowly planned report")
    # The table redraws 8 times a second: a header that lasts less (the plan, when the
    # work after it is quick) may never be drawn, so the test reads to the next prompt.
    seen = term.expect("you> ")
    assert "a slowly planned report — planning..." in seen
    assert re.search(r"0/0 done, 0 tokens, \$0\.0000, [1-9]\.\ds", seen), seen
    assert "a slowly planned report — integrated" in seen
    term.send("/quit")
    assert term.wait() == 0


def test_chat_resume_keeps_the_conversations_model(
    chat_env: tuple[FakeLLM, dict[str, str]],
) -> None:
    fake, env = chat_env
    plan = {"activities": [{"id": "a", "role": "writer", "instructions": "x", "inputs": []}]}
    team = SimulatedTeam(plans=[plan, plan])
    fake.answer_with(team)
    term = Terminal([*TASKLOOM, "chat", "--model", "openai:gpt-4o-mini"], env=env)
    term.expect("you> ")
    term.send("first question")
    term.expect("you> ")
    term.send("/quit")
    assert term.wait() == 0
    again = Terminal([*TASKLOOM, "chat", "--resume"], env=env)
    again.expect("you> ")
    again.send("/model")
    assert "model: openai:gpt-4o-mini" in again.expect("you> ")
    again.send("and a follow-up")
    again.expect("you> ")
    again.send("/quit")
    assert again.wait() == 0
    models = {r.model for kind in ("planner", "work") for r in team.requests[kind]}
    assert models == {"gpt-4o-mini"}, models
