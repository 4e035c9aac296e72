"""``taskloom doctor`` on a Redis Cluster: the cluster's own state (nodes, slots
covered, replicas), and every single-server check run on each node, one finding per
check with the nodes that fail it named.

Each node is checked through a view that sends INFO, CONFIG GET and PING to that node
only, so the checks of :mod:`taskloom.terminal.doctor` run on it unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from taskloom.terminal.doctor import Check

__all__ = ["NodeView", "check_cluster", "merge_checks", "node_rows"]

SLOTS = 16384


class NodeView:
    """One node of a cluster client, answering INFO, CONFIG GET and PING as a
    single-Redis client would."""

    def __init__(self, client: Any, node: Any) -> None:
        self._client = client
        self.node = node
        self.name = f"{node.host}:{node.port}"

    async def info(self, section: str | None = None, *args: Any, **kwargs: Any) -> Any:
        return await self._client.info(section, target_nodes=self.node)

    async def config_get(self, pattern: str = "*", *args: Any, **kwargs: Any) -> Any:
        return await self._client.config_get(pattern, target_nodes=self.node)

    async def ping(self, **kwargs: Any) -> Any:
        return await self._client.ping(target_nodes=self.node)


def _slot_count(client: Any) -> dict[str, int]:
    """``host:port`` of each master -> how many slots it serves, from the client's map
    of the cluster (read from CLUSTER SLOTS when it connected; the master first)."""
    served: dict[str, int] = {}
    for nodes in client.nodes_manager.slots_cache.values():
        if nodes:
            served[nodes[0].name] = served.get(nodes[0].name, 0) + 1
    return served


async def node_rows(client: Any) -> list[dict[str, Any]]:
    """One row per node: ``node``, ``role``, ``slots``, ``replicas`` (a master's),
    ``master`` (a replica's), ``aof``, ``appendfsync``, ``maxmemory_policy``."""
    slots = _slot_count(client)
    rows = []
    for node in client.get_nodes():
        view = NodeView(client, node)
        replication = await view.info("replication")
        persistence = await view.info("persistence")
        memory = await view.info("memory")
        policy = (await view.config_get("appendfsync")).get("appendfsync")
        role = str(replication.get("role", node.server_type or "?"))
        row: dict[str, Any] = {
            "node": view.name,
            "role": role,
            "slots": slots.get(view.name, 0),
            "aof": str(persistence.get("aof_enabled", "")) == "1",
            "appendfsync": policy,
            "maxmemory_policy": memory.get("maxmemory_policy"),
        }
        if role == "master":
            row["replicas"] = int(replication.get("connected_slaves", 0))
        else:
            row["master"] = f"{replication.get('master_host')}:{replication.get('master_port')}"
        rows.append(row)
    return rows


async def check_cluster(client: Any, rows: list[dict[str, Any]]) -> Check:
    """The cluster's state: every slot served, every master reachable; and how many
    masters have a replica (without one, a master lost is its slots' runs lost)."""
    info = await client.execute_command("CLUSTER INFO", target_nodes=client.get_random_node())
    if isinstance(info, str):
        info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    state, covered = info.get("cluster_state"), int(info.get("cluster_slots_ok", 0))
    masters = [r for r in rows if r["role"] == "master"]
    # The client may know the masters only: their replicas count from each master's view.
    replicas = max(len(rows) - len(masters), sum(r.get("replicas", 0) for r in masters))
    unprotected = [r["node"] for r in masters if not r.get("replicas")]
    detail = (
        f"Redis Cluster, state {state}: {len(masters)} masters, {replicas} replicas, "
        f"{covered} of {SLOTS} slots served"
    )
    if state != "ok" or covered < SLOTS:
        return Check(
            "cluster",
            False,
            detail,
            "assign every slot to a master and bring failed nodes back (`redis-cli "
            "--cluster check HOST:PORT`, then `--cluster fix`)",
        )
    if unprotected:
        detail += (
            f"; without a replica: {', '.join(unprotected)} (losing one loses the runs "
            "whose keys it holds)"
        )
    return Check("cluster", True, detail, "")


async def merge_checks(views: list[NodeView], check: Callable[[Any], Awaitable[Check]]) -> Check:
    """``check`` on every node, as one finding: passed if every node passed; the detail
    once if every node says the same, else node by node."""
    found = [(view.name, await check(view)) for view in views]
    first = found[0][1]
    failed = [name for name, c in found if not c.ok]
    if len({c.detail for _, c in found}) == 1:
        detail = f"{first.detail} (on each of {len(found)} nodes)"
    else:
        detail = "; ".join(f"{name}: {c.detail}" for name, c in found)
    fix = next((c.fix for _, c in found if c.fix), "")
    if failed:
        fix = f"on {', '.join(failed)}: {fix}"
    return Check(first.name, not failed, detail, fix if failed else "")
