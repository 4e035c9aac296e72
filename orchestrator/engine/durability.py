"""Durability levels: what a write taskloom relies on has survived once Redis answers.

Redis acknowledges a write before it reaches disk: under ``appendfsync everysec`` a crash
of the server or its machine loses up to about a second of acknowledged writes. Two
levels (``TASKLOOM_DURABILITY``):

``ack`` (default)
    Redis's acknowledgment. A crash may lose the last second; an owner that finds Redis
    behind its own view of a run replays the run instead of writing past the hole
    (:class:`~taskloom.errors.StoreRolledBackError`), but runs created and outcomes
    recorded in that second are gone (their activities run again).
``fsync``
    A run's creation and every write that records or schedules a step are on the Redis
    host's disk before taskloom goes on: one ``WAITAOF 1 0`` after each batch of writes
    (Redis ≥ 7.2; the batch shares it), or nothing extra where the server fsyncs every
    write (``appendfsync always``; the embedded server is started so). Refused at
    connect time on a server that offers neither. On a Redis Cluster, every primary
    must offer one, and each batch waits on each node it wrote to.
"""

from __future__ import annotations

from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from taskloom.engine.clustering import is_cluster
from taskloom.errors import ConfigurationError, RedisRefusedError

__all__ = ["Durability", "appendfsync_policy", "fsync_mode", "server_version"]

Durability = Literal["ack", "fsync"]
WAITAOF_VERSION = (7, 2)


async def server_version(client: Redis, **target: Any) -> tuple[int, ...]:
    """The server's Redis version (what Valkey reports as ``redis_version`` too);
    ``target`` (``target_nodes=``) picks a node of a cluster."""
    info: dict[str, Any] = await client.info("server", **target)
    text = str(info.get("redis_version", ""))
    return tuple(int(p) for p in text.split(".") if p.isdigit())


async def appendfsync_policy(client: Redis, **target: Any) -> str | None:
    """``appendfsync`` of a server with AOF on (``None``: AOF off, or CONFIG refused);
    ``target`` (``target_nodes=``) picks a node of a cluster."""
    info: dict[str, Any] = await client.info("persistence", **target)
    if str(info.get("aof_enabled")) != "1":
        return None
    try:
        values: dict[Any, Any] = await client.config_get("appendfsync", **target)
    except (ResponseError, RedisRefusedError):  # CONFIG is not for every (ACL) user
        return None
    return next((str(v) for k, v in values.items() if str(k) == "appendfsync"), None)


async def fsync_mode(client: Redis) -> Literal["waitaof", "always"]:
    """How the ``fsync`` level is kept on this server: ``'waitaof'`` (Redis ≥ 7.2:
    WAITAOF after each batch) or ``'always'`` (the server fsyncs every write). On a
    Redis Cluster every primary is asked: ``'always'`` if each fsyncs every write, else
    ``'waitaof'`` if each can take WAITAOF.

    Raises:
        ConfigurationError: the server (or a primary) offers neither; the message says
            what to change, and on which node.
    """
    if not is_cluster(client):
        version, policy = await server_version(client), await appendfsync_policy(client)
        mode = _mode(version, policy)
        if mode is None:
            raise ConfigurationError(_unfit(version, policy))
        return mode
    modes: list[Literal["waitaof", "always"]] = []
    for node in client.get_primaries():  # type: ignore[attr-defined]
        version = await server_version(client, target_nodes=node)
        policy = await appendfsync_policy(client, target_nodes=node)
        mode = _mode(version, policy)
        if mode is None:
            raise ConfigurationError(f"on the cluster node {node.name}: {_unfit(version, policy)}")
        modes.append(mode)
    return "always" if all(m == "always" for m in modes) else "waitaof"


def _mode(version: tuple[int, ...], policy: str | None) -> Literal["waitaof", "always"] | None:
    if policy == "always":
        return "always"
    if version >= WAITAOF_VERSION and policy is not None:
        return "waitaof"
    return None


def _unfit(version: tuple[int, ...], policy: str | None) -> str:
    shown = ".".join(map(str, version)) or "unknown"
    aof = f"appendfsync {policy}" if policy else "AOF off (or CONFIG refused)"
    return (
        f"TASKLOOM_DURABILITY=fsync needs Redis 7.2 or newer with AOF on (for WAITAOF) or "
        f"a server with `appendfsync always`; this one is Redis {shown} with {aof}. "
        f"Upgrade Redis, set `appendonly yes` and `appendfsync always` in its redis.conf, "
        f"or choose TASKLOOM_DURABILITY=ack (a crash may lose about the last second)"
    )
