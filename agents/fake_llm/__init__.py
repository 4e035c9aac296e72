"""A fake LLM server for tests: the real OpenAI and Anthropic HTTP protocols on
loopback, answering from a script, so the official SDKs run unchanged and nothing
reaches a real provider.

::

    import openai
    from taskloom.agents.fake_llm import FakeLLM, rate_limited, reply, tool_call, tool_calls

    async def test_weather() -> None:
        async with FakeLLM([
            tool_calls(
                tool_call("weather", {"city": "Paris"}),
                tool_call("weather", {"city": "Oslo"}),
            ),
            rate_limited(retry_after=0.1),
            reply(json={"warmest": "Paris"}),
        ]) as fake:
            client = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test")
            ...                                 # the code under test
            assert fake.requests[-1].messages[-1]["role"] == "tool"
            fake.assert_complete()              # every scripted step was used

The same steps answer on ``/v1/chat/completions`` (``fake.openai_url``) and on
``/v1/messages`` (``fake.anthropic_url``). Steps:

- :func:`reply` text, or ``json=`` a value serialized as the text;
  :func:`tool_calls` with :func:`tool_call` (several = parallel calls);
  :func:`truncated` (finish reason ``length`` / ``max_tokens``);
  :func:`malformed_json` (text that does not parse).
- :func:`error`, :func:`rate_limited` (429 + ``Retry-After``, optional
  :class:`RateLimit` headers), :func:`server_error`, :func:`context_length_exceeded`,
  :func:`unauthorized`: provider-shaped error bodies.
- :func:`disconnect`: the connection drops, before or during the answer.

Every step takes ``latency=`` (seconds, waited without blocking other requests).
Token usage is the step's, or an estimate of 4 characters per token
(:func:`estimate_tokens`); :attr:`FakeLLM.tokens` counts it per model with
timestamps, for checking tokens-per-minute windows at the server.
"""

from ._records import Request, TokenCounter, TokenEvent, estimate_tokens
from ._script import Script
from ._server import FakeLLM
from ._steps import (
    Disconnect,
    ErrorKind,
    ErrorReply,
    Finish,
    RateLimit,
    Reply,
    ScriptedToolCall,
    Step,
    context_length_exceeded,
    disconnect,
    error,
    malformed_json,
    rate_limited,
    reply,
    server_error,
    tool_call,
    tool_calls,
    truncated,
    unauthorized,
)

__all__ = [
    "Disconnect",
    "ErrorKind",
    "ErrorReply",
    "FakeLLM",
    "Finish",
    "RateLimit",
    "Reply",
    "Request",
    "Script",
    "ScriptedToolCall",
    "Step",
    "TokenCounter",
    "TokenEvent",
    "context_length_exceeded",
    "disconnect",
    "error",
    "estimate_tokens",
    "malformed_json",
    "rate_limited",
    "reply",
    "server_error",
    "tool_call",
    "tool_calls",
    "truncated",
    "unauthorized",
]
