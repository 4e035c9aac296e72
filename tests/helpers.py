"""Small helpers for tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from orchestrator import Worker


@contextlib.asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    """Run in-process workers for the body of a ``with`` block, then stop them."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await asyncio.gather(*(w.started.wait() for w in workers))
        yield
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
