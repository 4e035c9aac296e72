"""What the two SDK providers share about HTTP: the client they send with, raw
responses, and telling a transport failure from anything else."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["endpoint", "http_client", "is_transport_error", "parsed"]


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
