"""``taskloom worker``: take runs and activities until stopped, optionally serving
Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
from typing import TYPE_CHECKING

from taskloom.cliargs import int_in
from taskloom.engine.worker import settle_memory
from taskloom.errors import UserError
from taskloom.terminal.output import out

if TYPE_CHECKING:
    from taskloom.client import Orchestrator
    from taskloom.engine.metrics import Metrics
    from taskloom.engine.worker import Worker
    from taskloom.terminal.cli import Command

__all__ = ["register"]


def register(cmd: Command) -> None:
    """Add the ``worker`` command to the CLI."""
    w = cmd("worker", _worker, "run a worker: take runs and activities until stopped")
    w.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="module whose @workflow/@activity definitions to serve (repeatable)",
    )
    w.add_argument(
        "--concurrency", type=int_in(1, 10_000), help="activities at once (TASKLOOM_CONCURRENCY)"
    )
    w.add_argument(
        "--processes",
        type=int_in(1, 256),
        default=1,
        help="worker processes to run, each with --concurrency slots (one per core uses "
        "them all); one that exits on its own is started again (default 1)",
    )
    w.add_argument(
        "--metrics-port",
        type=int_in(0, 65535),
        help="serve Prometheus metrics on /metrics at this port (with --processes N, "
        "process i at PORT+i)",
    )
    w.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default: local)"
    )


async def _worker(args: argparse.Namespace, orch: Orchestrator) -> int:
    if args.processes > 1:
        from taskloom.terminal.worker_pool import supervise

        return await supervise(args, metrics_ports=_metrics_ports(args))
    metrics = None
    if args.metrics_port is not None:  # prometheus_client, the WSGI server: only then
        from taskloom.engine.metrics import Metrics

        metrics = Metrics()
    worker = orch.worker(
        modules=args.imports or [],
        concurrency=args.concurrency or orch.settings.concurrency,
        metrics=metrics,
    )
    settle_memory(collect=False)  # this process has only imported code: no pass needed
    out(
        f"worker {worker.worker_id}: {len(worker.registry.workflow_names)} workflows, "
        f"{len(worker.registry.activity_names)} activities, queue {worker.queue!r}, "
        f"{worker.concurrency} slots (Ctrl-C or SIGTERM stops gracefully)"
    )
    ready = asyncio.ensure_future(_say_ready(worker))
    try:
        return await _serve(args, orch, worker, metrics)
    finally:
        ready.cancel()


def _metrics_ports(args: argparse.Namespace) -> list[int | None]:
    """Each process's ``--metrics-port`` under ``--processes N``: PORT, PORT+1, ...
    (0: each a free port of its own, said as it starts)."""
    n, port = args.processes, args.metrics_port
    if port is None or port == 0:
        return [port] * n
    if port + n - 1 > 65535:
        last = port + n - 1
        raise UserError(f"--metrics-port {port} with --processes {n} needs ports up to {last}")
    return [port + i for i in range(n)]


async def _say_ready(worker: Worker) -> None:
    """One line once the layers loading in the background are in: from then on the
    worker does no more start-up work (a benchmark or a supervisor may wait for it)."""
    await worker.loaded.wait()
    out(
        f"worker {worker.worker_id}: ready, {len(worker.registry.workflow_names)} workflows, "
        f"{len(worker.registry.activity_names)} activities"
    )


async def _serve(
    args: argparse.Namespace, orch: Orchestrator, worker: Worker, metrics: Metrics | None
) -> int:
    if metrics is None:
        await worker.run(install_signal_handlers=True)
        return 0
    token = orch.settings.metrics_token
    async with await metrics.serve(
        host=args.metrics_host, port=args.metrics_port, token=token
    ) as server:
        guard = " (needs the bearer TASKLOOM_METRICS_TOKEN)" if token else ""
        out(f"metrics on {server.url}{guard}")
        if token is None and not ipaddress.ip_address(server.host).is_loopback:
            out("note: /metrics is open to the network; set TASKLOOM_METRICS_TOKEN")
        await worker.run(install_signal_handlers=True)
    return 0
