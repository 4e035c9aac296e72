"""Typed settings, read from the environment only at the edges.

Explicit arguments win over ``TASKLOOM_*`` variables, which win over defaults::

    settings = Settings.from_env(concurrency=4)   # env for the rest
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskloom.agents.errors import validation_problems
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

_HIDDEN = ("secret", "inbox_token", "webhook_secret")
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


class Settings(BaseModel):
    """Everything taskloom can be configured with.

    ``redis_url`` unset means: start (or reuse) an embedded redis-server under
    ``data_dir``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = None
    """Redis to use; ``None`` starts the embedded server (env: TASKLOOM_REDIS_URL, REDIS_URL)."""
    redis_cluster: bool | None = None
    """Whether ``redis_url`` names a Redis Cluster (TASKLOOM_REDIS_CLUSTER). Unset: the
    URL says, by its scheme (``redis+cluster://HOST:PORT``, ``rediss+cluster://``); true
    for a plain ``redis://`` / ``rediss://`` URL of any cluster node, as managed services
    give for a configuration endpoint."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the embedded Redis keeps its socket and AOF (env: TASKLOOM_DATA_DIR)."""
    embedded_keep: bool | None = None
    """Whether the embedded Redis outlives the process that started it
    (TASKLOOM_EMBEDDED_KEEP). Unset: the ``taskloom`` commands leave it running for the
    next command (``taskloom stop`` stops it), and a Python program stops the one it
    started when it closes; ``true`` or ``false`` decide for both."""
    embedded_idle: float = Field(default=1800.0, ge=0)
    """Seconds a kept embedded Redis runs without any client before it stops by itself,
    its data saved (TASKLOOM_EMBEDDED_IDLE: seconds, or ``30m``, ``2h``; ``0``: never).
    A running worker or ``taskloom serve`` is a client: it keeps the server up."""
    key_prefix: str = "tl"
    """Prefix of every Redis key, so several deployments share one Redis (TASKLOOM_KEY_PREFIX)."""
    concurrency: int = Field(default=16, ge=1, le=10_000)
    """Activities a worker runs at once (TASKLOOM_CONCURRENCY)."""
    lease_ttl: float = Field(default=1.0, gt=0.05, le=3600)
    """Seconds a worker's lease on a run or an activity lasts without a heartbeat: how
    soon a dead worker's work is taken over (TASKLOOM_LEASE_TTL). Raise it if workflow
    code may block the event loop for longer than a quarter of it."""
    prefetch: int | None = Field(default=None, ge=0, le=10_000)
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
    queue_partitions: int = Field(default=1, ge=1, le=1024)
    """Streams the activity queue is spread over, each with its own hash tag, so a Redis
    Cluster serves one queue from several masters (TASKLOOM_QUEUE_PARTITIONS); the
    durable timers are spread over as many sorted sets. Workers read every partition any
    worker has used; see :mod:`taskloom.engine.partitions`."""
    payload_threshold: int = Field(default=32 * 1024, ge=0)
    """Bytes of JSON above which an activity's arguments or result go to the blob store
    and the log keeps a reference (TASKLOOM_PAYLOAD_THRESHOLD)."""
    payload_hard_limit: int = Field(default=32 * 1024 * 1024, ge=1)
    """Bytes of JSON above which a value is refused (TASKLOOM_PAYLOAD_HARD_LIMIT)."""
    blob_url: str | None = None
    """Blob store: a directory or any fsspec URL (``s3://bucket/taskloom``); default
    ``<data_dir>/blobs``, which only workers on this machine share (TASKLOOM_BLOB_URL)."""
    retention: float | None = Field(default=None, gt=0)
    """Seconds a finished run is kept, then deleted with the blobs only it referenced;
    unset: kept until deleted by hand (TASKLOOM_RETENTION)."""

    rate_limits: dict[str, dict[str, int | None]] = Field(default_factory=dict)
    """Requests and tokens per minute per model or ``provider:*`` pattern, shared by
    every worker, over the built-in tier-1 limits (TASKLOOM_RATE_LIMITS, JSON such as
    ``{"openai:*": {"rpm": 5000, "tpm": 2000000}}``; ``null`` lifts a limit)."""
    prices: Path | None = None
    """A ``.json`` or ``.toml`` file of model prices (USD per million tokens) over the
    built-in table (TASKLOOM_PRICES)."""

    model: str | None = None
    """The default model, ``provider:model``, for agents and pipelines that name none
    (TASKLOOM_MODEL)."""
    secret: str | None = Field(default=None, repr=False)
    """Signs session cookies and magic links of the web inbox; at least 32 characters.
    Unset: ``taskloom serve`` makes one and keeps it in ``<data_dir>/secret``
    (TASKLOOM_SECRET)."""
    inbox_token: str | None = Field(default=None, repr=False)
    """The token internal users sign in to the web inbox with: at least 16 characters,
    8 of them different, and not the secret (TASKLOOM_INBOX_TOKEN)."""
    metrics_token: str | None = Field(default=None, repr=False, min_length=32)
    """The bearer token scrapers send to ``/metrics`` (Prometheus: ``authorization:
    {credentials: ...}``), of ``taskloom serve`` and of workers; it cannot sign in; at
    least 32 characters (TASKLOOM_METRICS_TOKEN). Unset: ``serve``'s ``/metrics`` takes
    the inbox token (with a note at start-up) and a worker's is open, on 127.0.0.1 unless
    told otherwise (with a warning when it is reachable from the network)."""
    signin_failures: int = Field(default=10, ge=1)
    """Failed sign-ins (and wrong ``/metrics`` bearers) one client address may make per
    ``signin_window``; then 429 until the window ends (TASKLOOM_SIGNIN_FAILURES)."""
    signin_failures_all: int = Field(default=100, ge=1)
    """Failed sign-ins from all addresses together per ``signin_window``, so a guesser
    with many addresses is slowed too (TASKLOOM_SIGNIN_FAILURES_ALL)."""
    signin_window: float = Field(default=300.0, gt=0)
    """Seconds of the sign-in throttle's window (TASKLOOM_SIGNIN_WINDOW)."""
    public_url: str = "http://127.0.0.1:8765"
    """The web inbox's address as people reach it, for magic links and notifications
    (TASKLOOM_PUBLIC_URL)."""
    trusted_hosts: list[str] = Field(default_factory=list)
    """``Host`` names the web inbox answers; any other gets 400, so a DNS-rebinding page
    reaches nothing (TASKLOOM_TRUSTED_HOSTS: comma-separated; ``*.example.com`` matches
    subdomains, ``*`` any). Empty: the host of ``public_url``, localhost, 127.0.0.1 and
    [::1]."""
    webhooks: list[str] = Field(default_factory=list)
    """URLs told (JSON POST, HMAC-signed) when an inbox item opens, nears or breaches its
    SLA, or is decided (TASKLOOM_WEBHOOKS: comma-separated)."""
    webhook_secret: str | None = Field(default=None, repr=False)
    """The shared secret webhook deliveries are signed with, at least
    :data:`MIN_WEBHOOK_SECRET_CHARS` characters (TASKLOOM_WEBHOOK_SECRET); see
    :func:`taskloom.inbox.notify.verify_signature`."""
    smtp_url: str | None = None
    """``smtp://host:port`` for e-mail notifications to assignees (TASKLOOM_SMTP_URL)."""
    notify_from: str = "taskloom@localhost"
    """The From address of notification e-mails (TASKLOOM_NOTIFY_FROM)."""
    inbox_sla: float | None = Field(default=None, gt=0)
    """Seconds an inbox item may wait when the workflow set no SLA (TASKLOOM_INBOX_SLA)."""
    link_ttl: float = Field(default=7 * 86400.0, gt=0, le=90 * 86400.0)
    """The longest a magic link sent by mail works, in seconds (TASKLOOM_LINK_TTL; default
    7 days, at most 90): a mailed link works until its item's SLA is due plus a grace
    (:data:`taskloom.inbox.notify.LINK_GRACE`), within this bound; this long when the item
    has no SLA. It stops at once when the item is reassigned or decided."""

    traces: Literal["off", "otlp"] = "off"
    """``otlp``: OpenTelemetry spans of runs, attempts, verifications and model calls,
    exported over OTLP as the ``OTEL_*`` variables say (TASKLOOM_TRACES; needs the
    ``otel`` extra; see :mod:`taskloom.tracing`)."""

    @field_validator("embedded_idle", mode="before")
    @classmethod
    def _age(cls, value: Any) -> Any:
        if isinstance(value, str):
            seconds = parse_age(value)
            if seconds is None:
                raise ValueError("give seconds or an age such as 90s, 30m or 2h (0: never)")
            return seconds
        return value

    @field_validator("webhooks", "trusted_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _strong_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_WEBHOOK_SECRET_CHARS:
            raise ValueError(webhook_secret_problem(len(value)))
        return value

    @field_validator("trusted_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for host in value:
            if host != "*" and ("*" in host[1:] or (host[:1] == "*" and host[:2] != "*.")):
                raise ValueError(f"{host!r}: a wildcard is '*' or '*.example.com'")
            if "/" in host or " " in host:
                raise ValueError(f"{host!r}: give a host name (no scheme, path or spaces)")
        return [h.lower() for h in value]

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _json_limits(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(
                    'must be JSON like {"openai:*": {"rpm": 5000, "tpm": 2000000}}'
                ) from exc
        return value

    @field_validator("rate_limits")
    @classmethod
    def _valid_limits(cls, value: dict[str, dict[str, int | None]]) -> Any:
        for model, limits in value.items():
            unknown = set(limits) - {"rpm", "tpm"}
            if unknown:
                raise ValueError(f"{model}: only rpm and tpm can be set (not {sorted(unknown)})")
            try:
                RateLimits(**limits)
            except TaskloomError as exc:
                raise ValueError(f"{model}: {exc}") from None
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """What ``repr()`` and ``str()`` show: URLs without their passwords (credentials
        themselves are ``repr=False``)."""
        for name, value in super().__repr_args__():
            if name in _URLS and isinstance(value, str):
                yield name, redact_url(value)
            elif name == "webhooks":
                yield name, [redact_url(url) for url in value]
            else:
                yield name, value

    def display(self) -> dict[str, Any]:
        """The settings as JSON values to show a person or write to a log: every
        credential is ``"***"`` (``None`` when unset) and URLs carry no password.
        :meth:`model_dump` keeps the real values, for code that needs them."""
        data = self.model_dump(mode="json")
        for name in _HIDDEN:
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

    @field_validator("key_prefix", "queue")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if not value or any(c in value for c in "{}: \t\n"):
            raise ValueError("must be non-empty, without braces, colons or whitespace")
        return value

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
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc))
            raise ConfigurationError(
                f"invalid taskloom settings ({problems}); fix the argument or the "
                f"TASKLOOM_* environment variable"
            ) from None
