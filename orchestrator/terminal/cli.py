"""The ``taskloom`` command line.

Exit codes: 0 success, 1 failure (or doctor findings), 2 usage error or Redis
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.errors import RedisRefusedError, RedisUnavailableError, TaskloomError, UserError
from taskloom.redaction import redact_text, redact_url
from taskloom.terminal.output import out

if TYPE_CHECKING:  # main() loads them, with the command's module, while the GC rests
    from taskloom.client import Orchestrator
    from taskloom.settings import Settings

__all__ = ["global_argv", "main"]

Handler = Callable[[argparse.Namespace, "Orchestrator"], Coroutine[Any, Any, int]]
Command = Callable[[str, Handler, str], argparse.ArgumentParser]
"""Makes one subcommand's parser: ``cmd(name, handler, help)``; the modules with the
commands (``run_commands``, ``worker_command``, ``dlq_commands``, ``runs_commands``,
``catalog``, ``inbox_cli``, ``serve``) get it in their ``register(cmd)``."""


COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("run_commands", "the whole pipeline end to end, with a simulated LLM (no key needed)"),
    "run": ("run_commands", "hand taskloom a goal: plan, run, verify, integrate (live)"),
    "chat": ("run_commands", "a conversation: goals and follow-ups that build on the last answer"),
    "worker": ("worker_command", "run a worker: take runs and activities until stopped"),
    "dlq": ("dlq_commands", "the dead-letter queue: activities that failed for good"),
    "runs": ("runs_commands", "list runs by status; `runs delete RUN...` deletes ended runs"),
    "status": ("runs_commands", "show one run"),
    "history": ("runs_commands", "show a run's event log"),
    "cancel": ("runs_commands", "cancel a run and its children"),
    "result": (
        "runs_commands",
        "a run's result (a pipeline's answer); exit 3 while unfinished (--wait waits)",
    ),
    "signal": ("runs_commands", "send a signal to a run"),
    "start": ("runs_commands", "start a workflow by name (a worker must serve it)"),
    "templates": ("catalog", "the workflow templates: names and what each is for"),
    "roles": ("catalog", "the roles a plan may use: the built-in agents and yours"),
    "doctor": ("cli", "check the Redis in use: version, persistence, eviction, latency"),
    "inbox": ("inbox_cli", "the escalation inbox: list, show, decide and edit items"),
    "serve": ("serve", "serve the web inbox and /metrics (sign in with TASKLOOM_INBOX_TOKEN)"),
    "link": (
        "serve",
        "magic links: one inbox item and one decision for a reviewer without an account",
    ),
    "stop": ("store_commands", ""),
}
"""Each command, in the order ``taskloom --help`` lists them: the module in
``taskloom.terminal`` whose ``register(cmd)`` adds it, and its help line. A command
imports only its own module (``taskloom worker`` neither the pipeline nor the web);
the others are listed by name (``tests/test_startup.py`` checks the table against the
modules)."""

_VALUED = ("--redis-url", "--data-dir", "--key-prefix")
"""The global options that take a value (the word after them is not the command)."""


def global_argv(args: argparse.Namespace) -> list[str]:
    """The global options ``args`` was given, as words before a command (for a process
    this one starts on the same store: ``worker --processes``)."""
    words: list[str] = []
    for flag in _VALUED:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            words += [flag, str(value)]
    return [*words, "--debug"] if args.debug else words


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word of ``argv``: its first word that is neither an option nor the
    value of a global one."""
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    from taskloom.settings import Settings

    settings = Settings.from_env(
        redis_url=args.redis_url, data_dir=args.data_dir, key_prefix=args.key_prefix, **extra
    )
    if settings.embedded_keep is None:  # a command leaves the embedded Redis to the next
        settings = dataclasses.replace(settings, embedded_keep=True)
    return settings


async def _doctor(args: argparse.Namespace, orch: Orchestrator) -> int:
    from taskloom.terminal import store_commands
    from taskloom.terminal.doctor import diagnose, render_json, render_text

    report = await diagnose(orch.store.client, durability=orch.settings.durability)
    if not args.json and orch.embedded is not None:
        out(f"store: {store_commands.describe(orch.embedded)}")
    out(render_json(report) if args.json else render_text(report))
    return 0 if report.ok else 1


# -- parsing ----------------------------------------------------------------------------
def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of the command line whose command word is ``command``: in full for
    that command, the others by name and help line (``None``: all by name)."""
    from taskloom.terminal import store_commands

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

    wanted = COMMANDS.get(command or "", ("", ""))[0]
    done: set[str] = set()
    for name, (module, help_) in COMMANDS.items():
        if module == "cli":
            doc = cmd("doctor", _doctor, help_)
            doc.add_argument("--json", action="store_true")
        elif module in done:
            continue
        elif module in (wanted, "store_commands"):  # `stop` is cheap: its module is here
            done.add(module)
            owner = store_commands if module == "store_commands" else _module(module)
            owner.register(cmd)
        else:  # listed by name only; its own module parses it when it is the command
            sub.add_parser(name, help=help_, description=help_, add_help=False)
    return p


def _module(name: str) -> Any:
    return importlib.import_module(f"taskloom.terminal.{name}")


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
        source = next((v for v in ("TASKLOOM_REDIS_URL", "REDIS_URL") if os.environ.get(v)), "")
        source = source or "the Redis URL"
    raise UserError(
        f"{source} {redact_url(url)!r} is not a Redis URL: give redis://HOST:6379/0, "
        f"rediss://HOST:6380/0 (TLS), unix:///path/to/redis.sock, redis+cluster://HOST:PORT "
        f"(a Redis Cluster), or leave it unset for the embedded Redis"
    )


async def _main(args: argparse.Namespace) -> int:
    from taskloom.client import Orchestrator
    from taskloom.terminal import store_commands

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
    words = sys.argv[1:] if argv is None else list(argv)
    args = _load(lambda: _parser(_command_of(words)).parse_args(words))
    _import_from_cwd()
    log_file = _log_file(args)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[log_file] if log_file is not None else None,
    )
    if not args.debug:
        # Outages are reported by taskloom, a line each ("Redis error (...); retrying");
        # redis-py's cluster client also logs every failed topology refresh, at ERROR
        # with its traceback, several a second while the cluster is out of reach.
        logging.getLogger("redis").setLevel(logging.CRITICAL)
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


def _load(parse: Callable[[], argparse.Namespace]) -> argparse.Namespace:
    """Parse the command line, which imports the command's module (for ``worker``: the
    client, the engine, Redis and pydantic), with the cyclic GC paused: what loads now
    lives as long as the process (the worker freezes it, :func:`settle_memory
    <taskloom.engine.worker.settle_memory>`), and the GC passes over it while it
    grew took ~40 ms of a worker's start."""
    paused = gc.isenabled()
    gc.disable()
    try:
        args = parse()
        importlib.import_module("taskloom.client")  # every command makes an Orchestrator
        return args
    finally:
        if paused:
            gc.enable()


def _import_from_cwd() -> None:
    """Find the modules ``--import`` names in the current directory, as ``python -m``,
    celery and uvicorn do: the installed ``taskloom`` script puts only its own
    directory on ``sys.path``."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


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
    from taskloom.settings import Settings

    try:
        data_dir = Settings.from_env(data_dir=args.data_dir).data_dir
        return _LogFile(data_dir / "taskloom.log", delay=True)
    except TaskloomError:
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
