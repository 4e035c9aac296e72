"""The embedded Redis kept running between commands, and `taskloom stop`: real commands,
real redis-server processes, no mocks."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import redis

from taskloom.engine.idlestop import parse_watcher_name, pid_alive
from tests.conftest import embedded_env
from tests.helpers import eventually, taskloom

STARTED = "started the embedded Redis"


def server_pid(data_dir: Path) -> int:
    return int((data_dir / "redis.pid").read_text())


def watchers(data_dir: Path) -> list[int]:
    """The process ids of the idle watchers registered with the server in ``data_dir``."""
    with redis.Redis(unix_socket_path=str(data_dir / "redis.sock"), decode_responses=True) as c:
        names = [str(entry.get("name", "")) for entry in c.client_list()]
    return [parsed[0] for parsed in map(parse_watcher_name, names) if parsed is not None]


def test_a_second_command_reuses_the_server_the_first_one_left_running(
    embedded_dir: Path,
) -> None:
    env = embedded_env(embedded_dir)
    first = taskloom("runs", env=env)
    assert first.returncode == 0, first.stderr
    assert STARTED in first.stderr and "taskloom stop" in first.stderr
    pid = server_pid(embedded_dir)
    assert pid_alive(pid), "the server outlives the command that started it"
    (watcher,) = watchers(embedded_dir)

    second = taskloom("doctor", env=env)
    assert STARTED not in second.stderr, second.stderr
    assert f"store: embedded Redis in {embedded_dir} (pid {pid}), kept running" in second.stdout
    assert "`taskloom stop`" in second.stdout and "30m without a client" in second.stdout
    assert server_pid(embedded_dir) == pid and pid_alive(pid)
    assert watchers(embedded_dir) == [watcher], "the running watcher is kept, not doubled"
    log = (embedded_dir / "redis.log").read_text()
    assert log.count("Server initialized") == 1, "one server start, no reload of the AOF"


def test_stop_shuts_the_server_down_and_the_next_command_starts_a_new_one(
    embedded_dir: Path,
) -> None:
    env = embedded_env(embedded_dir)
    assert taskloom("runs", env=env).returncode == 0
    pid = server_pid(embedded_dir)
    (watcher,) = watchers(embedded_dir)
    with redis.Redis(unix_socket_path=str(embedded_dir / "redis.sock")) as client:
        client.set("written-before-stop", "kept")

    stop = taskloom("stop", env=env)
    assert stop.returncode == 0, stop.stderr
    assert f"stopped the embedded Redis in {embedded_dir} (pid {pid})" in stop.stdout
    assert not pid_alive(pid)
    assert not (embedded_dir / "redis.sock").exists()
    eventually(lambda: not pid_alive(watcher), "the idle watcher to end with its server")
    assert "User requested shutdown" in (embedded_dir / "redis.log").read_text()

    again = taskloom("stop", env=env)
    assert again.returncode == 0, again.stderr
    assert f"no embedded Redis runs in {embedded_dir}" in again.stdout

    restarted = taskloom("runs", env=env)
    assert restarted.returncode == 0 and STARTED in restarted.stderr, restarted.stderr
    assert server_pid(embedded_dir) != pid
    with redis.Redis(unix_socket_path=str(embedded_dir / "redis.sock")) as client:
        assert client.get("written-before-stop") == b"kept", "SHUTDOWN flushed the AOF"


def test_stop_leaves_a_redis_it_did_not_start_alone(embedded_dir: Path, redis_url: str) -> None:
    proc = taskloom("stop", env=embedded_env(embedded_dir, TASKLOOM_REDIS_URL=redis_url))
    assert proc.returncode == 2
    assert "stops only the embedded Redis" in proc.stderr and "leaves alone" in proc.stderr
    assert "Traceback" not in proc.stderr
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
    assert not (embedded_dir / "redis.sock").exists(), "and it started none to stop"


def test_the_next_command_recovers_from_a_killed_watcher_or_server(embedded_dir: Path) -> None:
    env = embedded_env(embedded_dir)
    assert taskloom("runs", env=env).returncode == 0
    pid = server_pid(embedded_dir)
    (first,) = watchers(embedded_dir)

    os.kill(first, signal.SIGKILL)
    eventually(lambda: not pid_alive(first), "the killed watcher to be gone")
    proc = taskloom("runs", env=env)
    assert proc.returncode == 0 and STARTED not in proc.stderr, proc.stderr
    assert server_pid(embedded_dir) == pid
    (second,) = watchers(embedded_dir)
    assert second != first, "a new watcher beside the same server"

    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not pid_alive(pid), "the killed server to be gone")
    eventually(lambda: not pid_alive(second), "its watcher to notice and end")
    proc = taskloom("runs", env=env)
    assert proc.returncode == 0, proc.stderr
    assert STARTED in proc.stderr
    assert server_pid(embedded_dir) != pid
    assert len(watchers(embedded_dir)) == 1


def test_the_latest_idle_setting_wins_and_zero_means_never(embedded_dir: Path) -> None:
    assert (
        taskloom("runs", env=embedded_env(embedded_dir, TASKLOOM_EMBEDDED_IDLE="2h")).returncode
        == 0
    )
    (hours,) = watchers(embedded_dir)
    never = taskloom("doctor", env=embedded_env(embedded_dir, TASKLOOM_EMBEDDED_IDLE="0"))
    assert "it never stops by itself" in never.stdout
    assert watchers(embedded_dir) == []
    eventually(lambda: not pid_alive(hours), "the replaced watcher to end")
    assert taskloom("runs", env=embedded_env(embedded_dir)).returncode == 0
    assert len(watchers(embedded_dir)) == 1
