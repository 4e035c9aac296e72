"""Checks that the Redis in use can hold workflow state safely and quickly.

An untuned state store is the most common cause of slow or lossy workflow systems, so
``taskloom doctor`` reports on the server version, persistence, eviction and latency,
and says how to fix each problem::

    report = await diagnose(client)
    print(render_text(report))

On a Redis Cluster it checks the cluster (every slot served, replicas) and runs each
check on every node (:mod:`taskloom.terminal.doctor_cluster`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
import redis.asyncio

from taskloom.engine.durability import Durability, fsync_mode
from taskloom.engine.refusals import refusal
from taskloom.errors import ConfigurationError, RedisRefusedError, RedisUnavailableError
from taskloom.redaction import redact_text

__all__ = ["Check", "Report", "diagnose", "render_json", "render_text"]

_MIN_VERSION = (6, 2)
_MAX_P50_MS = 5.0
"""The typical round trip above which every workflow step is slowed: Redis is far away."""
_MAX_P99_MS = 100.0
"""The tail above which Redis stalls (a fork for persistence, slow commands, a saturated
host): a few slow pings of a busy client machine stay below it."""


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, whether it passed, and how to fix it if not."""

    name: str
    ok: bool
    detail: str
    fix: str
    """What to do about a failure; ``""`` when ``ok``."""


