"""Typed settings, read from the environment only at the edges.

Explicit arguments win over ``TASKLOOM_*`` variables, which win over defaults::

    settings = Settings.from_env(concurrency=4)   # env for the rest
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from taskloom.agents.limits import RateLimits
from taskloom.agents.pricing import PriceTable
from taskloom.display import parse_age
from taskloom.errors import ConfigurationError, TaskloomError
from taskloom.redaction import MASK, redact_url

__all__ = ["MIN_WEBHOOK_SECRET_CHARS", "Settings", "default_data_dir"]

MIN_WEBHOOK_SECRET_CHARS = 32
"""The shortest webhook secret accepted: as long as the web inbox's TASKLOOM_SECRET,
and as the HMAC-SHA256 key RFC 2104 recommends (at least the hash's 32 bytes); 32
random URL-safe characters hold about 190 bits, past any offline guessing of a
captured delivery's signature."""

_SECRETS = ("secret", "inbox_token", "metrics_token", "webhook_secret")
"""Settings that are credentials: never shown."""
_URLS = ("redis_url", "smtp_url", "blob_url")
"""Settings that are URLs which may carry a password: shown without it."""


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory: ``$XDG_DATA_HOME/taskloom`` or ``~/.local/share/taskloom``."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "taskloom"


# setting name -> environment variables, first one set wins
_ENV: dict[str, tuple[str, ...]] = {
    "redis_url": ("TASKLOOM_REDIS_URL", "REDIS_URL"),
    "redis_cluster": ("TASKLOOM_REDIS_CLUSTER",),
    "data_dir": ("TASKLOOM_DATA_DIR",),
    "embedded_keep": ("TASKLOOM_EMBEDDED_KEEP",),
    "embedded_idle": ("TASKLOOM_EMBEDDED_IDLE",),
    "key_prefix": ("TASKLOOM_KEY_PREFIX",),
    "concurrency": ("TASKLOOM_CONCURRENCY",),
    "lease_ttl": ("TASKLOOM_LEASE_TTL",),
    "prefetch": ("TASKLOOM_PREFETCH",),
    "payload_threshold": ("TASKLOOM_PAYLOAD_THRESHOLD",),
    "payload_hard_limit": ("TASKLOOM_PAYLOAD_HARD_LIMIT",),
    "blob_url": ("TASKLOOM_BLOB_URL",),
    "retention": ("TASKLOOM_RETENTION",),
    "appendfsync": ("TASKLOOM_APPENDFSYNC",),
    "durability": ("TASKLOOM_DURABILITY",),
    "queue": ("TASKLOOM_QUEUE",),
    "queue_partitions": ("TASKLOOM_QUEUE_PARTITIONS",),
    "rate_limits": ("TASKLOOM_RATE_LIMITS",),
    "prices": ("TASKLOOM_PRICES",),
    "model": ("TASKLOOM_MODEL",),
    "secret": ("TASKLOOM_SECRET",),
    "inbox_token": ("TASKLOOM_INBOX_TOKEN",),
    "metrics_token": ("TASKLOOM_METRICS_TOKEN",),
    "signin_failures": ("TASKLOOM_SIGNIN_FAILURES",),
    "signin_failures_all": ("TASKLOOM_SIGNIN_FAILURES_ALL",),
    "signin_window": ("TASKLOOM_SIGNIN_WINDOW",),
    "public_url": ("TASKLOOM_PUBLIC_URL",),
    "trusted_hosts": ("TASKLOOM_TRUSTED_HOSTS",),
    "webhooks": ("TASKLOOM_WEBHOOKS",),
    "webhook_secret": ("TASKLOOM_WEBHOOK_SECRET",),
    "smtp_url": ("TASKLOOM_SMTP_URL",),
    "notify_from": ("TASKLOOM_NOTIFY_FROM",),
    "inbox_sla": ("TASKLOOM_INBOX_SLA",),
    "link_ttl": ("TASKLOOM_LINK_TTL",),
    "traces": ("TASKLOOM_TRACES",),
}


def webhook_secret_problem(length: int) -> str:
    """Why a webhook secret of ``length`` characters is refused, and how to make one."""
    return (
        f"the webhook secret has {length} characters; use at least "
        f"{MIN_WEBHOOK_SECRET_CHARS} random ones, e.g. `python -c 'import secrets; "
        f"print(secrets.token_urlsafe(32))'`, and give the same one to every receiver"
    )


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Everything taskloom can be configured with: keyword arguments, each checked (a
    :class:`~taskloom.ConfigurationError` says what to fix); text is read as the field's
    type, as from the environment (``"8"``, ``"1.5"``, ``"true"``). Immutable: derive
    another with ``dataclasses.replace(settings, concurrency=4)``.

    ``redis_url`` unset means: start (or reuse) an embedded redis-server under
    ``data_dir``.
    """

    redis_url: str | None = None
    """Redis to use; ``None`` starts the embedded server (env: TASKLOOM_REDIS_URL, REDIS_URL)."""
    redis_cluster: bool | None = None
    """Whether ``redis_url`` names a Redis Cluster (TASKLOOM_REDIS_CLUSTER). Unset: the
    URL says, by its scheme (``redis+cluster://HOST:PORT``, ``rediss+cluster://``); true
    for a plain ``redis://`` / ``rediss://`` URL of any cluster node, as managed services
    give for a configuration endpoint."""
    data_dir: Path = field(default_factory=default_data_dir)
    """Where the embedded Redis keeps its socket and AOF (env: TASKLOOM_DATA_DIR)."""
    embedded_keep: bool | None = None
    """Whether the embedded Redis outlives the process that started it
    (TASKLOOM_EMBEDDED_KEEP). Unset: the ``taskloom`` commands leave it running for the
    next command (``taskloom stop`` stops it), and a Python program stops the one it
    started when it closes; ``true`` or ``false`` decide for both."""
    embedded_idle: float = 1800.0
    """Seconds a kept embedded Redis runs without any client before it stops by itself,
    its data saved (TASKLOOM_EMBEDDED_IDLE: seconds, or ``30m``, ``2h``; ``0``: never).
    A running worker or ``taskloom serve`` is a client: it keeps the server up."""
    key_prefix: str = "tl"
    """Prefix of every Redis key, so several deployments share one Redis (TASKLOOM_KEY_PREFIX)."""
    concurrency: int = 16
    """Activities a worker runs at once (TASKLOOM_CONCURRENCY)."""
    lease_ttl: float = 1.0
    """Seconds a worker's lease on a run or an activity lasts without a heartbeat: how
    soon a dead worker's work is taken over (TASKLOOM_LEASE_TTL). Raise it if workflow
    code may block the event loop for longer than a quarter of it."""
    prefetch: int | None = None
    """Deliveries a busy worker may claim ahead of free slots, when its activities are
    short (None: as many as ``concurrency``; 0: never) (TASKLOOM_PREFETCH)."""
    appendfsync: Literal["everysec", "always"] = "everysec"
    """AOF fsync policy of the embedded Redis (TASKLOOM_APPENDFSYNC); ``durability``
    ``"fsync"`` starts it with ``always``."""
    durability: Literal["ack", "fsync"] = "ack"
    """What a recorded outcome survives (TASKLOOM_DURABILITY): ``"ack"``, Redis's
    acknowledgment (under ``appendfsync everysec`` a crash of Redis or its machine may
    lose about the last second; an owner that finds Redis behind it replays the run), or
    ``"fsync"``, on the Redis host's disk before taskloom goes on (WAITAOF on Redis ≥ 7.2,
    else a server with ``appendfsync always``; refused at connect on any other)."""
    queue: str = "default"
    """Activity queue a worker takes work from (TASKLOOM_QUEUE)."""
    queue_partitions: int = 1
    """Streams the activity queue is spread over, each with its own hash tag, so a Redis
    Cluster serves one queue from several masters (TASKLOOM_QUEUE_PARTITIONS); the
    durable timers are spread over as many sorted sets. Workers read every partition any
    worker has used; see :mod:`taskloom.engine.partitions`."""
    payload_threshold: int = 32 * 1024
    """Bytes of JSON above which an activity's arguments or result go to the blob store
    and the log keeps a reference (TASKLOOM_PAYLOAD_THRESHOLD)."""
    payload_hard_limit: int = 32 * 1024 * 1024
    """Bytes of JSON above which a value is refused (TASKLOOM_PAYLOAD_HARD_LIMIT)."""
    blob_url: str | None = None
    """Blob store: a directory or any fsspec URL (``s3://bucket/taskloom``); default
    ``<data_dir>/blobs``, which only workers on this machine share (TASKLOOM_BLOB_URL)."""
    retention: float | None = None
    """Seconds a finished run is kept, then deleted with the blobs only it referenced;
    unset: kept until deleted by hand (TASKLOOM_RETENTION)."""

    rate_limits: dict[str, dict[str, int | None]] = field(default_factory=dict)
    """Requests and tokens per minute per model or ``provider:*`` pattern, shared by
    every worker, over the built-in tier-1 limits (TASKLOOM_RATE_LIMITS, JSON such as
    ``{"openai:*": {"rpm": 5000, "tpm": 2000000}}``; ``null`` lifts a limit)."""
    prices: Path | None = None
    """A ``.json`` or ``.toml`` file of model prices (USD per million tokens) over the
    built-in table (TASKLOOM_PRICES)."""

    model: str | None = None
    """The default model, ``provider:model``, for agents and pipelines that name none
    (TASKLOOM_MODEL)."""
    secret: str | None = None
    """Signs session cookies and magic links of the web inbox; at least 32 characters.
    Unset: ``taskloom serve`` makes one and keeps it in ``<data_dir>/secret``
    (TASKLOOM_SECRET)."""
    inbox_token: str | None = None
    """The token internal users sign in to the web inbox with: at least 16 characters,
    8 of them different, and not the secret (TASKLOOM_INBOX_TOKEN)."""
    metrics_token: str | None = None
    """The bearer token scrapers send to ``/metrics`` (Prometheus: ``authorization:
    {credentials: ...}``), of ``taskloom serve`` and of workers; it cannot sign in; at
    least 32 characters (TASKLOOM_METRICS_TOKEN). Unset: ``serve``'s ``/metrics`` takes
    the inbox token (with a note at start-up) and a worker's is open, on 127.0.0.1 unless
    told otherwise (with a warning when it is reachable from the network)."""
    signin_failures: int = 10
    """Failed sign-ins (and wrong ``/metrics`` bearers) one client address may make per
    ``signin_window``; then 429 until the window ends (TASKLOOM_SIGNIN_FAILURES)."""
    signin_failures_all: int = 100
    """Failed sign-ins from all addresses together per ``signin_window``, so a guesser
    with many addresses is slowed too (TASKLOOM_SIGNIN_FAILURES_ALL)."""
    signin_window: float = 300.0
    """Seconds of the sign-in throttle's window (TASKLOOM_SIGNIN_WINDOW)."""
    public_url: str = "http://127.0.0.1:8765"
    """The web inbox's address as people reach it, for magic links and notifications
    (TASKLOOM_PUBLIC_URL)."""
    trusted_hosts: list[str] = field(default_factory=list)
    """``Host`` names the web inbox answers; any other gets 400, so a DNS-rebinding page
    reaches nothing (TASKLOOM_TRUSTED_HOSTS: comma-separated; ``*.example.com`` matches
    subdomains, ``*`` any). Empty: the host of ``public_url``, localhost, 127.0.0.1 and
    [::1]."""
    webhooks: list[str] = field(default_factory=list)
    """URLs told (JSON POST, HMAC-signed) when an inbox item opens, nears or breaches its
    SLA, or is decided (TASKLOOM_WEBHOOKS: comma-separated)."""
    webhook_secret: str | None = None
    """The shared secret webhook deliveries are signed with, at least
    :data:`MIN_WEBHOOK_SECRET_CHARS` characters (TASKLOOM_WEBHOOK_SECRET); see
    :func:`taskloom.inbox.notify.verify_signature`."""
    smtp_url: str | None = None
    """``smtp://host:port`` for e-mail notifications to assignees (TASKLOOM_SMTP_URL)."""
    notify_from: str = "taskloom@localhost"
    """The From address of notification e-mails (TASKLOOM_NOTIFY_FROM)."""
    inbox_sla: float | None = None
    """Seconds an inbox item may wait when the workflow set no SLA (TASKLOOM_INBOX_SLA)."""
    link_ttl: float = 7 * 86400.0
    """The longest a magic link sent by mail works, in seconds (TASKLOOM_LINK_TTL; default
    7 days, at most 90): a mailed link works until its item's SLA is due plus a grace
    (:data:`taskloom.inbox.notify.LINK_GRACE`), within this bound; this long when the item
    has no SLA. It stops at once when the item is reassigned or decided."""

    traces: Literal["off", "otlp"] = "off"
    """``otlp``: OpenTelemetry spans of runs, attempts, verifications and model calls,
    exported over OTLP as the ``OTEL_*`` variables say (TASKLOOM_TRACES; needs the
    ``otel`` extra; see :mod:`taskloom.tracing`)."""

    def __post_init__(self) -> None:
        """Check every value and bring it to its field's type, as read from the
        environment (text) or given in Python; a value that cannot be is refused, with
        what to give instead."""
        problems = []
        for name, check in _CHECKS.items():
            try:
                object.__setattr__(self, name, check(getattr(self, name)))
            except (ValueError, TypeError) as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise ConfigurationError(f"invalid taskloom settings ({'; '.join(problems)})")

    def __repr__(self) -> str:
        """The settings without their credentials, URLs without their passwords."""
        shown = []
        for f in fields(self):
            if f.name in _SECRETS:
                continue
            value = getattr(self, f.name)
            if f.name in _URLS and isinstance(value, str):
                value = redact_url(value)
            elif f.name == "webhooks":
                value = [redact_url(url) for url in value]
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def display(self) -> dict[str, Any]:
        """The settings as JSON values to show a person or write to a log: every
        credential is ``"***"`` (``None`` when unset) and URLs carry no password.
        ``dataclasses.asdict(settings)`` keeps the real values, for code that needs them."""
        values = {
            f.name: str(v) if isinstance(v := getattr(self, f.name), Path) else v
            for f in fields(self)
        }
        data: dict[str, Any] = json.loads(json.dumps(values))  # lists and mappings its own
        for name in _SECRETS:
            data[name] = None if data[name] is None else MASK
        for name in _URLS:
            data[name] = None if data[name] is None else redact_url(data[name])
        data["webhooks"] = [redact_url(url) for url in data["webhooks"]]
        return data

    def price_table(self) -> PriceTable:
        """The built-in prices, with :attr:`prices` (a file) over them."""
        return PriceTable.from_file(self.prices) if self.prices else PriceTable.builtin()

    def rate_limit_table(self) -> dict[str, RateLimits]:
        """:attr:`rate_limits` as the agents' limit table."""
        return {model: RateLimits(**limits) for model, limits in self.rate_limits.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); ``overrides`` win.

        Overrides whose value is ``None`` are ignored, so CLI options can be passed as is.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, variables in _ENV.items():
            for var in variables:
                if env.get(var):
                    values[name] = env[var]
                    break
        if "data_dir" not in values and env is not os.environ:
            values["data_dir"] = default_data_dir(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{exc}; fix the argument or the TASKLOOM_* environment variable"
            ) from None


# -- checking each setting ---------------------------------------------------------------
# Text (the environment's) is read as the field's type; values of the type are taken as
# they are. Each check returns the value to keep or raises ValueError saying what to give.

Check = Callable[[Any], Any]

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"give text (got {value!r})")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"give true or false (got {value!r})")


