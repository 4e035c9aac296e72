"""agents: subagent specs, LLM providers on the official SDKs, structured output, tools,
shared rate limits and run budgets on Redis, prices, prompt templates, and a fake LLM
server (:mod:`taskloom.agents.fake_llm`) that speaks the OpenAI and Anthropic wire protocols.

This package knows nothing of runs or workflows; the engine wraps
:meth:`AgentRunner.run` in an activity (``ctx.agent(...)`` in :mod:`taskloom`).

::

    from taskloom.agents import Agent, AgentRunner

    writer = Agent(name="writer", role="a concise technical writer",
                   model="openai:gpt-4.1-mini")
    result = await AgentRunner().run(writer, "Explain durable execution in one line")
    print(result.text, result.cost_usd)

Each name loads its module on first use (PEP 562): the engine and the settings import
this package's errors, limits and prices without loading the agent runner, Jinja2 or
a provider's SDK (each SDK takes about a second to import). The errors load at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BudgetExceededError,
    ConfigurationError,
    LLMAuthError,
    LLMContextLengthError,
    LLMOutputError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMUnavailableError,
    MissingAPIKeyError,
    PriceTableError,
    PromptError,
    PromptNotFoundError,
    PromptVariableError,
    RateLimitDeferredError,
    RequestExceedsRateLimitError,
    TaskloomError,
    UnknownModelPriceError,
    UnknownProviderError,
)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .agent import Agent, AgentResult, AgentRunner, CallObserver, LimitObserver
    from .budget import BudgetReservation, Budgets, BudgetUsage, Money
    from .limits import RateLimiter, RateLimiters, RateLimits
    from .llm import LLMRequest, LLMResponse, Message, Provider, TokenSink, ToolCall, Usage
    from .pricing import ModelPrice, PriceTable
    from .prompts import Prompts
    from .providers import default_model, open_provider
    from .providers.anthropic import AnthropicProvider
    from .providers.openai import OpenAIProvider
    from .structured import complete_structured
    from .tools import Tool, tool

_LAZY: dict[str, tuple[str, ...]] = {
    ".agent": ("Agent", "AgentResult", "AgentRunner", "CallObserver", "LimitObserver"),
    ".budget": ("BudgetReservation", "Budgets", "BudgetUsage", "Money"),
    ".limits": ("RateLimiter", "RateLimiters", "RateLimits"),
    ".llm": ("LLMRequest", "LLMResponse", "Message", "Provider", "TokenSink", "ToolCall", "Usage"),
    ".pricing": ("ModelPrice", "PriceTable"),
    ".prompts": ("Prompts",),
    # The providers module loads each provider, and its SDK, on first use too.
    ".providers": ("AnthropicProvider", "OpenAIProvider", "default_model", "open_provider"),
    ".structured": ("complete_structured",),
    ".tools": ("Tool", "tool"),
}
"""Where each name that loads on first use lives (the ``TYPE_CHECKING`` imports above
name the same; a test checks that they agree)."""
_HOME = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "Agent",
    "AgentResult",
    "AgentRunner",
    "AnthropicProvider",
    "BudgetExceededError",
    "BudgetReservation",
    "BudgetUsage",
    "Budgets",
    "CallObserver",
    "ConfigurationError",
    "LLMAuthError",
    "LLMContextLengthError",
    "LLMOutputError",
    "LLMRateLimitedError",
    "LLMRequest",
    "LLMRequestError",
    "LLMResponse",
    "LLMUnavailableError",
    "LimitObserver",
    "Message",
    "MissingAPIKeyError",
    "ModelPrice",
    "Money",
    "OpenAIProvider",
    "PriceTable",
    "PriceTableError",
    "PromptError",
    "PromptNotFoundError",
    "PromptVariableError",
    "Prompts",
    "Provider",
    "RateLimitDeferredError",
    "RateLimiter",
    "RateLimiters",
    "RateLimits",
    "RequestExceedsRateLimitError",
    "TaskloomError",
    "TokenSink",
    "Tool",
    "ToolCall",
    "UnknownModelPriceError",
    "UnknownProviderError",
    "Usage",
    "complete_structured",
    "default_model",
    "open_provider",
    "tool",
]


def __getattr__(name: str) -> Any:
    """Load ``name`` from its module on first use; later lookups find it here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
