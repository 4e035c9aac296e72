"""Lua scripts kept as ``.lua`` files in a package folder, run by EVALSHA.

One loader serves every room: the engine's state changes (``taskloom/lua/``) and the
LLM layer's budgets and rate limits (``taskloom/agents/lua/``). It lives beside
``errors`` and ``settings`` and imports nothing of taskloom's but the exception root,
so the lowest room may use it and the engine uses it without importing the LLM layer.

Each script's SHA1 is computed locally, so a call goes straight out as EVALSHA (no
``SCRIPT EXISTS`` round trip, unlike redis-py's ``Script``). A ``NOSCRIPT`` reply (a
restarted or flushed server) is recovered from:

- a call, or a pipeline of one command, is sent again as EVAL with the script's source,
  which runs it and leaves it in the server's cache, in one round trip: safe, since the
  command that got ``NOSCRIPT`` never ran, and as prompt as a second try can be (a rate
  limit's block lands one round trip late, not two);
- a pipeline of several commands loads every script and runs once more, including the
  commands that did run the first time, so those must be idempotent (every script of
  taskloom's is).

On a Redis Cluster each node has a script cache of its own: a call recovers on the node
that said ``NOSCRIPT`` (its EVAL runs there), and :meth:`LuaScripts.load` loads every
script on every primary (redis-py's cluster client sends ``SCRIPT LOAD`` to each; it
refuses one inside a pipeline).

Example::

    scripts = LuaScripts(client, package="taskloom.agents", names=["rl_reserve", "rl_settle"])
    reply = await scripts.call("rl_reserve", keys=[...], args=[...])

The client is a redis-py asyncio client; replies come back as that client decodes
them (``decode_responses=True`` gives ``str``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from taskloom.agents.errors import UserError

__all__ = ["PRELUDE", "LuaScripts", "queued", "queued_count", "queued_keys"]


PRELUDE = "_prelude.lua"
"""The file of the engine's script folder whose text every script begins with."""


@functools.cache
def _prelude() -> str:
    return (resources.files("taskloom") / "lua" / PRELUDE).read_text(encoding="utf-8")


class LuaScripts:
    """The scripts of one package folder, bound to one Redis client.

    ``package`` is an importable package and ``folder`` a folder inside it holding
    ``NAME.lua`` files; ``names`` picks some of them (default: every ``.lua`` file).
    Every script begins with the text of :data:`PRELUDE` (``taskloom/lua/_prelude.lua``:
    local helper functions the scripts of every folder share), which is no script itself.
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
                if entry.name.endswith(".lua") and entry.name != PRELUDE
            )
        shared = _prelude()
        self._source: dict[str, str] = {}
        for name in names:
            path = root / f"{name}.lua"
            if not path.is_file():
                raise UserError(f"no Lua script {name!r}: {package}/{folder}/{name}.lua not found")
            self._source[name] = shared + path.read_text(encoding="utf-8")
        self._sha = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in self._source.items()}
        self._by_sha = {sha: name for name, sha in self._sha.items()}

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
        if _is_cluster(self._client):
            for source in self._source.values():  # to every primary
                await self._client.script_load(source)
            return
        pipe = self._client.pipeline(transaction=False)
        for source in self._source.values():
            pipe.script_load(source)
        await pipe.execute()

    async def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` with ``keys`` and ``args`` now and return its reply."""
        sha = self._sha[self._known(name)]
        try:
            return await self._client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(self._source[name], len(keys), *keys, *args)

    def queue(self, pipe: Any, name: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add an EVALSHA of script ``name`` to the pipeline ``pipe``."""
        pipe.evalsha(self._sha[self._known(name)], len(keys), *keys, *args)

    async def pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        """Build a pipeline with ``build(pipe)`` (using :meth:`queue`), run it, and
        return its replies.

        Replies that are errors come back as exception objects; ``NOSCRIPT`` is
        recovered from as the module says (``build`` may be called twice).
        """
        pipe = self._client.pipeline(transaction=False)
        build(pipe)
        if len(pipe) == 1:
            return [await self._lone(*queued(pipe)[0])]
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if not any(isinstance(r, NoScriptError) for r in replies):
            return replies
        await self.load()
        pipe = self._client.pipeline(transaction=False)
        build(pipe)
        replies = await pipe.execute(raise_on_error=False)
        return replies

    async def _lone(self, command: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """A pipeline of one command, sent as that command, its error returned as the
        pipeline would. redis-py returns a pipeline's connection to the pool through a
        task of its own (``asyncio.shield``) and a lone command's directly: one command
        per step of a chain is the engine's common case (a recorded outcome, the
        owner's next write)."""
        try:
            name = self._by_sha.get(command[1]) if command[0] == "EVALSHA" else None
            if name is None:
                return await self._client.execute_command(*command, **options)
            numkeys = int(command[2])
            return await self.call(name, command[3 : 3 + numkeys], command[3 + numkeys :])
        except ResponseError as exc:
            return exc

    def _known(self, name: str) -> str:
        if name not in self._source:
            raise UserError(f"no Lua script {name!r} here; known: {', '.join(self._source)}")
        return name


def _is_cluster(client: Any) -> bool:
    """Whether ``client`` is redis-py's Redis Cluster client (asyncio or not)."""
    return hasattr(client, "nodes_manager")


def _queue_of(pipe: Any) -> tuple[list[Any], bool]:
    """The list of commands queued in ``pipe``, and whether it is a cluster pipeline's
    (redis-py keeps them apart in each kind: ``(args, options)`` pairs, or commands)."""
    stack = getattr(pipe, "command_stack", None)
    if stack is not None:
        return stack, False
    return pipe._execution_strategy._command_queue, True


def queued(pipe: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The ``(args, options)`` of each command queued in ``pipe``, a pipeline of a
    single-Redis or a cluster client."""
    commands, cluster = _queue_of(pipe)
    if cluster:
        return [(c.args, c.kwargs) for c in commands]
    return [(args, options) for args, options in commands]


def queued_count(pipe: Any) -> int:
    """How many commands are queued in ``pipe`` (a single Redis's or a cluster's)."""
    return len(_queue_of(pipe)[0])


def queued_keys(pipe: Any) -> list[str]:
    """The keys of the commands queued in ``pipe``: an EVAL's or EVALSHA's declared
    keys, else the first argument (every command taskloom pipelines names its key
    first)."""
    keys: list[str] = []
    for args, _ in queued(pipe):
        name = str(args[0]).upper()
        if name in ("EVALSHA", "EVAL"):
            numkeys = int(args[2])
            keys += [str(k) for k in args[3 : 3 + numkeys]]
        elif len(args) > 1:
            keys.append(str(args[1]))
    return keys