def _bounds(low: float | None, high: float | None, *, above: bool) -> str:
    """``from 1 to 10000``, ``above 0``, ``0 or more``, ``at most 1024``."""
    if low is not None and high is not None:
        return f"{'above' if above else 'from'} {low:g} {'and at most' if above else 'to'} {high:g}"
    if low is not None:
        return f"above {low:g}" if above else f"{low:g} or more"
    return f"at most {high:g}"


def _real(value: Any, want: str) -> float:
    """``value`` as a real number (text such as ``"8"`` or ``"1.5"`` too), else a
    ValueError asking for ``want``; booleans and NaN are no numbers here."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"give {want} (got {value!r})") from None
    if isinstance(number, bool) or not isinstance(number, int | float) or number != number:
        raise ValueError(f"give {want} (got {value!r})")
    return float(number)


def _whole(low: int | None = None, high: int | None = None) -> Check:
    """A whole number within ``[low, high]`` (text such as ``"8"`` or ``"8.0"`` too)."""
    want = f"a whole number {_bounds(low, high, above=False)}"

    def check(value: Any) -> int:
        real = _real(value, want)
        if isinstance(value, float | str) and not real.is_integer():
            raise ValueError(f"give {want} (got {value!r})")
        number = value if isinstance(value, int) else int(real)  # exact past 2**53
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"give {want} (got {value!r})")
        return number

    return check


def _number(low: float | None = None, high: float | None = None, *, above: bool = False) -> Check:
    """A number of seconds (or any real) past ``low`` (``above``: strictly) and at most
    ``high``."""
    want = f"a number {_bounds(low, high, above=above)}"

    def check(value: Any) -> float:
        real = _real(value, want)
        too_low = low is not None and (real <= low if above else real < low)
        if too_low or (high is not None and real > high):
            raise ValueError(f"give {want} (got {value!r})")
        return real

    return check


def _path(value: Any) -> Path:
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise ValueError(f"give a file or directory path (got {value!r})")


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"give {' or '.join(map(repr, choices))} (got {value!r})")
        return str(value)

    return check


def _optional(check: Check) -> Check:
    """``check``, or ``None`` (unset) as it is."""
    return lambda value: None if value is None else check(value)


def _age(value: Any) -> float:
    """Seconds, or an age such as ``90s``, ``30m`` or ``2h`` (``0``: never)."""
    if isinstance(value, str):
        value = parse_age(value)
        if value is None:
            raise ValueError("give seconds or an age such as 90s, 30m or 2h (0: never)")
    seconds: float = _number(0)(value)
    return seconds


def _names(value: Any) -> list[str]:
    """A list of text, or comma-separated text."""
    if isinstance(value, str):
        return [u.strip() for u in value.split(",") if u.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"give a list of text, or comma-separated text (got {value!r})")


def _host_patterns(value: Any) -> list[str]:
    hosts = _names(value)
    for host in hosts:
        if host != "*" and ("*" in host[1:] or (host[:1] == "*" and host[:2] != "*.")):
            raise ValueError(f"{host!r}: a wildcard is '*' or '*.example.com'")
        if "/" in host or " " in host:
            raise ValueError(f"{host!r}: give a host name (no scheme, path or spaces)")
    return [h.lower() for h in hosts]


def _no_braces(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "{}: \t\n"):
        raise ValueError("must be non-empty, without braces, colons or whitespace")
    return value


def _min_chars(n: int, problem: Callable[[int], str] | None = None) -> Check:
    def check(value: Any) -> str:
        text = _text(value)
        if len(text) < n:
            raise ValueError(problem(len(text)) if problem else f"give at least {n} characters")
        return text

    return check


def _limit(value: Any) -> Any:
    """A limit given as text (``"5000"``) read as its number; :class:`RateLimits` checks
    what it is."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return value
    return value


