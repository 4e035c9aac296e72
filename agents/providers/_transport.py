"""What the two SDK providers share about HTTP: the client they send with, raw
responses, telling a transport failure from anything else, and warming the SDK's
response models before the first response."""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterable
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "HTTPX_SHARDS",
    "endpoint",
    "http_client",
    "is_transport_error",
    "parsed",
    "shards_for",
    "warm_models",
]

log = logging.getLogger("taskloom.agents.providers")

HTTPX_SHARDS = 8
"""Clients of one provider worth spreading calls over when its SDK sends with httpx."""


def http_client(sdk: ModuleType) -> Any:
    """The SDK's aiohttp-backed HTTP client (``openai[aiohttp]``, ``anthropic[aiohttp]``),
    or ``None`` for the SDK's default httpx one where that extra is missing.

    Both SDKs offer ``DefaultAioHttpClient`` for code that keeps many requests in
    flight; a subagent fan-out is exactly that. Against the fake server, 500 calls at
    100 in flight cost the openai SDK about 1.6 ms of CPU per call on httpx and 1.0 ms on
    aiohttp (``benchmarks/run.py --only W5`` reports the SDK alone beside taskloom).
    """
    factory = getattr(sdk, "DefaultAioHttpClient", None)
    if factory is None:
        return None
    try:
        return factory()
    except RuntimeError:  # the SDK is there, its aiohttp extra is not
        return None


def shards_for(client: Any) -> int:
    """How many clients like one sending with ``client`` (what :func:`http_client` gave)
    a runner should spread its calls over.

    One on aiohttp: its pool serves a hundred calls in flight cheaply, and each more
    client costs an SSL context (~18 ms of CPU loading the CA bundle) and a pool that
    opens connections of its own (W5: ~1.6 -> ~1.2 ms of worker CPU per call with one
    client instead of eight). :data:`HTTPX_SHARDS` on httpx, whose pool (httpcore) scans
    every connection on each request and response: with 100 calls in flight on one
    client that scan cost about as much as the call."""
    return 1 if client is not None else HTTPX_SHARDS


def endpoint(provider: str, base_url: Any) -> str:
    """Who serves a provider client's calls, for the record: ``"openai
    https://api.openai.com/v1"``. The base URL loses any user name, password, query
    and fragment (where keys sometimes ride), so it can be logged and shown."""
    parts = urlsplit(str(base_url))
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{provider} {urlunsplit((parts.scheme, netloc, parts.path.rstrip('/'), '', ''))}"


async def parsed(raw: Any) -> Any:
    """A raw response's parsed body (the SDKs' raw responses parse sync or async)."""
    value = raw.parse()
    return await value if inspect.isawaitable(value) else value


def is_transport_error(exc: Exception) -> bool:
    """Whether ``exc`` is the HTTP layer's (httpx, httpcore or aiohttp family) or a
    socket's: a stream cut mid-way surfaces unwrapped from the SDKs."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0].startswith(
        ("httpx", "httpcore", "aiohttp")
    )


_warmed: set[str] = set()


def warm_models(
    sdk: ModuleType, samples: Iterable[tuple[Any, dict[str, Any]]], *, calls: Iterable[str] = ()
) -> None:
    """Build, once per process, what an SDK builds on its first response: pydantic
    schemas of its response models, made lazily by the SDK's ``construct_type``. Call
    it where the client is made (in a thread: see ``AgentRunner.client``), not on the
    event loop: on a cold worker the first response otherwise held the loop for tens of
    milliseconds, and on a loaded machine past the lease (issue 12, a loaded CI run).

    ``samples``: ``(response type, a minimal response of it)``; ``calls``: dotted names
    of the SDK's cached functions that import on first use (``module:function``). Best
    effort: an SDK that moved its internals only loses the warm-up."""
    if sdk.__name__ in _warmed:
        return
    _warmed.add(sdk.__name__)
    try:
        construct = importlib.import_module(f"{sdk.__name__}._models").construct_type
        for kind, value in samples:
            construct(type_=kind, value=value)
        for name in calls:
            module, _, function = name.partition(":")
            getattr(importlib.import_module(module), function)()
    except Exception as exc:  # the SDK's private layout changed: no warm-up, no harm
        log.debug("no warm-up of %s's response models: %s", sdk.__name__, exc)
