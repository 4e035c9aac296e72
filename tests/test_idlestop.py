"""A kept embedded Redis stops by itself once no client has used it for the idle period,
and never while a worker or the web inbox is connected: real processes, no mocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskloom import Orchestrator, Settings
from taskloom.engine.idlestop import WATCHER_PREFIX, pid_alive
from tests.conftest import embedded_env
from tests.helpers import eventually, start_taskloom, taskloom

pytestmark = pytest.mark.anyio

IDLE = "0.3"
"""Seconds: the watcher then polls every 0.05 s."""


def _polls(observer: redis.Redis) -> int:
    """CLIENT LIST calls the server has answered: one per poll of its watcher (nothing
    else here sends CLIENT LIST)."""
    stats = observer.info("commandstats")
    entry = stats.get("cmdstat_client|list") or stats.get("cmdstat_client") or {}
    return int(entry.get("calls", 0))


@pytest.fixture
def observer(embedded_dir: Path) -> Iterator[redis.Redis]:
    """A connection to the server that, by its name, does not count as use of it (as a
    monitoring tool may do): the test watches the watcher without keeping the server up."""
    client = redis.Redis(
        unix_socket_path=str(embedded_dir / "redis.sock"),
        client_name=f"{WATCHER_PREFIX}test-observer",
        decode_responses=True,
    )
    yield client
    client.close()


async def test_an_idle_server_stops_by_itself_and_keeps_what_was_recorded(
    embedded_dir: Path,
) -> None:
    settings = Settings(data_dir=embedded_dir, embedded_keep=True, embedded_idle=float(IDLE))
    async with Orchestrator(settings=settings) as orch:
        assert orch.embedded is not None and orch.embedded.started
        pid = orch.embedded.pid
        assert pid is not None
        run = await orch.start("recorded.before.idle", 41)
    eventually(lambda: not pid_alive(pid), "the server to stop once no client is connected")
    assert not (embedded_dir / "redis.sock").exists()
    log = (embedded_dir / "redis.log").read_text()
    assert f"no client for {IDLE} s: shutting down redis-server {pid}" in log
    assert "Calling fsync() on the AOF file" in log, "a clean SHUTDOWN"

    proc = taskloom("status", run.run_id, "--json", env=embedded_env(embedded_dir))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["run_id"] == run.run_id and status["workflow"] == "recorded.before.idle"


@pytest.mark.parametrize(
    ("command", "ready"),
    [(("worker",), "worker "), (("serve", "--port", "0"), "web inbox on ")],
    ids=["worker", "serve"],
)
def test_a_connected_worker_or_web_inbox_keeps_it_running(
    embedded_dir: Path, observer: redis.Redis, command: tuple[str, ...], ready: str
) -> None:
    env = embedded_env(
        embedded_dir, TASKLOOM_EMBEDDED_IDLE=IDLE, TASKLOOM_INBOX_TOKEN="inbox-token-" * 3
    )
    proc = start_taskloom(*command, env=env)
    try:
        assert proc.stdout is not None
        eventually(lambda: ready in proc.stdout.readline(), f"{command[0]} to start")
        pid = int((embedded_dir / "redis.pid").read_text())
        # Thirty polls of the watcher: at least five idle periods with the command connected.
        first = _polls(observer)
        eventually(lambda: _polls(observer) >= first + 30, "thirty polls of the idle watcher")
        assert pid_alive(pid), "a connected client keeps the server running"
        assert observer.ping()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    eventually(lambda: not pid_alive(pid), "the server to stop once the command is gone")
