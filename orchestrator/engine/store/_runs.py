"""Run records: a run's creation, its meta hash, and the per-status index of runs.

A run is created once by ``create_run.lua`` (the same id and input again is a no-op);
its meta hash holds what :class:`RunInfo` shows. Listing runs by status reads one sorted
set per status, never SCAN; the index is a follow-up outside the run's hash slot, so a
reader that finds it behind the run's meta repairs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskloom.engine import serde
from taskloom.engine.events import RunCreated
from taskloom.engine.keys import STATUSES
from taskloom.engine.store._base import StoreBase, now_ms, raise_first
from taskloom.errors import RunIdConflictError, RunNotFoundError

if TYPE_CHECKING:
    from taskloom.tracing import RunTrace

__all__ = ["RunInfo", "RunRecords"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run's metadata, as listed by status."""

    run_id: str
    workflow: str
    status: str
    created_ms: int
    updated_ms: int
    owner: str
    parent: dict[str, Any] | None
    result: Any
    duplicates_dropped: int

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> RunInfo:
        """Build from the run's meta hash."""
        parent = meta.get("parent") or ""
        result = meta.get("result") or ""
        return cls(
            run_id=meta["run_id"],
            workflow=meta.get("workflow", ""),
            status=meta.get("status", ""),
            created_ms=int(meta.get("created_ms") or 0),
            updated_ms=int(meta.get("updated_ms") or 0),
            owner=meta.get("owner", ""),
            parent=serde.loads(parent) if parent else None,
            result=serde.loads(result) if result else None,
            duplicates_dropped=int(meta.get("dups") or 0),
        )


class RunRecords(StoreBase):
    """The store's runs: create one, read its meta, keep and read the status index."""

    async def create_run(
        self,
        run_id: str,
        *,
        workflow: str,
        input_json: str,
        parent: dict[str, Any] | None = None,
        deadline_ms: int = 0,
        trace: RunTrace | None = None,
    ) -> tuple[bool, str]:
        """Create a run; returns ``(created, status)``. Same id + same input is a no-op.
        ``deadline_ms``: when the run times out (0: never); ``trace``: its trace context
        (see :mod:`taskloom.tracing`)."""
        meta, log, _ = self.keys.run_keys(run_id)
        ts = now_ms()
        created: RunCreated = {"type": "run_created", "workflow": workflow, "ts": ts}
        event = serde.dumps(created)
        args = [
            run_id,
            workflow,
            input_json,
            serde.digest(input_json),
            ts,
            serde.dumps(parent) if parent else "",
            event,
            deadline_ms,
            trace.traceparent if trace is not None else "",
            trace.parent if trace is not None else "",
        ]

        def build(pipe: Any) -> None:
            self.scripts.queue(pipe, "create_run", [meta, log], args)
            self._sync(pipe)

        res = raise_first(await self.scripts.pipeline(build))[0]
        if res[0] == "conflict":
            raise RunIdConflictError(
                f"run id {run_id!r} already exists with a different "
                f"{'workflow (' + str(res[1]) + ')' if res[1] != workflow else 'input'}; "
                f"a run id is an idempotency key: reuse it only for the same workflow and "
                f"input, or choose a new id"
            )
        if res[0] == "created":
            await self.set_index(run_id, "pending")
        return res[0] == "created", str(res[1])

    async def get_meta(self, run_id: str) -> dict[str, str]:
        """The run's meta hash; raises :class:`RunNotFoundError` if there is no such run."""
        meta: dict[str, str] = await self.raw.hgetall(self.keys.meta(run_id))
        if not meta:
            raise RunNotFoundError(
                f"no run {run_id!r} under key prefix {self.keys.prefix!r}; list runs with "
                f"`taskloom runs` and check TASKLOOM_REDIS_URL / TASKLOOM_KEY_PREFIX"
            )
        return meta

    async def outcome(self, run_id: str) -> tuple[str, Any] | None:
        """``(status, result)`` of the run from its meta hash, where the script that ends
        a run writes them with its last event (``result``: the error of a failed run,
        ``None`` while it runs); ``None`` if there is no such run. One HMGET, however
        long the run's log."""
        found = await self.raw.hmget(self.keys.meta(run_id), ["run_id", "status", "result"])
        if not found[0]:
            return None
        status, result = found[1] or "", found[2] or ""
        return status, serde.loads(result) if result else None

    async def run_info(self, run_id: str) -> RunInfo:
        """The run's metadata as a :class:`RunInfo`."""
        return RunInfo.from_meta(await self.get_meta(run_id))

    def queue_index(self, pipe: Any, run_id: str, status: str, at_ms: int | None = None) -> None:
        """Add to ``pipe``: put ``run_id`` in the index of ``status`` (out of every other)."""
        keys = [self.keys.index(status)] + [self.keys.index(s) for s in STATUSES if s != status]
        self.scripts.queue(pipe, "set_index", keys, [run_id, now_ms() if at_ms is None else at_ms])

    async def set_index(self, run_id: str, status: str) -> None:
        """Put ``run_id`` in the index of ``status`` (and out of every other)."""
        await self.scripts.pipeline(lambda pipe: self.queue_index(pipe, run_id, status))

    async def list_runs(self, status: str | None = None, *, limit: int = 100) -> list[RunInfo]:
        """Runs by status (newest change first), from the index sorted sets; never SCAN."""
        statuses = [status] if status else list(STATUSES)
        pipe = self.raw.pipeline(transaction=False)
        for s in statuses:
            pipe.zrevrange(self.keys.index(s), 0, limit - 1, withscores=True)
        ranked: list[tuple[float, str, str]] = []
        for s, rows in zip(statuses, await pipe.execute(), strict=True):
            ranked.extend((score, run_id, s) for run_id, score in rows)
        ranked.sort(reverse=True)
        ranked = ranked[:limit]
        pipe = self.raw.pipeline(transaction=False)
        for _, run_id, _ in ranked:
            pipe.hgetall(self.keys.meta(run_id))
        out: list[RunInfo] = []
        for (_, run_id, indexed), meta in zip(ranked, await pipe.execute(), strict=True):
            if not meta:
                continue
            if meta.get("status") != indexed:  # the index lags the run: repair it
                await self.set_index(run_id, meta["status"])
                if status and meta.get("status") != status:
                    continue
            out.append(RunInfo.from_meta(meta))
        return out
