"""``taskloom stop``, and what commands say about the embedded Redis they keep running.

With no Redis URL, the first command starts an embedded redis-server under the data
directory and leaves it running, so the next command connects at once instead of
starting a server and loading its append-only file again (as ``docker`` keeps its
daemon, or Gradle its build daemon). ``taskloom stop`` shuts it down, its data saved;
it also stops by itself after ``TASKLOOM_EMBEDDED_IDLE`` without a client.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from taskloom.display import span
from taskloom.engine.embedded import EmbeddedRedis
from taskloom.errors import UserError
from taskloom.redaction import redact_url
from taskloom.terminal.output import out

if TYPE_CHECKING:
    from taskloom.client import Orchestrator
    from taskloom.terminal.cli import Command

__all__ = ["describe", "register", "tell_if_started"]


def register(cmd: Command) -> None:
    """Add the ``stop`` command to the CLI."""
    stop = cmd(
        "stop",
        _stop,
        "stop the embedded Redis that commands keep running (its data is saved; the next "
        "command starts it again)",
    )
    stop.set_defaults(connects=False)  # connecting would start the server it is to stop


async def _stop(args: argparse.Namespace, orch: Orchestrator) -> int:
    settings = orch.settings
    if settings.redis_url is not None:
        raise UserError(
            f"taskloom stop stops only the embedded Redis that taskloom starts itself; this "
            f"command is set to use the Redis at {redact_url(settings.redis_url)} "
            f"(--redis-url, TASKLOOM_REDIS_URL or REDIS_URL), which it leaves alone. Stop "
            f"that server the way it was started, or unset the URL to stop the embedded "
            f"Redis in {settings.data_dir}"
        )
    pid = await asyncio.to_thread(EmbeddedRedis(settings.data_dir).shutdown)
    if pid is None:
        out(f"no embedded Redis runs in {settings.data_dir}; nothing to stop")
    else:
        out(
            f"stopped the embedded Redis in {settings.data_dir} (pid {pid}); its data is "
            f"saved, and the next command starts it again"
        )
    return 0


def _how_it_ends(idle: float) -> str:
    if idle == 0:
        return "`taskloom stop` stops it (TASKLOOM_EMBEDDED_IDLE=0: it never stops by itself)"
    after = f"{idle:g}s" if idle < 60 else span(idle * 1000)
    return (
        f"it stops by itself after {after} without a client (TASKLOOM_EMBEDDED_IDLE), "
        f"or with `taskloom stop`"
    )


def describe(embedded: EmbeddedRedis) -> str:
    """One line on the embedded Redis in use: where, which process, how it ends."""
    where = f"embedded Redis in {embedded.data_dir} (pid {embedded.pid})"
    if embedded.keep:
        return f"{where}, kept running between commands: {_how_it_ends(embedded.idle)}"
    return f"{where}, stopped when the process that started it ends (TASKLOOM_EMBEDDED_KEEP)"


def tell_if_started(orch: Orchestrator) -> None:
    """On stderr, once: this command started an embedded Redis that it leaves running."""
    embedded = orch.embedded
    if embedded is None or not (embedded.started and embedded.keep):
        return
    print(
        f"taskloom: started the embedded Redis in {embedded.data_dir} (pid {embedded.pid}); "
        f"it keeps running for the next commands: {_how_it_ends(embedded.idle)}",
        file=sys.stderr,
        flush=True,
    )
