"""The ``cli`` workload: the wall time of ``taskloom status RUN`` on the embedded store,
as a user's shell sees it (a fresh process each time, start-up and imports included).

Each round, on a data directory of its own and with no Redis URL:

- ``cold``: no server runs (after ``taskloom stop``); the command starts one and leaves
  it running;
- ``warm``: the server that command left runs (``rounds x warm_per_round`` timings);
- ``unkept``: ``TASKLOOM_EMBEDDED_KEEP=false``, the command starts a server and stops it
  at exit, as every command did before the server was kept;
- ``import``: ``python -c 'import taskloom.terminal.cli'``, the floor every command pays.

Medians are reported (min and max of the warm ones too). The run is a pending run
started with ``taskloom start`` (no worker). Compiled bytecode is cached as an
installed package has it, in a temporary ``PYTHONPYCACHEPREFIX`` (nothing is written
beside the sources, even where ``PYTHONDONTWRITEBYTECODE`` is set). Run it alone with
``python benchmarks/run.py --only cli``.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

__all__ = ["TARGET", "measure", "summary", "target_met"]

ROOT = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "taskloom.terminal.cli")
TARGET = "warm p50 < 1 s"
_TIMEOUT_S = 120.0


def _env(data_dir: Path, pycache: Path, **extra: str) -> dict[str, str]:
    drop = ("TASKLOOM_REDIS_URL", "REDIS_URL", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        TASKLOOM_DATA_DIR=str(data_dir),
        PYTHONPYCACHEPREFIX=str(pycache),
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(args: tuple[str, ...], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds the command took (the CPU of the processes it waited for,
    not of a server it left running); a failure is an error, not a figure."""
    cpu = _cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=_TIMEOUT_S
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise subprocess.SubprocessError(
            f"{' '.join(args[2:])} exited {proc.returncode}: {proc.stderr[-500:]}"
        )
    return seconds, _cpu() - cpu


def measure(*, quick: bool = False) -> dict[str, Any]:
    """Time the commands (see the module's docs) and return the benchmark row."""
    rounds, warm_per_round = (1, 3) if quick else (3, 3)
    base = Path(tempfile.mkdtemp(prefix="tl-cli-", dir="/tmp"))
    data_dir = base / "data"
    env = _env(data_dir, base / "pycache")
    status = (*CLI, "status")
    cold: list[float] = []
    warm: list[tuple[float, float]] = []
    unkept: list[float] = []
    imports: list[tuple[float, float]] = []
    try:
        _timed((*CLI, "start", "bench.cli.status", "--run-id", "cli-bench"), env)
        _timed((*status, "cli-bench"), env)  # fills the bytecode cache
        for _ in range(rounds):
            _timed((*CLI, "stop"), env)
            cold.append(_timed((*status, "cli-bench"), env)[0])
            warm.extend(_timed((*status, "cli-bench"), env) for _ in range(warm_per_round))
            _timed((*CLI, "stop"), env)
            unkept_env = env | {"TASKLOOM_EMBEDDED_KEEP": "false"}
            unkept.append(_timed((*status, "cli-bench"), unkept_env)[0])
            imports.append(_timed((sys.executable, "-c", "import taskloom.terminal.cli"), env))
    finally:
        subprocess.run((*CLI, "stop"), env=env, cwd=ROOT, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    walls = [wall for wall, _ in warm]
    warm_p50 = round(median(walls), 3)
    return {
        "workload": "cli",
        "n": len(warm),
        "seconds": warm_p50,
        "command": "taskloom status RUN (embedded store)",
        "warm_p50_s": warm_p50,
        "warm_min_s": round(min(walls), 3),
        "warm_max_s": round(max(walls), 3),
        "warm_cpu_p50_s": round(median(cpu for _, cpu in warm), 3),
        "cold_p50_s": round(median(cold), 3),
        "unkept_p50_s": round(median(unkept), 3),
        "import_p50_s": round(median(wall for wall, _ in imports), 3),
        "import_cpu_p50_s": round(median(cpu for _, cpu in imports), 3),
        "runs": {"warm": len(warm), "cold": len(cold), "unkept": len(unkept)},
    }


def target_met(row: dict[str, Any]) -> bool:
    """Whether a command on a running embedded store answers in under a second."""
    return bool(row["warm_p50_s"] < 1.0)


def summary(row: dict[str, Any]) -> str:
    """The row as one readable line."""
    return (
        f"status on a running embedded store p50 {row['warm_p50_s']} s "
        f"(min {row['warm_min_s']}, max {row['warm_max_s']}; CPU {row['warm_cpu_p50_s']} s); "
        f"starting it {row['cold_p50_s']} s; start-and-stop per command (before) "
        f"{row['unkept_p50_s']} s; imports alone {row['import_p50_s']} s "
        f"(CPU {row['import_cpu_p50_s']} s)"
    )
