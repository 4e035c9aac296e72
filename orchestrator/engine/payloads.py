"""Big values stay out of the log: stored once in the blob store, referenced by hash.

An activity's arguments and result whose JSON is larger than ``threshold`` bytes go
to the content-addressed blob store (:mod:`taskloom.engine.blobs`); the log and the queue
keep ``{"$blob": "sha256:...", "size": N}``. The run's ``blobs`` set remembers which
blobs it references, so that once finished runs are deleted
(:mod:`taskloom.engine.retention`) the blobs that no remaining run references are
collected too. A value larger than ``hard_limit`` is
refused with a :class:`~taskloom.PayloadTooLargeError`.
"""

from __future__ import annotations

import logging
from typing import Any

from taskloom.engine import serde
from taskloom.engine.blobs import (
    BlobStore,
    collect_garbage,
    externalize,
    fits_its_ref,
    internalize,
    is_ref,
    store_all,
    within_limit,
)
from taskloom.engine.keys import STATUSES
from taskloom.engine.store import Store
from taskloom.errors import TaskloomError, error_dict

__all__ = ["Payloads"]

log = logging.getLogger("taskloom.engine.payloads")

GC_GRACE_MS = 3600_000
"""A blob is deleted only if it was unreferenced at a sweep at least this long ago: a
run may have written it and not yet recorded its reference."""


class Payloads:
    """Moves values over ``threshold`` bytes to ``blobs`` and back."""

    def __init__(
        self, store: Store, blobs: BlobStore | None, *, threshold: int, hard_limit: int
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.threshold = threshold
        self.hard_limit = hard_limit

    async def pack(self, run_id: str, value: Any, *, what: str) -> Any:
        """``value`` itself if small, else the reference to it (stored, and remembered
        by the run ``run_id``)."""
        text = serde.dumps(value, what=what)
        size = len(within_limit(text, self.hard_limit, what))
        if self.blobs is None or size <= self.threshold:
            return value
        packed = serde.loads(
            await externalize(
                text,
                store=self.blobs,
                threshold=self.threshold,
                hard_limit=self.hard_limit,
                what=what,
            )
        )
        if is_ref(packed):
            await self._remember(run_id, [packed])
        return packed

    async def store_each(self, run_id: str, values: list[Any], *, what: str) -> list[Any]:
        """Store every value in the blob store whatever its size (by content: a value
        seen before costs nothing) and return their references, remembered by the run
        ``run_id``; :meth:`unpack` reads each back (an error's whole message, say). With
        no blob store, ``values`` themselves."""
        packed = await self.put_each(values, what=what, threshold=0)
        if self.blobs is not None:
            await self._remember(run_id, packed)
        return packed

    async def put_each(
        self, values: list[Any], *, what: str, threshold: int | None = None
    ) -> list[Any]:
        """Each value whose JSON is over ``threshold`` bytes (default: the payload
        threshold, the rule for every payload) stored in the blob store on its own, by
        content, and replaced by its reference; the references are not remembered: the
        caller adds :meth:`queue_remember` to a pipeline of its own (one round trip for
        both). Used for LLM messages: a subagent's system prompt holds its task and
        inputs, so it is new at every call, and storing it (a file and two fsyncs,
        ~0.5 ms of CPU) was the dearest part of a call. A value no longer than its
        reference would be is never stored: the log would not be any smaller."""
        if self.blobs is None:
            return values
        over = self.threshold if threshold is None else threshold
        texts = [serde.dumps(v, what=what) for v in values]
        large = [
            i
            for i, (value, text) in enumerate(zip(values, texts, strict=True))
            if is_ref(value) or (len(text.encode()) > over and not fits_its_ref(text))
        ]
        if not large:
            return list(values)
        packed = list(values)
        refs = await store_all(
            [texts[i] for i in large], store=self.blobs, hard_limit=self.hard_limit, what=what
        )
        for i, ref in zip(large, refs, strict=True):
            packed[i] = ref
        return packed

    def queue_remember(self, pipe: Any, run_id: str, packed: list[Any]) -> None:
        """Add to the pipeline ``pipe`` the run's remembering of the references among
        ``packed`` (what :meth:`put_each` returned)."""
        refs = [r["$blob"] for r in packed if is_ref(r)]
        if refs:
            pipe.sadd(self.store.keys.blobs(run_id), *refs)

    async def error(self, run_id: str, exc: BaseException) -> dict[str, Any]:
        """:func:`~taskloom.errors.error_dict` of ``exc`` for run ``run_id``: when
        its message was too long to keep whole, the whole message goes to the blob
        store and ``full_message`` references it (read it back with :meth:`unpack`).
        Never raises: without a blob store, or when it fails, the error keeps only the
        bounded message."""
        out = error_dict(exc)
        if "message_bytes" not in out or self.blobs is None:
            return out
        try:
            full = exc.to_dict()["message"] if isinstance(exc, TaskloomError) else str(exc)
            [ref] = await self.store_each(run_id, [full], what="the message of an error")
            out["full_message"] = ref
        except Exception:  # the bounded message is recorded all the same
            log.warning("run %s: could not keep an error's whole message", run_id, exc_info=True)
        return out

    async def _remember(self, run_id: str, refs: list[Any]) -> None:
        """Add blob references to the run's set (kept while the run is)."""
        if refs:
            await self.store.raw.sadd(self.store.keys.blobs(run_id), *(r["$blob"] for r in refs))

    async def unpack(self, value: Any) -> Any:
        """The value a reference stands for; anything else unchanged."""
        if not is_ref(value) or self.blobs is None:
            return value
        return serde.loads(await internalize(serde.dumps(value), store=self.blobs))

    # -- retention ----------------------------------------------------------------------
    async def collect(self, *, now_ms: int) -> int:
        """Delete blobs that no run references, once they were unreferenced at a sweep
        at least ``GC_GRACE_MS`` ago; returns how many were deleted."""
        if self.blobs is None:
            return 0
        keys, raw = self.store.keys, self.store.raw
        runs: list[str] = []
        for status in STATUSES:
            runs += await raw.zrange(keys.index(status), 0, -1)
        pipe = raw.pipeline(transaction=False)
        for run_id in runs:
            pipe.smembers(keys.blobs(run_id))
        keep: set[str] = set().union(*(await pipe.execute())) if runs else set()
        unreferenced = {r async for r in self.blobs.iter_refs() if r not in keep}
        seen: dict[str, str] = await raw.hgetall(keys.blob_candidates)
        due = {r for r in unreferenced if r in seen and now_ms - int(seen[r]) >= GC_GRACE_MS}
        deleted = await collect_garbage(self.blobs, keep=keep | (unreferenced - due))
        fresh = {r: now_ms for r in unreferenced - due if r not in seen}
        stale = [r for r in seen if r not in unreferenced or r in due]
        pipe = raw.pipeline(transaction=False)
        if fresh:
            pipe.hset(keys.blob_candidates, mapping=fresh)
        if stale:
            pipe.hdel(keys.blob_candidates, *stale)
        await pipe.execute()
        return deleted