def _rate_limits(value: Any) -> dict[str, dict[str, int | None]]:
    """JSON text or a mapping of ``model -> {"rpm": N, "tpm": N}`` (``None``: no limit)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(
                'must be JSON like {"openai:*": {"rpm": 5000, "tpm": 2000000}}'
            ) from None
    if not isinstance(value, Mapping):
        raise ValueError(f'give a mapping like {{"openai:*": {{"rpm": 5000}}}} (got {value!r})')
    table: dict[str, dict[str, int | None]] = {}
    for model, limits in value.items():
        if not isinstance(model, str) or not isinstance(limits, Mapping):
            raise ValueError(f"{model!r}: give a model pattern and its rpm and/or tpm")
        unknown = set(limits) - {"rpm", "tpm"}
        if unknown:
            raise ValueError(f"{model}: only rpm and tpm can be set (not {sorted(unknown)})")
        try:
            table[model] = {k: _limit(v) for k, v in limits.items()}
            RateLimits(**table[model])
        except (ValueError, TaskloomError) as exc:
            raise ValueError(f"{model}: {exc}") from None
    return table


_CHECKS: dict[str, Check] = {
    "redis_url": _optional(_text),
    "redis_cluster": _optional(_flag),
    "data_dir": _path,
    "embedded_keep": _optional(_flag),
    "embedded_idle": _age,
    "key_prefix": _no_braces,
    "concurrency": _whole(1, 10_000),
    "lease_ttl": _number(0.05, 3600, above=True),
    "prefetch": _optional(_whole(0, 10_000)),
    "appendfsync": _one_of("everysec", "always"),
    "durability": _one_of("ack", "fsync"),
    "queue": _no_braces,
    "queue_partitions": _whole(1, 1024),
    "payload_threshold": _whole(0),
    "payload_hard_limit": _whole(1),
    "blob_url": _optional(_text),
    "retention": _optional(_number(0, above=True)),
    "rate_limits": _rate_limits,
    "prices": _optional(_path),
    "model": _optional(_text),
    "secret": _optional(_text),
    "inbox_token": _optional(_text),
    "metrics_token": _optional(_min_chars(32)),
    "signin_failures": _whole(1),
    "signin_failures_all": _whole(1),
    "signin_window": _number(0, above=True),
    "public_url": _text,
    "trusted_hosts": _host_patterns,
    "webhooks": _names,
    "webhook_secret": _optional(_min_chars(MIN_WEBHOOK_SECRET_CHARS, webhook_secret_problem)),
    "smtp_url": _optional(_text),
    "notify_from": _text,
    "inbox_sla": _optional(_number(0, above=True)),
    "link_ttl": _number(0, 90 * 86400.0, above=True),
    "traces": _one_of("off", "otlp"),
}
"""Each setting's check, in the order of the fields (a test holds them equal)."""
