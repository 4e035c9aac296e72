"""``taskloom worker --processes N``: N worker processes under one command, sharing the
queue; one that dies is started again; SIGTERM stops them all; none outlives the
command; a process refused for good ends the command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from taskloom import Orchestrator
from tests.conftest import worker_env
from tests.helpers import ROOT, TASKLOOM, eventually

pytestmark = pytest.mark.anyio


def _pool(redis_url: str, prefix: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [*TASKLOOM, "worker", "--processes", "2", "--concurrency", "4", *extra]
    with out.open("wb") as f:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=worker_env(redis_url, prefix, TASKLOOM_LEASE_TTL="1.0"),
        )


def _pids(out: Path) -> list[int]:
    return [int(p) for p in re.findall(r"worker process \d of 2: pid (\d+)", out.read_text())]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not reaped yet) is gone too
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_processes_share_the_queue_a_killed_one_is_started_again_sigterm_stops_all(
    orch: Orchestrator, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    out, log_path = tmp_path / "pool.log", tmp_path / "steps.log"
    pool = _pool(redis_url, prefix, out, "--import", "tests.worker_workflows")
    try:
        eventually(lambda: out.read_text().count(": ready, ") == 2, "both processes ready")
        first, second = _pids(out)
        handle = await orch.start("slow_fanout", 40, str(log_path))
        assert await handle.result(timeout=30) == list(range(40))
        ran_in = {int(line.split()[1]) for line in log_path.read_text().splitlines()}
        assert ran_in == {first, second}, "both processes took activities"

        os.kill(first, signal.SIGKILL)
        eventually(lambda: len(_pids(out)) == 3, "the killed process started again")
        assert "exited with code -9; starting another" in out.read_text()
        third = _pids(out)[2]
        eventually(lambda: out.read_text().count(": ready, ") == 3, "the new one ready")
        handle = await orch.start("slow_fanout", 8, str(tmp_path / "again.log"))
        assert await handle.result(timeout=30) == list(range(8))

        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0
        assert not _alive(second) and not _alive(third), "every process stopped with it"
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait(10)


def test_no_process_outlives_a_killed_command(redis_url: str, prefix: str, tmp_path: Path) -> None:
    out = tmp_path / "pool.log"
    pool = _pool(redis_url, prefix, out, "--import", "tests.worker_workflows")
    try:
        eventually(lambda: len(_pids(out)) == 2, "both processes started")
        children = _pids(out)
        pool.kill()  # SIGKILL: the command cannot stop them itself
        pool.wait(10)
        eventually(lambda: not any(map(_alive, children)), "its processes stopped too")
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait(10)


def test_a_process_refused_for_good_ends_the_command_with_its_code(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    out = tmp_path / "pool.log"
    pool = _pool(redis_url, prefix, out, "--import", "tests.no_such_module")
    try:
        assert pool.wait(30) == 2
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait(10)
    text = out.read_text()
    assert "exited with code 2 (refused, or an option it cannot serve" in text
    assert "tests.no_such_module" in text  # the process said why
    assert "starting another" not in text