@dataclass(frozen=True)
class Report:
    """The findings of :func:`diagnose`, in a fixed order."""

    checks: list[Check]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    """On a Redis Cluster, one row per node (role, slots, replicas, persistence and
    eviction policy); empty for a single Redis."""

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form: ``{"checks": [{name, ok, detail, fix}, ...], "ok": bool}``,
        and ``"nodes": [...]`` on a Redis Cluster."""
        out: dict[str, Any] = {"checks": [asdict(check) for check in self.checks], "ok": self.ok}
        if self.nodes:
            out["nodes"] = self.nodes
        return out


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def _info(client: redis.asyncio.Redis, section: str) -> dict[str, str]:
    """One INFO section as text, or ``{}`` if the server refuses INFO."""
    try:
        info = await client.info(section)
    except (redis.ResponseError, RedisRefusedError):
        return {}
    return {_text(key): _text(value) for key, value in info.items()}


async def _config_get(client: redis.asyncio.Redis, name: str) -> str | None:
    """A config value, or ``None`` where CONFIG is disabled (as on most managed Redis)."""
    try:
        values = await client.config_get(name)
    except (redis.ResponseError, RedisRefusedError):
        return None
    for key, value in values.items():
        if _text(key) == name:
            return _text(value)
    return None


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


async def _check_version(client: redis.asyncio.Redis) -> Check:
    info = await _info(client, "server")
    version = info.get("redis_version", "")
    if not version:
        return Check(
            "version",
            False,
            "INFO server did not report redis_version",
            "allow INFO for this Redis user, so the server can be checked",
        )
    detail = f"Redis {version}"
    if "valkey_version" in info:
        detail = f"Valkey {info['valkey_version']} (Redis {version} compatible)"
    if _parse_version(version) >= _MIN_VERSION:
        return Check("version", True, detail, "")
    return Check(
        "version",
        False,
        f"{detail}; taskloom needs 6.2 or newer (XAUTOCLAIM)",
        "upgrade to Redis 6.2 or newer (or Valkey 7.2+)",
    )


async def _check_persistence(client: redis.asyncio.Redis) -> Check:
    info = await _info(client, "persistence")
    policy = await _config_get(client, "appendfsync")
    if info.get("aof_enabled") == "1":
        detail = "AOF is on" + (f" (appendfsync {policy})" if policy else "")
        return Check("persistence", True, detail, "")
    detail = "AOF is off" if info else "INFO persistence is not available"
    return Check(
        "persistence",
        False,
        f"{detail}; without it a Redis restart loses every run, its history and its queue",
        "run `CONFIG SET appendonly yes` and put `appendonly yes` in redis.conf so it "
        "survives a restart (on managed Redis, enable AOF persistence in its settings)",
    )


async def _check_maxmemory_policy(client: redis.asyncio.Redis) -> Check:
    info = await _info(client, "memory")
    policy = info.get("maxmemory_policy", "")
    if policy == "noeviction":
        return Check("maxmemory-policy", True, "noeviction", "")
    detail = f"maxmemory-policy is {policy}" if policy else "maxmemory_policy not reported"
    return Check(
        "maxmemory-policy",
        False,
        f"{detail}; when memory runs out Redis would silently evict keys and lose workflow state",
        "run `CONFIG SET maxmemory-policy noeviction` and put `maxmemory-policy "
        "noeviction` in redis.conf (Redis then refuses writes when full instead of "
        "dropping state)",
    )


_WINDOW = (
    "a crash of Redis or its machine can lose up to about the last second of "
    "acknowledged writes: runs created in it vanish and outcomes recorded in it are "
    "run again (an owner that finds Redis behind it replays the run; "
    "RunHandle.result() reports a vanished run)"
)
_CHOOSE = (
    "for recorded outcomes on disk before they count, set TASKLOOM_DURABILITY=fsync "
    "(WAITAOF per batch of writes on Redis 7.2+; else put `appendfsync always` in "
    "redis.conf)"
)


async def _check_durability(client: redis.asyncio.Redis, level: Durability) -> Check:
    policy = await _config_get(client, "appendfsync")
    aof = (await _info(client, "persistence")).get("aof_enabled") == "1"
    if level == "fsync":
        try:
            mode = await fsync_mode(client)
        except ConfigurationError as exc:
            return Check("durability", False, "TASKLOOM_DURABILITY=fsync cannot be kept", str(exc))
        how = "WAITAOF after each batch" if mode == "waitaof" else "appendfsync always"
        return Check(
            "durability",
            True,
            f"TASKLOOM_DURABILITY=fsync ({how}): a recorded outcome is on the Redis "
            "host's disk before taskloom goes on",
            "",
        )
    if aof and policy == "always":
        detail = "appendfsync always: every write is on disk before Redis answers"
        return Check("durability", True, f"TASKLOOM_DURABILITY=ack, {detail}", "")
    if aof and policy == "everysec":
        return Check(
            "durability",
            True,
            f"TASKLOOM_DURABILITY=ack, appendfsync everysec: {_WINDOW}; {_CHOOSE}",
            "",
        )
    shown = f"appendfsync {policy}" if aof and policy else "AOF off or appendfsync unknown"
    return Check(
        "durability",
        False,
        f"TASKLOOM_DURABILITY=ack, {shown}: a crash may lose many seconds of acknowledged writes",
        f"put `appendonly yes` and `appendfsync everysec` (or `always`) in redis.conf; {_CHOOSE}",
    )


def _percentile(sorted_ms: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(fraction * len(sorted_ms)))
    return sorted_ms[rank - 1]


async def _check_latency(client: redis.asyncio.Redis, pings: int) -> Check:
    """Fails on a typical round trip (p50) above :data:`_MAX_P50_MS`, or a tail (p99)
    above :data:`_MAX_P99_MS`; p99 of a few dozen pings is nearly their slowest, and one
    stall of this process on a busy machine must not say Redis is slow."""
    samples: list[float] = []
    for _ in range(pings):
        started = time.perf_counter()
        await client.ping()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p50, p99 = _percentile(samples, 0.50), _percentile(samples, 0.99)
    detail = f"PING round trip p50 {p50:.2f} ms, p99 {p99:.2f} ms over {pings} pings"
    if p50 > _MAX_P50_MS:
        why = f"a typical round trip above {_MAX_P50_MS:g} ms: every workflow step waits on it"
    elif p99 > _MAX_P99_MS:
        why = f"stalls above {_MAX_P99_MS:g} ms: steps wait on them now and then"
    else:
        return Check("latency", True, detail, "")
    return Check(
        "latency",
        False,
        f"{detail}; {why}",
        "run Redis close to the workers (same host, zone or network), and check the "
        "network and the load on the Redis host",
    )


async def diagnose(
    client: redis.asyncio.Redis, *, pings: int = 50, durability: Durability = "ack"
) -> Report:
    """Check the Redis behind ``client``: version, persistence, eviction, latency, and
    whether it keeps the ``durability`` level (``TASKLOOM_DURABILITY``), with what a
    crash can lose under it.

    ``client`` may decode responses or not. ``pings`` PING round trips measure latency.

    Raises:
        RedisUnavailableError: Redis cannot be reached.
        RedisRefusedError: Redis refused the login or the TLS handshake.
    """
    if pings < 1:
        raise ConfigurationError(f"pings must be at least 1, not {pings}")
    try:
        if hasattr(client, "nodes_manager"):  # redis-py's cluster client
            return await _diagnose_cluster(client, pings=pings, durability=durability)
        checks = [
            await _check_version(client),
            await _check_persistence(client),
            await _check_maxmemory_policy(client),
            await _check_latency(client, pings),
            await _check_durability(client, durability),
        ]
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        refused = refusal(exc)  # a client of the caller's own raises redis-py's errors
        if refused is not None:
            raise refused from exc
        raise RedisUnavailableError(
            f"cannot reach Redis to check it: {redact_text(str(exc))}; check "
            "TASKLOOM_REDIS_URL and that "
            "the server is running"
        ) from exc
    return Report(checks)


async def _diagnose_cluster(client: Any, *, pings: int, durability: Durability) -> Report:
    from taskloom.terminal.doctor_cluster import (
        NodeView,
        check_cluster,
        merge_checks,
        node_rows,
    )

    await client.initialize()  # the map of the cluster, if no command has read it yet
    rows = await node_rows(client)
    views = [NodeView(client, node) for node in client.get_nodes()]
    checks = [
        await check_cluster(client, rows),
        await merge_checks(views, _check_version),
        await merge_checks(views, _check_persistence),
        await merge_checks(views, _check_maxmemory_policy),
        await merge_checks(views, lambda view: _check_latency(view, pings)),
        await merge_checks(views, lambda view: _check_durability(view, durability)),
    ]
    return Report(checks, nodes=rows)


def render_text(report: Report) -> str:
    """The report as lines a person reads: each check, its detail, the fix under failures."""
    width = max((len(check.name) for check in report.checks), default=0)
    lines = []
    for check in report.checks:
        status = "ok" if check.ok else "FAIL"
        lines.append(f"{status:<4}  {check.name:<{width}}  {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    for row in report.nodes:
        role = row["role"]
        if role == "master":
            role = f"master, {row['slots']} slots, {row.get('replicas', 0)} replicas"
        else:
            role = f"replica of {row.get('master')}"
        aof = f"AOF {row['appendfsync']}" if row["aof"] else "AOF off"
        lines.append(f"node  {row['node']}  {role}; {aof}; {row['maxmemory_policy']}")
    failed = sum(not check.ok for check in report.checks)
    total = len(report.checks)
    if failed:
        lines.append(f"{failed} of {total} checks failed; apply the fixes above.")
    else:
        lines.append(f"All {total} checks passed.")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    """The report as JSON, for scripts (see :meth:`Report.to_dict`)."""
    return json.dumps(report.to_dict())
