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

from taskloom.engine.embedded import parent_death_signal
from taskloom.terminal.cli import global_argv
from taskloom.terminal.output import out

__all__ = ["RESTART_PAUSE_S", "child_argv", "supervise"]

RESTART_PAUSE_S = 1.0
"""How long a process that exited on its own waits before it is started again."""
REFUSED = 2
"""A worker's exit code when Redis refused it or an option is wrong: not retried."""


def child_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker process: this one's options, without
    ``--processes``."""
    argv = [sys.executable, "-m", "taskloom.terminal.cli", *global_argv(args), "worker"]
    for module in args.imports or []:
        argv += ["--import", module]
    if args.concurrency is not None:
        argv += ["--concurrency", str(args.concurrency)]
    return argv


async def supervise(args: argparse.Namespace, *, metrics_ports: list[int | None]) -> int:
    """Run ``args.processes`` worker processes until SIGTERM/SIGINT (see the module's
    docstring); ``metrics_ports[i]`` is process i's ``--metrics-port``. Returns 0 after
    a graceful stop, or the exit code of a process that was refused."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    n, base = args.processes, child_argv(args)
    running: dict[int, asyncio.subprocess.Process] = {}  # process number -> its process
    refused = 0

    async def keep(i: int) -> None:
        """Keep process ``i`` running until the command stops; a process refused for
        good, or one that cannot be started (an OSError), stops the command."""
        nonlocal refused
        argv = list(base)
        if metrics_ports[i] is not None:
            argv += ["--metrics-port", str(metrics_ports[i]), "--metrics-host", args.metrics_host]
        try:
            while not stopping.is_set():
                proc = await asyncio.create_subprocess_exec(*argv, preexec_fn=parent_death_signal())
                running[i] = proc
                out(f"worker process {i + 1} of {n}: pid {proc.pid}")
                if stopping.is_set():  # the stop came while it started: not seen by _stop
                    _stop([proc])
                code = await proc.wait()
                if stopping.is_set():
                    return
                if code == REFUSED:
                    out(
                        f"worker process {i + 1} exited with code 2 (refused, or an option "
                        "it cannot serve: starting it again cannot help); stopping all"
                    )
                    refused = code
                    return
                out(
                    f"worker process {i + 1} (pid {proc.pid}) exited with code {code}; "
                    f"starting another in {RESTART_PAUSE_S:g}s"
                )
                with contextlib.suppress(TimeoutError):  # the pause, unless told to stop
                    await asyncio.wait_for(stopping.wait(), RESTART_PAUSE_S)
        finally:
            stopping.set()

    keepers = [asyncio.ensure_future(keep(i)) for i in range(n)]
    try:
        await stopping.wait()
    finally:
        _stop(list(running.values()))  # each stops gracefully: finishes or hands over
        ended = await asyncio.gather(*keepers, return_exceptions=True)
    for failure in ended:
        if isinstance(failure, Exception):
            raise failure
    return refused


def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM to each of ``procs`` still running."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                proc.send_signal(signal.SIGTERM)
