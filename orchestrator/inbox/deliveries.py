"""The deliveries of inbox events, as Redis keeps them: one per event and endpoint.

A delivery being tried is leased to its notifier; a failed try is scheduled again
(``notify_due``, a sorted set by due time) until ``retry.max_attempts``, then the
delivery is *dead* (``notify_dead``). :class:`DeliveryBook` is a
:class:`~taskloom.inbox.notify.Notifier`'s record of them: lease the due ones, settle a
try, and the operator's side (list, redrive, discard the dead).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from taskloom.engine import serde
from taskloom.engine.clock import Clock
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.store import Store
from taskloom.errors import UserError

__all__ = [
    "DEFAULT_RETRY",
    "KEEP_DELIVERED_S",
    "Delivery",
    "DeliveryBook",
    "Try",
    "TryFailed",
    "endpoint_for_logs",
]

DEFAULT_RETRY = RetryPolicy(
    max_attempts=12, initial_interval=5.0, max_interval=3600.0, backoff=2.0, jitter=0.5
)
"""5 s, 10 s, 20 s, ... up to an hour apart: about 4 hours of tries before giving up."""

KEEP_DELIVERED_S = 7 * 86400.0
"""How long a delivered delivery's record is kept (without its event)."""


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One event to one endpoint, as Redis keeps it."""

    id: str
    """``<event id>:<endpoint hash>``: the idempotency key the endpoint sees."""
    endpoint: str
    """A webhook URL, or ``mailto:<address>``."""
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    """Tries that failed so far."""
    last_error: str
    event: dict[str, Any] | None
    """The event (dropped once delivered)."""
    created_ms: int
    updated_ms: int

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Delivery:
        """Build from the delivery's Redis hash."""
        event = fields.get("event")
        return cls(
            id=fields["id"],
            endpoint=fields.get("endpoint", ""),
            status=fields.get("status", "pending"),  # type: ignore[arg-type]
            attempts=int(fields.get("attempts") or 0),
            last_error=fields.get("last_error", ""),
            event=serde.loads(event) if event else None,
            created_ms=int(fields.get("created_ms") or 0),
            updated_ms=int(fields.get("updated_ms") or 0),
        )


@dataclass(frozen=True, slots=True)
class Try:
    """A delivery leased to this notifier, to send now."""

    id: str
    lease: int
    attempts: int
    endpoint: str
    event_json: str


class TryFailed(Exception):
    """A try that did not reach the endpoint, or that it did not accept."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def endpoint_for_logs(endpoint: str) -> str:
    """An endpoint for logs, without credentials, path or query."""
    if endpoint.startswith("mailto:"):
        return endpoint
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class DeliveryBook:
    """The deliveries in Redis, as one notifier leases, settles and operates on them.

    ``lease_ms`` is how long a taken delivery stays this notifier's; ``batch`` bounds how
    many one call takes; ``retry`` schedules a failed try again.
    """

    def __init__(
        self, store: Store, *, clock: Clock, retry: RetryPolicy, lease_ms: int, batch: int
    ) -> None:
        self.store = store
        self.clock = clock
        self.retry = retry
        self.lease_ms = lease_ms
        self.batch = batch

    async def take_due(self, most: int | None = None) -> list[Try]:
        """Lease the deliveries due now to this notifier (at most ``most``)."""
        keys, now = self.store.keys, self.clock.now_ms()
        count = self.batch if most is None else min(self.batch, most)
        if count <= 0:
            return []
        ids = await self.store.raw.zrangebyscore(keys.notify_due, "-inf", now, 0, count)
        if not ids:
            return []
        taken = await self.store.scripts.call(
            "notify_take",
            [keys.notify_due, *map(keys.notify_delivery, ids)],
            [now, now + self.lease_ms, *ids],
        )
        return [Try(i, int(lease), int(n or 0), e, ev) for i, lease, n, e, ev in taken]

    async def settle(self, t: Try, error: str, retry_after: float | None) -> int:
        """Record how try ``t`` went (``error`` empty: delivered). Returns the script's
        outcome: 2 when scheduled again, 3 when the delivery is now dead."""
        keys, now = self.store.keys, self.clock.now_ms()
        if not error:
            args = [t.id, "ok", t.lease, now, int(KEEP_DELIVERED_S * 1000), 0, ""]
        else:
            delay = self.retry.delay(t.attempts + 1, rand=random.random())
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.retry.max_interval))
            next_ms = now + int(delay * 1000)
            args = [t.id, "fail", t.lease, now, next_ms, self.retry.max_attempts, error[:500]]
        outcome = await self.store.scripts.call(
            "notify_settle", [keys.notify_due, keys.notify_dead, keys.notify_delivery(t.id)], args
        )
        return int(outcome or 0)

    # -- for operators ------------------------------------------------------------------
    async def get(self, delivery_id: str) -> Delivery | None:
        """Delivery ``delivery_id``, or None if unknown (or delivered long ago)."""
        fields = await self.store.raw.hgetall(self.store.keys.notify_delivery(delivery_id))
        return Delivery.from_hash(fields) if fields else None

    async def dead(self, *, limit: int = 100) -> list[Delivery]:
        """Deliveries given up on, oldest first."""
        keys = self.store.keys
        ids = await self.store.raw.zrange(keys.notify_dead, 0, limit - 1)
        pipe = self.store.raw.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(keys.notify_delivery(i))
        return [Delivery.from_hash(f) for f in await pipe.execute() if f]

    async def pending(self) -> int:
        """How many deliveries wait for a (first or next) try."""
        return int(await self.store.raw.zcard(self.store.keys.notify_due))

    async def operate(self, delivery_id: str, action: Literal["redrive", "discard"]) -> None:
        """``redrive`` dead delivery ``delivery_id`` (due now, fresh attempts) or
        ``discard`` it."""
        keys = self.store.keys
        done = await self.store.scripts.call(
            "notify_redrive",
            [keys.notify_due, keys.notify_dead, keys.notify_delivery(delivery_id)],
            [delivery_id, action, self.clock.now_ms()],
        )
        if not done:
            raise UserError(f"no dead delivery {delivery_id!r}; list them with Notifier.dead()")
