"""The command line as a user meets it: README commands, demo, doctor, runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from taskloom.agents.fake_llm import FakeLLM
from taskloom.terminal.demo import demo_plan
from taskloom.testing.simulated import SimulatedTeam
from tests.conftest import embedded_env, worker_env
from tests.helpers import ROOT, start_taskloom, taskloom


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert first_block is not None
    demo_line, test_line = first_block.group(1).strip().splitlines()[:2]
    assert "taskloom demo" in demo_line.split("#")[0]
    assert "pytest" in test_line.split("#")[0]


def test_demo_runs_on_the_embedded_redis_and_leaves_it_to_the_next_commands(
    embedded_dir: Path,
) -> None:
    data_dir = embedded_dir
    proc = taskloom("demo", "--yes", "--keep", env=embedded_env(data_dir))
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATED" in proc.stdout and "run completed" in proc.stdout
    assert "qdrant: retrying" in proc.stdout, "one verification failure, fixed by a retry"
    assert "milvus: needs a person" in proc.stdout and "approve" in proc.stdout
    assert "cost: $" in proc.stdout
    assert f"embedded Redis in {data_dir}" in proc.stdout
    assert "kept running between commands" in proc.stdout and "taskloom stop" in proc.stdout
    assert "started the embedded Redis" in proc.stderr
    pid = int((data_dir / "redis.pid").read_text())
    assert _pid_alive(pid), "the embedded server is left running for the next command"
    # The run is still there afterwards (--keep), in the demo's own namespace, and its
    # history says who served each call; the commands reuse the demo's server.
    namespace = re.search(r"namespace: (tl-demo-\w+) ", proc.stdout)
    assert namespace is not None, proc.stdout
    served = re.search(
        r"model calls served by (openai http://127\.0\.0\.1:\d+/v1) \(\d+\)", proc.stdout
    )
    assert served is not None, proc.stdout
    runs = taskloom("--key-prefix", namespace[1], "runs", "--json", env=embedded_env(data_dir))
    assert runs.returncode == 0, runs.stderr
    assert "started the embedded Redis" not in runs.stderr
    listed = json.loads(runs.stdout)
    assert [r["status"] for r in listed] == ["completed"]
    history = taskloom(
        "--key-prefix", namespace[1], "history", listed[0]["run_id"], env=embedded_env(data_dir)
    )
    assert f"served by {served[1]}" in history.stdout and "agent planner answered" in history.stdout
    assert taskloom("runs", "--json", env=embedded_env(data_dir)).stdout.strip() == "[]"
    assert int((data_dir / "redis.pid").read_text()) == pid
    # The data survives the server's restart.
    assert taskloom("stop", env=embedded_env(data_dir)).returncode == 0
    again = taskloom("--key-prefix", namespace[1], "runs", "--json", env=embedded_env(data_dir))
    assert [r["status"] for r in json.loads(again.stdout)] == ["completed"], again.stderr


def test_demo_shares_no_work_with_a_worker_on_the_same_store(embedded_dir: Path) -> None:
    """A user's `taskloom worker`, configured for another OpenAI-compatible server,
    runs on the default embedded store while `taskloom demo` runs: the demo's model
    calls all go to its simulated team, none to that server, and the demo's namespace
    is gone afterwards."""
    data_dir = embedded_dir
    team = SimulatedTeam(plans=[demo_plan()])
    with FakeLLM() as foreign:
        foreign.answer_with(team)
        env = embedded_env(data_dir) | {
            "OPENAI_BASE_URL": foreign.openai_url,
            "OPENAI_API_KEY": "sk-foreign",
        }
        worker = start_taskloom("worker", env=env)
        try:
            assert worker.stdout is not None
            first = worker.stdout.readline()  # it started the store the demo then uses
            assert "started the embedded Redis" in first, first
            assert "worker " in worker.stdout.readline()  # serving the default namespace
            proc = taskloom("demo", "--yes", env=embedded_env(data_dir), timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert len(foreign.requests) == 0, f"the worker served {dict(team.calls)}"
            assert "run completed (simulated)" in proc.stdout
            assert "NOT simulated" not in proc.stdout
            runs = taskloom("runs", "--json", env=embedded_env(data_dir))
            assert json.loads(runs.stdout) == [], "nothing of the demo's in the default namespace"
            with redis.Redis(unix_socket_path=str(data_dir / "redis.sock")) as client:
                assert client.keys("tl:*"), "the worker's namespace is there"
                assert not client.keys("tl-demo-*"), "the demo dropped its namespace"
            assert not (data_dir / "demo").exists(), "and its blobs"
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def test_the_installed_command_imports_modules_from_the_current_directory(
    tmp_path: Path,
) -> None:
    """``taskloom roles --import myroles`` in a project directory, through the installed
    console script (whose sys.path holds its own bin directory, not the current one, as
    ``python -m`` would), with no PYTHONPATH and no Redis to reach: a catalog needs none."""
    (tmp_path / "myroles.py").write_text(
        "from taskloom import Agent\n"
        "scout = Agent(name='scout', role='finds sources', model='openai:gpt-4.1-mini')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TASKLOOM_REDIS_URL")}
    script = Path(sys.executable).parent / "taskloom"
    command = [str(script), "--redis-url", "redis://127.0.0.1:1/0", "roles"]
    done = subprocess.run(
        [*command, "--import", "myroles", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    roles = {r["name"]: r for r in json.loads(done.stdout)}
    assert roles["scout"]["description"] == "finds sources"
    assert "researcher" in roles  # the built-in roles beside the module's own


def test_doctor_json_against_the_machines_redis(redis_url: str, prefix: str) -> None:
    proc = taskloom("doctor", "--json", env=worker_env(redis_url, prefix))
    report = json.loads(proc.stdout)
    assert set(report) == {"checks", "ok"}
    assert [c["name"] for c in report["checks"]] == [
        "version",
        "persistence",
        "maxmemory-policy",
        "latency",
        "durability",
    ]
    for check in report["checks"]:
        assert set(check) == {"name", "ok", "detail", "fix"}
        assert check["ok"] or check["fix"], "every finding comes with its fix"
    assert proc.returncode == (0 if report["ok"] else 1)


def test_doctor_reports_an_unreachable_redis_with_exit_2(prefix: str) -> None:
    env = worker_env("redis://127.0.0.1:1/0", prefix)
    proc = taskloom("doctor", "--json", env=env, timeout=120)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["ok"] is False
    assert "cannot reach Redis" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["status", "no-such-run"], ["history", "no-such-run"]])
def test_unknown_run_is_a_clear_error_without_traceback(
    args: list[str], redis_url: str, prefix: str
) -> None:
    proc = taskloom(*args, env=worker_env(redis_url, prefix))
    assert proc.returncode == 2
    assert "no run 'no-such-run'" in proc.stderr and "Traceback" not in proc.stderr


def test_start_wait_with_a_worker_process(redis_url: str, prefix: str, spawn_worker) -> None:
    spawn_worker("taskloom.terminal.demo")
    env = worker_env(redis_url, prefix)
    proc = taskloom(
        "start", "demo.brief", '"pick a queue"', "--run-id", "cli-1", "--wait", "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["run_id"] == "cli-1" and out["result"]["review"]["ok"] is True
    hist = taskloom("history", "cli-1", "--json", env=env)
    types = [json.loads(line)["type"] for line in hist.stdout.splitlines()]
    assert types[0] == "run_created" and types[-1] == "run_completed"
    status = taskloom("status", "cli-1", "--json", env=env)
    assert json.loads(status.stdout)["status"] == "completed"


def test_result_waits_for_the_run_with_wait(redis_url: str, prefix: str, spawn_worker) -> None:
    env = worker_env(redis_url, prefix)
    started = taskloom("start", "demo.brief", '"pick a queue"', "--run-id", "cli-w", env=env)
    assert started.returncode == 0, started.stderr
    early = taskloom("result", "cli-w", "--wait", "--timeout", "0.5", env=env)
    assert early.returncode == 3 and "is pending after 0.5s" in early.stdout  # no worker yet
    spawn_worker("taskloom.terminal.demo")
    done = taskloom("result", "cli-w", "--wait", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["review"]["ok"] is True
    alone = taskloom("result", "cli-w", "--timeout", "5", env=env)
    assert alone.returncode == 2 and "--timeout goes with --wait" in alone.stderr


@pytest.mark.parametrize(
    ("args", "env_extra", "says"),
    [
        (["run", "a goal", "--model", "openai:gpt-4.1-mini"], {}, "export OPENAI_API_KEY="),
        (["run", "a goal", "--model", "gpt-4"], {}, "no provider prefix"),
        (["run", "a goal", "--model", "openai:gpt-9"], {"OPENAI_API_KEY": "x"}, "no price"),
        (["run", "a goal"], {}, "TASKLOOM_MODEL"),
        (["chat"], {}, "TASKLOOM_MODEL"),
        (["result", "no-such-run"], {}, "taskloom runs"),
    ],
)
def test_what_a_newcomer_gets_wrong_is_said_plainly_with_the_fix(
    args: list[str], env_extra: dict[str, str], says: str, redis_url: str, prefix: str
) -> None:
    env = worker_env(redis_url, prefix, **env_extra)
    for name in ("OPENAI_API_KEY", "TASKLOOM_MODEL", "ANTHROPIC_API_KEY"):
        if name not in env_extra:
            env.pop(name, None)
    proc = taskloom(*args, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr


def test_signal_history_follow_and_cancel_from_the_command_line(
    redis_url: str, prefix: str, spawn_worker: Any, tmp_path: Path
) -> None:
    spawn_worker("tests.durable_workflows")
    env = worker_env(redis_url, prefix)
    marks = str(tmp_path / "marks")
    started = taskloom("start", "durable.approval", json.dumps(marks), "--run-id", "sig-1", env=env)
    assert started.returncode == 0, started.stderr
    follower = start_taskloom("history", "sig-1", "--follow", env=env, stderr=subprocess.PIPE)
    signal_ = taskloom("signal", "sig-1", "approve", '{"by": "ana"}', env=env)
    assert signal_.returncode == 0, signal_.stderr
    out, err = follower.communicate(timeout=60)  # --follow returns when the run ends
    assert follower.returncode == 0, err
    assert "signal received" in out and "run completed" in out
    taskloom("start", "durable.approval", json.dumps(marks), "--run-id", "sig-2", env=env)
    cancel = taskloom("cancel", "sig-2", env=env)
    assert cancel.returncode == 0 and "cancel requested" in cancel.stdout
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = json.loads(taskloom("status", "sig-2", "--json", env=env).stdout)["status"]
        if status == "cancelled":
            break
        time.sleep(0.1)
    assert status == "cancelled"
    again = taskloom("cancel", "sig-2", env=env)
    assert again.returncode == 2 and "already ended; nothing to cancel\n" in again.stderr
    late = taskloom("signal", "sig-2", "approve", env=env)
    assert late.returncode == 2 and "already ended; nothing to signal\n" in late.stderr
    for wait in ([], ["--wait"], ["--wait", "--timeout", "5"]):
        gone = taskloom("result", "sig-2", *wait, env=env)
        assert gone.returncode == 1 and gone.stdout == "run sig-2 was cancelled: it has no result\n"
