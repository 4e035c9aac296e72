"""Small helpers for tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

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


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return it;
    fail the test, saying ``what`` was awaited, after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = check()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
