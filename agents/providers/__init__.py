"""LLM providers behind one interface, on the official SDKs.

Models are named ``provider:model``: ``openai:gpt-4.1-mini``,
``anthropic:claude-sonnet-4-5``, and ``openai-compatible:<model>`` for any server that
speaks OpenAI's Chat Completions (vLLM, Ollama, llama.cpp's server) at a base URL.
Keys and base URLs come from the SDKs' own variables (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``, ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``) unless given;
``TASKLOOM_MODEL`` names the default model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, MissingAPIKeyError, UnknownProviderError
from ..llm import Provider
from ._transport import endpoint

if TYPE_CHECKING:
    from .anthropic import AnthropicProvider
    from .openai import OpenAIProvider

__all__ = [
    "PROVIDERS",
    "AnthropicProvider",
    "OpenAIProvider",
    "check_model",
    "default_model",
    "endpoint",
    "open_provider",
    "split_model",
]

PROVIDERS = ("openai", "anthropic", "openai-compatible")


def split_model(ref: str) -> tuple[str, str]:
    """``"openai:gpt-4.1-mini"`` -> ``("openai", "gpt-4.1-mini")``."""
    provider, sep, model = ref.partition(":")
    if not sep or not model:
        raise UnknownProviderError(
            f"model {ref!r} has no provider prefix: write it as provider:model, e.g. "
            f"openai:gpt-4.1-mini or anthropic:claude-sonnet-4-5 (providers: "
            f"{', '.join(PROVIDERS)})"
        )
    if provider not in PROVIDERS:
        raise UnknownProviderError(
            f"unknown provider {provider!r} in model {ref!r}; use one of {', '.join(PROVIDERS)} "
            f"(openai-compatible:<model> for vLLM, Ollama or llama.cpp at OPENAI_BASE_URL)"
        )
    return provider, model


def default_model(env: Mapping[str, str] | None = None) -> str:
    """The model named by ``TASKLOOM_MODEL``."""
    env = os.environ if env is None else env
    model = env.get("TASKLOOM_MODEL")
    if not model:
        raise ConfigurationError(
            "no model given and TASKLOOM_MODEL is not set: pass model='openai:gpt-4.1-mini' "
            "(or another provider:model) or set TASKLOOM_MODEL"
        )
    return model


_KEY_VARS = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "openai-compatible": "OPENAI_API_KEY",
}
_URL_VARS = {
    "anthropic": "ANTHROPIC_BASE_URL",
    "openai": "OPENAI_BASE_URL",
    "openai-compatible": "OPENAI_BASE_URL",
}
_NAMES = {"anthropic": "Anthropic", "openai": "OpenAI"}


def _credentials(
    provider: str,
    env: Mapping[str, str],
    *,
    api_key: str | None = None,
    base_url: str | None = None,
) -> tuple[str, str | None]:
    """``(key, base URL)`` for ``provider``: the arguments, else its SDK's environment
    variables; the error a call would meet when something is missing."""
    if provider not in _KEY_VARS:
        raise UnknownProviderError(
            f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}"
        )
    key = api_key or env.get(_KEY_VARS[provider])
    url = base_url or env.get(_URL_VARS[provider])
    if provider == "openai-compatible":
        if not url:
            raise ConfigurationError(
                "openai-compatible models need the server's base URL: set OPENAI_BASE_URL "
                "(e.g. http://localhost:8000/v1) or pass base_url=..."
            )
        key = key or "not-needed"  # local servers usually take any key
    if not key:
        raise MissingAPIKeyError(
            f"no {_NAMES[provider]} API key: set {_KEY_VARS[provider]} (or pass api_key=...)"
        )
    return key, url


def check_model(ref: str | None, env: Mapping[str, str] | None = None) -> str:
    """The model to use (``ref``, else ``TASKLOOM_MODEL``), once it is known to be
    usable here: a known provider, and its key (or base URL) in ``env``. Raises the
    error a call would, before anything is started, worded for a shell."""
    env = os.environ if env is None else env
    model = ref or default_model(env)
    provider, _ = split_model(model)
    try:
        _credentials(provider, env)
    except MissingAPIKeyError:
        raise MissingAPIKeyError(
            f"no {provider} API key for {model}: export {_KEY_VARS[provider]}=... (or try "
            f"`taskloom demo`, which needs none)"
        ) from None
    except ConfigurationError:
        raise ConfigurationError(
            "openai-compatible models need the server's base URL: set OPENAI_BASE_URL "
            "(e.g. export OPENAI_BASE_URL=http://localhost:8000/v1)"
        ) from None
    return model


def open_provider(
    provider: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    env: Mapping[str, str] | None = None,
    max_retries: int = 0,
) -> Provider:
    """A provider client; keys and base URLs from arguments, else the environment.

    The SDKs' own retries are off by default (``max_retries=0``): taskloom retries
    durably, with its shared rate limits and the activity's retry policy.
    """
    env = os.environ if env is None else env
    key, url = _credentials(provider, env, api_key=api_key, base_url=base_url)
    if provider == "anthropic":
        from .anthropic import AnthropicProvider  # the SDKs load on first use (~1 s each)

        return AnthropicProvider(api_key=key, base_url=url, max_retries=max_retries)
    from .openai import OpenAIProvider

    return OpenAIProvider(api_key=key, base_url=url, max_retries=max_retries, name=provider)


def __getattr__(name: str) -> Any:
    """The provider classes, imported with their SDK on first access."""
    if name == "OpenAIProvider":
        from .openai import OpenAIProvider

        return OpenAIProvider
    if name == "AnthropicProvider":
        from .anthropic import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
