"""The Lua scripts, loaded once per client and called by EVALSHA.

redis-py's own ``Script`` objects ask the server ``SCRIPT EXISTS`` before every
pipeline; here the SHA1 is computed locally, commands go straight out as EVALSHA, and
only a ``NOSCRIPT`` reply (a restarted or flushed server) loads the scripts and runs the
pipeline again. Every script is idempotent, so that second run is safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

__all__ = ["Scripts"]

NAMES = (
    "create_run", "acquire", "renew", "release", "append", "start", "record", "unclaim",
    "enqueue", "attempt", "due_retries", "dlq_put", "dlq_take", "external", "pop_timers",
    "set_index", "inbox_open", "inbox_close", "inbox_move",
    "notify_enqueue", "notify_take", "notify_settle", "notify_redrive",
    "link_create", "link_settle", "link_revoke",
    "signin_take", "signin_refund",
)  # fmt: skip


class Scripts:
    """The store's scripts on one client (``raw``: a redis-py asyncio client)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        folder = resources.files("taskloom") / "lua"
        self._source = {name: (folder / f"{name}.lua").read_text() for name in NAMES}
        self._sha = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in self._source.items()}

    async def load(self) -> None:
        """Load every script into the server's cache."""
        pipe = self._raw.pipeline(transaction=False)
        for source in self._source.values():
            pipe.script_load(source)
        await pipe.execute()

    def queue(self, pipe: Any, name: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add an EVALSHA of script ``name`` to ``pipe``."""
        pipe.evalsha(self._sha[name], len(keys), *keys, *args)

    async def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script now."""
        try:
            return await self._raw.evalsha(self._sha[name], len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await self._raw.evalsha(self._sha[name], len(keys), *keys, *args)

    async def pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        """Build a pipeline with ``build(pipe)``, run it, and return its replies.

        Replies that are errors are returned as exception objects, except ``NOSCRIPT``,
        which loads the scripts and runs the whole pipeline once more.
        """
        for attempt in (1, 2):
            pipe = self._raw.pipeline(transaction=False)
            build(pipe)
            replies: list[Any] = await _execute(self._raw, pipe)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                await self.load()
                continue
            return replies
        raise AssertionError("unreachable")  # pragma: no cover


async def _execute(raw: Any, pipe: Any) -> list[Any]:
    """``pipe.execute(raise_on_error=False)``; a pipeline of one command is sent as that
    command. redis-py returns a pipeline's connection to the pool through a task of its
    own (``asyncio.shield``) and a lone command's directly: one command per step of a
    chain is the common case (a recorded outcome, the owner's next write)."""
    if len(pipe.command_stack) != 1:
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
    args, options = pipe.command_stack[0]
    try:
        return [await raw.execute_command(*args, **options)]
    except ResponseError as exc:  # as the pipeline gives it back (NOSCRIPT included)
        return [exc]
