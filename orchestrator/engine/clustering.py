"""Redis Cluster: telling a cluster URL apart, and redis-py's cluster client as
taskloom uses it.

A cluster is named by a URL scheme, ``redis+cluster://HOST:PORT`` (``rediss+cluster://``
with TLS), in the shape of the ``redis+sentinel://`` that several Redis libraries
accept, so one setting (``TASKLOOM_REDIS_URL``) says everything; or by a plain
``redis://`` / ``rediss://`` URL, as a managed service hands out for its configuration
endpoint (ElastiCache, MemoryDB), with ``TASKLOOM_REDIS_CLUSTER=1``. Any node of the
cluster will do: the client discovers the others (``CLUSTER SLOTS``).

Every script and transaction of taskloom's touches one hash slot (keys of a run share
``{run_id}``; see ``engine/keys.py``); pipelines over several slots go through the
cluster client's own pipelining, which sends each node its commands.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MaxConnectionsError,
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
)

from taskloom.engine.refusals import Where, not_a_cluster, refusal, refused_replies
from taskloom.errors import ConfigurationError, RedisRefusedError
from taskloom.luascripts import queued_keys

__all__ = [
    "CLUSTER_SCHEMES",
    "MAX_IN_FLIGHT",
    "ClusterClient",
    "cluster_url",
    "is_cluster",
    "seed_nodes",
    "wait_for_fsync",
]

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that name a Redis Cluster, and the plain scheme each stands for."""
MAX_IN_FLIGHT = 256
"""Commands and pipelines one cluster client has out at once (unless the URL's
``max_connections`` says fewer); past it callers wait their turn: redis-py's cluster
client fails a caller at once with ``MaxConnectionsError`` once a node has
``max_connections``, and each command or pipeline holds at most one connection of a
node."""


