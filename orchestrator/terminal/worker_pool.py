"""``taskloom worker --processes N``: N worker processes under one command, one per core
(as Celery's prefork pool or ``dramatiq --processes``): a worker's event loop uses one
core, and model calls cost CPU (the SDK's request building and response parsing).

The command starts N ``taskloom worker`` processes with its own options, says their
pids, and waits. SIGTERM or Ctrl-C stops them all gracefully (each finishes or hands
over what it runs); a process that exits on its own (a crash, a SIGKILL) is started
again after a pause, unless it was refused for good (exit 2: a login or option no retry
can fix), which stops the others and ends the command with that code. Each process
gets SIGTERM from Linux if the command itself is killed, so none is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass

from taskloom.engine.embedded import parent_death_signal
from taskloom.terminal.output import out

__all__ = ["RESTART_PAUSE_S", "child_argv", "supervise"]

RESTART_PAUSE_S = 1.0
"""How long a process that exited on its own waits before it is started again."""
REFUSED = 2
"""A worker's exit code when Redis refused it or an option is wrong: not retried."""


def child_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker process: this one's options, without
    ``--processes``."""
    argv = [sys.executable, "-m", "taskloom.terminal.cli"]
    for flag, value in (
        ("--redis-url", args.redis_url),
        ("--data-dir", args.data_dir),
        ("--key-prefix", args.key_prefix),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.debug:
        argv.append("--debug")
    argv.append("worker")
    for module in args.imports or []:
        argv += ["--import", module]
    if args.concurrency is not None:
        argv += ["--concurrency", str(args.concurrency)]
    return argv


@dataclass
class _Slot:
    """One of the N processes: its number, and the process running in it now."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0


async def supervise(args: argparse.Namespace, *, metrics_ports: list[int | None]) -> int:
    """Run ``args.processes`` worker processes until SIGTERM/SIGINT (see the module's
    docstring); ``metrics_ports[i]`` is process i's ``--metrics-port``. Returns 0 after
    a graceful stop, or the exit code of a process that was refused."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    slots = [_Slot(i) for i in range(args.processes)]
    base = child_argv(args)

    async def start(slot: _Slot) -> None:
        argv = list(base)
        port = metrics_ports[slot.index]
        if port is not None:
            argv += ["--metrics-port", str(port), "--metrics-host", args.metrics_host]
        slot.proc = await asyncio.create_subprocess_exec(*argv, preexec_fn=parent_death_signal())
        slot.started = time.monotonic()
        out(f"worker process {slot.index + 1} of {len(slots)}: pid {slot.proc.pid}")

    for slot in slots:
        await start(slot)
    refused = 0
    try:
        waits = {asyncio.ensure_future(_exited(s)): s for s in slots}
        stop = asyncio.ensure_future(stopping.wait())
        while not stopping.is_set():
            done, _ = await asyncio.wait([stop, *waits], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop}:
                slot = waits.pop(task)
                code = task.result()
                if stopping.is_set():
                    continue
                if code == REFUSED:
                    out(
                        f"worker process {slot.index + 1} exited with code 2 (refused, or an "
                        "option it cannot serve: starting it again cannot help); stopping all"
                    )
                    refused = code
                    stopping.set()
                    continue
                out(
                    f"worker process {slot.index + 1} (pid {slot.proc.pid if slot.proc else '?'}) "
                    f"exited with code {code}; starting another in {RESTART_PAUSE_S:g}s"
                )
                await asyncio.sleep(RESTART_PAUSE_S)
                if stopping.is_set():
                    continue
                await start(slot)
                waits[asyncio.ensure_future(_exited(slot))] = slot
        stop.cancel()
    finally:
        await _stop_all(slots)
    return refused


async def _exited(slot: _Slot) -> int:
    assert slot.proc is not None
    return await slot.proc.wait()


async def _stop_all(slots: list[_Slot]) -> None:
    """SIGTERM to every process still running, then wait for them (each stops
    gracefully: it finishes or hands over its work)."""
    running = [s.proc for s in slots if s.proc is not None and s.proc.returncode is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*(proc.wait() for proc in running))
