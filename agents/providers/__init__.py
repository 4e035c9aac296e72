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

if TYPE_CHECKING:
    from .anthropic import AnthropicProvider
    from .openai import OpenAIProvider

__all__ = [
    "PROVIDERS",
    "AnthropicProvider",
    "OpenAIProvider",
    "check_model",
    "default_model",
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


_KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


def check_model(ref: str | None, env: Mapping[str, str] | None = None) -> str:
    """The model to use (``ref``, else ``TASKLOOM_MODEL``), once it is known to be
    usable here: a known provider, and its key (or base URL) in ``env``. Raises the
    error a call would, before anything is started."""
    env = os.environ if env is None else env
    model = ref or default_model(env)
    provider, _ = split_model(model)
    if provider == "openai-compatible":
        if not env.get("OPENAI_BASE_URL"):
            raise ConfigurationError(
                "openai-compatible models need the server's base URL: set OPENAI_BASE_URL "
                "(e.g. export OPENAI_BASE_URL=http://localhost:8000/v1)"
            )
    elif not env.get(_KEYS[provider]):
        raise MissingAPIKeyError(
            f"no {provider} API key for {model}: export {_KEYS[provider]}=... (or try "
            f"`taskloom demo`, which needs none)"
        )
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
    if provider == "anthropic":
        key = api_key or env.get("ANTHROPIC_API_KEY")
        if not key:
            raise MissingAPIKeyError(
                "no Anthropic API key: set ANTHROPIC_API_KEY (or pass api_key=...)"
            )
        url = base_url or env.get("ANTHROPIC_BASE_URL")
        from .anthropic import AnthropicProvider  # the SDKs load on first use (~1 s each)

        return AnthropicProvider(api_key=key, base_url=url, max_retries=max_retries)
    if provider in ("openai", "openai-compatible"):
        url = base_url or env.get("OPENAI_BASE_URL")
        key = api_key or env.get("OPENAI_API_KEY")
        if provider == "openai-compatible":
            if not url:
                raise ConfigurationError(
                    "openai-compatible models need the server's base URL: set OPENAI_BASE_URL "
                    "(e.g. http://localhost:8000/v1) or pass base_url=..."
                )
            key = key or "not-needed"  # local servers usually take any key
        if not key:
            raise MissingAPIKeyError("no OpenAI API key: set OPENAI_API_KEY (or pass api_key=...)")
        from .openai import OpenAIProvider

        return OpenAIProvider(api_key=key, base_url=url, max_retries=max_retries, name=provider)
    raise UnknownProviderError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")


def __getattr__(name: str) -> Any:
    """The provider classes, imported with their SDK on first access."""
    if name == "OpenAIProvider":
        from .openai import OpenAIProvider

        return OpenAIProvider
    if name == "AnthropicProvider":
        from .anthropic import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
