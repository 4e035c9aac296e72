"""A saga for tests/test_compensation.py, also served by worker processes.

Every activity notes its execution in a file (``path``), one line
``<kind> <what> <idempotency key>``, with O_APPEND: a test counts real executions, and
with the keys, effects (an external system would dedupe on the key).
"""

from __future__ import annotations

import asyncio
import os

from taskloom import (
    Context,
    NonRetryableError,
    RetryPolicy,
    activity,
    activity_info,
    workflow,
)


def note(path: str, kind: str, what: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {what} {activity_info().idempotency_key}\n".encode())
    finally:
        os.close(fd)


@activity(name="saga.cancel")
async def cancel_booking(booking: str, what: str, path: str, undo_s: float = 0.0) -> None:
    """Undo a booking: called with the booking's result, then its arguments."""
    await asyncio.sleep(undo_s)
    note(path, "undo", what)
    assert booking == f"booked {what}", booking


@activity(name="saga.book", compensate=cancel_booking)
async def book(what: str, path: str, undo_s: float = 0.0) -> str:
    note(path, "do", what)
    return f"booked {what}"


@activity(name="saga.pay", retry=RetryPolicy(max_attempts=1))
async def pay(path: str) -> None:
    note(path, "do", "payment")
    raise NonRetryableError("card declined")


@workflow(name="saga.trip")
async def trip(ctx: Context, path: str, undo_s: float = 0.0, then: str = "pay") -> str:
    for what in ("flight", "hotel", "car"):
        await ctx.run(book, what, path, undo_s)
    if then == "pay":
        await ctx.run(pay, path)
    else:
        await ctx.sleep(3600)
    return "trip booked"
