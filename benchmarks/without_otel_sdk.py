"""Run a module as ``python -m`` does, in a process where the OpenTelemetry SDK cannot be
imported: as on an install of taskloom without its ``otel`` extra, where the SDK is not
installed (the benchmarks' environment has it, for the trace tests).

redis-py 8 imports the SDK's metrics at import time whenever the SDK is installed
(``redis.observability``; ~90 ms of a worker's start on this machine), so where it is
installed it is part of any redis-py program's start, taskloom's and the raw loop's
alike::

    python -m benchmarks.without_otel_sdk -m MODULE [ARG ...]
"""

from __future__ import annotations

import runpy
import sys

__all__ = ["main"]


def main(argv: list[str]) -> None:
    """Make ``opentelemetry.sdk`` unimportable (``ModuleNotFoundError``, as when it is
    not installed), then run ``-m MODULE`` with ``ARG ...`` as its command line."""
    if len(argv) < 2 or argv[0] != "-m":
        raise SystemExit("usage: python -m benchmarks.without_otel_sdk -m MODULE [ARG ...]")
    sys.modules["opentelemetry.sdk"] = None  # type: ignore[assignment]
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
