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
"""

from typing import TYPE_CHECKING, Any

from .agent import Agent, AgentResult, AgentRunner, CallObserver, LimitObserver
from .budget import BudgetReservation, Budgets, BudgetUsage, Money
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
from .limits import RateLimiter, RateLimiters, RateLimits
from .llm import LLMRequest, LLMResponse, Message, Provider, TokenSink, ToolCall, Usage
from .pricing import ModelPrice, PriceTable
from .prompts import Prompts
from .providers import default_model, open_provider
from .structured import complete_structured
from .tools import Tool, tool

if TYPE_CHECKING:
    from .providers.anthropic import AnthropicProvider
    from .providers.openai import OpenAIProvider

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
    """``AnthropicProvider`` / ``OpenAIProvider``: imported with their SDK on first use,
    so importing taskloom stays fast (each SDK takes about a second to import)."""
    if name in ("AnthropicProvider", "OpenAIProvider"):
        from . import providers

        return getattr(providers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
