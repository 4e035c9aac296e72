"""Lua scripts kept as ``.lua`` files in a package folder, run by EVALSHA.

Each script's SHA1 is computed locally, so a call goes straight out as EVALSHA (no
``SCRIPT EXISTS`` round trip, unlike redis-py's ``Script``); only a ``NOSCRIPT`` reply
(a restarted or flushed server) sends the call again as EVAL with the script's source,
which runs it and leaves it in the server's cache, in one round trip: safe, since the
call that got ``NOSCRIPT`` never ran, and as prompt as a second try can be (a rate
limit's block lands one round trip late, not two).

Example::

    scripts = LuaScripts(client, package="taskloom.agents", names=["rl_reserve", "rl_settle"])
    reply = await scripts.call("rl_reserve", keys=[...], args=[...])

The client is a redis-py asyncio client; replies come back as that client decodes
them (``decode_responses=True`` gives ``str``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from taskloom.agents.errors import UserError

__all__ = ["LuaScripts"]


class LuaScripts:
    """The scripts of one package folder, bound to one Redis client.

    ``package`` is an importable package and ``folder`` a folder inside it holding
    ``NAME.lua`` files; ``names`` picks some of them (default: every ``.lua`` file).
    Reading happens once, here; nothing touches Redis until the first call.
    """

    def __init__(
        self,
        client: Any,
        *,
        package: str,
        folder: str = "lua",
        names: Iterable[str] | None = None,
    ) -> None:
        self._client = client
        root = resources.files(package) / folder
        if names is None:
            names = sorted(
                entry.name.removesuffix(".lua")
                for entry in root.iterdir()
                if entry.name.endswith(".lua")
            )
        self._source: dict[str, str] = {}
        for name in names:
            path = root / f"{name}.lua"
            if not path.is_file():
                raise UserError(f"no Lua script {name!r}: {package}/{folder}/{name}.lua not found")
            self._source[name] = path.read_text(encoding="utf-8")
        self._sha = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in self._source.items()}

    @property
    def names(self) -> list[str]:
        """The names of the scripts this object runs."""
        return list(self._source)

    def sha(self, name: str) -> str:
        """The SHA1 that EVALSHA sends for script ``name``."""
        return self._sha[self._known(name)]

    async def load(self) -> None:
        """Load every script into the server's script cache (optional: calls load
        what they need on their own)."""
        pipe = self._client.pipeline(transaction=False)
        for source in self._source.values():
            pipe.script_load(source)
        await pipe.execute()

    async def call(self, name: str, *, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` with ``keys`` and ``args`` and return its reply."""
        sha = self._sha[self._known(name)]
        try:
            return await self._client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(self._source[name], len(keys), *keys, *args)

    def queue(self, pipe: Any, name: str, *, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add an EVALSHA of script ``name`` to the pipeline ``pipe``."""
        pipe.evalsha(self._sha[self._known(name)], len(keys), *keys, *args)

    async def pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        """Build a pipeline with ``build(pipe)`` (using :meth:`queue`), run it, and
        return its replies.

        Replies that are errors come back as exception objects, except ``NOSCRIPT``:
        then every script is loaded and the whole pipeline runs once more, including
        the commands that did run the first time, so they must be idempotent.
        """
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                await self.load()
                continue
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    def _known(self, name: str) -> str:
        if name not in self._source:
            raise UserError(f"no Lua script {name!r} here; known: {', '.join(self._source)}")
        return name
