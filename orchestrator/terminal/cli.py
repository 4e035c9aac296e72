"""The ``taskloom`` command line.

Exit codes: 0 success, 1 failure (or doctor findings), 2 usage error or Redis
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from taskloom.client import Orchestrator
from taskloom.errors import RedisRefusedError, RedisUnavailableError, TaskloomError, UserError
from taskloom.redaction import redact_text, redact_url
from taskloom.settings import Settings
from taskloom.terminal import (
    catalog,
    dlq_commands,
    inbox_cli,
    run_commands,
    runs_commands,
    store_commands,
    worker_command,
)
from taskloom.terminal import serve as web_commands
from taskloom.terminal.output import out

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Orchestrator], Coroutine[Any, Any, int]]
Command = Callable[[str, Handler, str], argparse.ArgumentParser]
"""Makes one subcommand's parser: ``cmd(name, handler, help)``; the modules with the
commands (``run_commands``, ``worker_command``, ``dlq_commands``, ``runs_commands``,
``catalog``, ``inbox_cli``, ``serve``) get it in their ``register(cmd)``."""


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    settings = Settings.from_env(
        redis_url=args.redis_url, data_dir=args.data_dir, key_prefix=args.key_prefix, **extra
    )
    if settings.embedded_keep is None:  # a command leaves the embedded Redis to the next
        settings = settings.model_copy(update={"embedded_keep": True})
    return settings


async def _doctor(args: argparse.Namespace, orch: Orchestrator) -> int:
    from taskloom.terminal.doctor import diagnose, render_json, render_text

    report = await diagnose(orch.store.client, durability=orch.settings.durability)
    if not args.json and orch.embedded is not None:
        out(f"store: {store_commands.describe(orch.embedded)}")
    out(render_json(report) if args.json else render_text(report))
    return 0 if report.ok else 1


# -- parsing ----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskloom",
        description="durable orchestration of LLM subagents on Redis",
        epilog="With no Redis URL, the first command starts an embedded Redis under the data "
        "directory and leaves it running for the next ones; `taskloom stop` stops it, and it "
        "stops by itself after TASKLOOM_EMBEDDED_IDLE (default 30m) without a client.",
    )
    p.add_argument(
        "--redis-url",
        help="Redis URL (default: TASKLOOM_REDIS_URL, REDIS_URL, else the embedded server)",
    )
    p.add_argument("--data-dir", help="data directory of the embedded Redis")
    p.add_argument("--key-prefix", help="prefix of every Redis key")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(handler=handler)
        return sp

    for register in (
        run_commands.register,
        worker_command.register,
        dlq_commands.register,
        runs_commands.register,
        catalog.register,
    ):
        register(cmd)
    doc = cmd("doctor", _doctor, "check the Redis in use: version, persistence, eviction, latency")
    doc.add_argument("--json", action="store_true")
    for register in (inbox_cli.register, web_commands.register, store_commands.register):
        register(cmd)
    return p


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


def _check_redis_url(args: argparse.Namespace, settings: Settings) -> None:
    """A Redis URL the client cannot parse, said before connecting, naming where it came
    from and the forms it takes (redis-py's own error is a ValueError and a traceback)."""
    url = settings.redis_url
    if url is None or url.lower().startswith(_REDIS_SCHEMES):
        return
    if args.redis_url is not None:
        source = "--redis-url"
    else:
        import os

        source = next((v for v in ("TASKLOOM_REDIS_URL", "REDIS_URL") if os.environ.get(v)), "")
        source = source or "the Redis URL"
    raise UserError(
        f"{source} {redact_url(url)!r} is not a Redis URL: give redis://HOST:6379/0, "
        f"rediss://HOST:6380/0 (TLS), unix:///path/to/redis.sock, redis+cluster://HOST:PORT "
        f"(a Redis Cluster), or leave it unset for the embedded Redis"
    )


async def _main(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check_redis_url(args, settings)
    orch = Orchestrator(settings=settings)
    if getattr(args, "connects", True):
        await orch.connect()
        store_commands.tell_if_started(orch)
    try:
        handler: Handler = args.handler
        return await handler(args, orch)
    finally:
        await orch.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskloom`` console script."""
    args = _parser().parse_args(argv)
    log_file = _log_file(args)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[log_file] if log_file is not None else None,
    )
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    except (RedisUnavailableError, RedisRefusedError) as exc:
        if args.debug:
            raise
        if args.command == "doctor" and getattr(args, "json", False):
            out(json.dumps(_no_server_report(exc)))
        print(f"taskloom: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except TaskloomError as exc:
        if args.debug:
            raise
        print(f"taskloom: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1
    finally:
        if log_file is not None:
            log_file.close()
            if log_file.warnings:
                print(
                    f"taskloom: {log_file.warnings} warning(s) logged to {log_file.baseFilename}",
                    file=sys.stderr,
                )


def _no_server_report(exc: RedisUnavailableError | RedisRefusedError) -> dict[str, Any]:
    """``doctor --json``'s report when there is no server to check: out of reach, or
    refusing this client (its login, its permissions, its TLS)."""
    check: dict[str, Any]
    if isinstance(exc, RedisRefusedError):
        check = {"name": "access", "fix": exc.fix}
    else:
        check = {"name": "reachable", "fix": "start Redis or fix TASKLOOM_REDIS_URL"}
    check |= {"ok": False, "detail": redact_text(str(exc))}
    return {"checks": [check], "ok": False}


def _pipe_closed() -> int:
    """The reader of our output went away (``taskloom runs | head``): end quietly, as
    ``cat`` or ``git log`` do, with the exit status of a death by SIGPIPE (128 + 13).
    Python's recommended way: devnull over stdout, so the flush at exit cannot fail
    again and print a second error."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


class _LogFile(logging.FileHandler):
    """The log of an interactive command: a file, counting its warnings."""

    warnings = 0

    def _open(self) -> Any:  # on the first record: no file, no directory, until then
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.warnings += 1
        super().emit(record)


def _log_file(args: argparse.Namespace) -> _LogFile | None:
    """Where ``demo``, ``run`` and ``chat`` log on a terminal: ``<data_dir>/taskloom.log``,
    not stderr, whose lines would land in the live table and in the prompts a person is
    typing into (``--debug`` keeps them on stderr). ``None``: log to stderr."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if args.debug or not interactive or args.command not in ("demo", "run", "chat"):
        return None
    try:
        data_dir = Settings.from_env(data_dir=args.data_dir).data_dir
        return _LogFile(data_dir / "taskloom.log", delay=True)
    except TaskloomError:
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
