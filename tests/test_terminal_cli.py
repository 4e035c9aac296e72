"""The terminal's rough edges a newcomer hit (issue 16), each through the command line as
a person runs it: a subprocess, or a pseudo-terminal (tests/terminal.py)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from taskloom import (
    ActivityError,
    Context,
    NonRetryableError,
    Orchestrator,
    RetryPolicy,
    activity,
    workflow,
)
from tests.conftest import worker_env
from tests.helpers import ROOT, TASKLOOM, running, taskloom

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
def finished_pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A demo run kept in its namespace (on its own embedded Redis), with a retry and
    an escalation: what `status` and `history` show of a real pipeline run."""
    data_dir = tmp_path_factory.mktemp("tc-demo")
    env = {k: v for k, v in os.environ.items() if k not in ("TASKLOOM_REDIS_URL", "REDIS_URL")}
    env.update({"TASKLOOM_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)})
    demo = taskloom("demo", "--yes", "--keep", "--no-live", env=env, timeout=120)
    assert demo.returncode == 0, demo.stderr
    namespace = next(w for w in demo.stdout.split() if w.startswith("tl-demo-"))
    env["TASKLOOM_KEY_PREFIX"] = namespace
    (run,) = json.loads(taskloom("runs", "--json", env=env).stdout)
    return {"env": env, "run_id": run["run_id"]}


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