def cluster_url(url: str, *, cluster: bool | None = None) -> tuple[str, bool]:
    """``(url redis-py understands, whether it names a cluster)``: a
    ``redis+cluster://`` URL, or any URL with ``cluster=True``.

    Raises :class:`~taskloom.errors.ConfigurationError` for ``cluster=False`` with a
    cluster scheme, or a cluster URL naming a database other than 0 or a unix socket
    (a cluster has only database 0, and no sockets)."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if plain is None:
        return url, bool(cluster) and sep == "://"
    if cluster is False:
        raise ConfigurationError(
            f"the Redis URL says {scheme}:// but TASKLOOM_REDIS_CLUSTER says no cluster: "
            f"unset TASKLOOM_REDIS_CLUSTER, or use {plain}:// for a single Redis"
        )
    path = rest.partition("?")[0].partition("/")[2]
    if path not in ("", "0"):
        raise ConfigurationError(
            f"a Redis Cluster has only database 0; the Redis URL names /{path}: drop it "
            f"({scheme}://HOST:PORT)"
        )
    return f"{plain}://{rest}", True


def seed_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``(the URL naming its first node only, the other nodes)`` of a cluster URL that
    names several, ``redis://USER:PASSWORD@HOST1:PORT1,HOST2:PORT2``: the client starts
    from whichever answers, so a process can start while the node named first is down
    (redis-py's ``startup_nodes``). A URL naming one node comes back as it is."""
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    user, at, hosts = authority.rpartition("@")
    first, *others = hosts.split(",")
    seeds = []
    for node in others:
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"the Redis URL names the cluster node {node.strip()!r}: give each node as "
                f"HOST:PORT, e.g. redis+cluster://10.0.0.1:6379,10.0.0.2:6379"
            )
        seeds.append((host.strip("[]"), int(port)))
    return f"{scheme}{sep}{user}{at}{first}{tail}", seeds


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client."""
    return isinstance(client, RedisCluster)


def wait_for_fsync(client: RedisCluster, pipe: Any) -> None:
    """End ``pipe`` with one ``WAITAOF 1 0 0`` for each primary its commands go to.

    WAITAOF names no key, so redis-py would send it to one node of its choosing; and it
    waits only for the writes of its own connection. Sent here to each node the batch
    writes to, after the batch's commands in the pipeline, it travels on the connection
    that carried them (the cluster pipeline sends each node its commands in order, on
    one connection) and returns once they are on that node's disk. A slot that moves
    between here and the send (a resharding's MOVED) is not waited for."""
    nodes: dict[str, Any] = {}
    for key in queued_keys(pipe):
        node = client.nodes_manager.get_node_from_slot(client.keyslot(key))
        nodes.setdefault(node.name, node)
    for node in nodes.values():
        pipe.execute_command("WAITAOF", 1, 0, 0, target_nodes=node)


class ClusterClient(RedisCluster):
    """redis-py's cluster client that raises a refusal as a
    :class:`~taskloom.errors.RedisRefusedError` saying what to fix, and queues callers
    past :data:`MAX_IN_FLIGHT` instead of failing them."""

    where: Where = Where()
    _turns: asyncio.Semaphore | None = None

    def _gate(self) -> asyncio.Semaphore:
        if self._turns is None:
            most = int(self.connection_kwargs.get("max_connections") or MAX_IN_FLIGHT)
            self._turns = asyncio.Semaphore(max(1, min(most, MAX_IN_FLIGHT)))
        return self._turns

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        parent: Any = super()
        async with self._gate():
            try:
                return await _ride(lambda: parent.execute_command(*args, **options))
            except (RedisError, RedisClusterException) as exc:
                _raise_why(exc, self.where)

    async def initialize(self, *args: Any, **kwargs: Any) -> ClusterClient:
        """redis-py's topology (re)load, then the startup nodes it read ``CLUSTER SLOTS``
        from let go of their connections when they are not the nodes commands go to
        (redis-py keeps them apart): a node holds at most ``max_connections`` of ours."""
        await super().initialize(*args, **kwargs)
        manager = self.nodes_manager
        for name, node in list(manager.startup_nodes.items()):
            if manager.nodes_cache.get(name) is not node:
                await node.disconnect_free_connections()
        return self

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py's own error
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's


class _ClusterPipeline(ClusterPipeline):
    """A pipeline of :class:`ClusterClient`: a refusal raised or returned among the
    replies is a :class:`~taskloom.errors.RedisRefusedError`."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client: ClusterClient = self.cluster_client  # type: ignore[assignment]
        parent: Any = super()
        async with client._gate():
            try:
                replies: list[Any] = await parent.execute(raise_on_error, allow_redirections)
            except (RedisError, RedisClusterException) as exc:
                _raise_why(exc, client.where)
        return refused_replies(replies, client.where)


def _raise_why(exc: Exception, where: Where) -> NoReturn:
    """Raise what ``exc`` means (:func:`_why`), from it; ``exc`` itself when it is that."""
    why = _why(exc, where)
    if why is exc:
        raise exc
    raise why from exc


def _why(exc: Exception, where: Where) -> Exception:
    """What to raise for ``exc``: a refusal as :class:`~taskloom.errors.RedisRefusedError`;
    no node answering, or a slot no node serves, as the outage it is, a redis-py
    ``ConnectionError`` (redis-py raises them as ``RedisClusterException``, which is not a
    ``RedisError``: the worker's loops, which ride out Redis errors, died of them and a
    stopping worker crashed); anything else as it is."""
    refused = _refusal(exc, where)
    if refused is not None:
        return refused
    if isinstance(exc, RedisClusterUnreachableError | SlotNotCoveredError):
        return RedisConnectionError(f"the Redis Cluster is out of reach: {exc}")
    return exc


def _refusal(exc: BaseException, where: Where) -> RedisRefusedError | None:
    """A refusal in ``exc`` or among its causes (redis-py's cluster client wraps what
    the startup nodes said in a ``RedisClusterException``), or a cluster URL that
    names a Redis without cluster mode."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if "cluster mode is not enabled" in str(cause).lower():
            return not_a_cluster(where)
        refused = refusal(cause, where)
        if refused is not None:
            return refused
        seen.add(id(cause))
        cause = cause.__cause__
    return None


async def _ride(call: Any) -> Any:
    """``call()``, waiting for a node's connection when all of them are in use (a
    few blocking reads on top of :data:`MAX_IN_FLIGHT` commands can fill a node)."""
    delay = 0.001
    while True:
        try:
            return await call()
        except MaxConnectionsError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
