"""Provider naming, keys and error classification (no network: pure functions)."""

from __future__ import annotations

import socket
import time

import pytest

from taskloom.agents.errors import (
    ConfigurationError,
    LLMAuthError,
    LLMContextLengthError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMUnavailableError,
    MissingAPIKeyError,
    UnknownProviderError,
)
from taskloom.agents.llm import LLMRequest, Message
from taskloom.agents.providers import (
    AnthropicProvider,
    OpenAIProvider,
    default_model,
    endpoint,
    open_provider,
    split_model,
)
from taskloom.agents.providers._classify import classify, retry_after


def test_models_are_named_provider_colon_model() -> None:
    assert split_model("openai:gpt-4.1-mini") == ("openai", "gpt-4.1-mini")
    assert split_model("anthropic:claude-sonnet-4-5") == ("anthropic", "claude-sonnet-4-5")
    assert split_model("openai-compatible:llama3:8b") == ("openai-compatible", "llama3:8b")
    with pytest.raises(UnknownProviderError, match=r"unknown provider 'gemini'.*openai, anthropic"):
        split_model("gemini:pro")
    with pytest.raises(UnknownProviderError, match="no provider prefix"):
        split_model("gpt-4o")


def test_keys_come_from_the_sdks_variables_and_say_which_to_set() -> None:
    with pytest.raises(MissingAPIKeyError, match="set OPENAI_API_KEY"):
        open_provider("openai", env={})
    with pytest.raises(MissingAPIKeyError, match="set ANTHROPIC_API_KEY"):
        open_provider("anthropic", env={})
    with pytest.raises(ConfigurationError, match="set OPENAI_BASE_URL"):
        open_provider("openai-compatible", env={})
    local = open_provider("openai-compatible", env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert isinstance(local, OpenAIProvider) and local.name == "openai-compatible"
    ant = open_provider("anthropic", env={"ANTHROPIC_API_KEY": "k"}, base_url="http://127.0.0.1:9")
    assert isinstance(ant, AnthropicProvider)
    assert (
        default_model({"TASKLOOM_MODEL": "anthropic:claude-haiku-4-5"})
        == "anthropic:claude-haiku-4-5"
    )
    with pytest.raises(ConfigurationError, match="set TASKLOOM_MODEL"):
        default_model({})


def test_errors_are_classified_retryable_or_not_with_reasons() -> None:
    def c(status: int | None, body: object = None, headers: dict[str, str] | None = None) -> object:
        return classify(
            RuntimeError("x"), provider="openai", model="m", status=status,
            headers=headers or {}, body=body,
        )  # fmt: skip

    limited = c(429, {"error": {"message": "slow down"}}, {"retry-after": "7"})
    assert isinstance(limited, LLMRateLimitedError) and limited.retry_after == 7.0
    assert isinstance(c(503), LLMUnavailableError) and isinstance(c(None), LLMUnavailableError)
    auth = c(401, {"error": {"message": "bad key"}})
    assert isinstance(auth, LLMAuthError) and "OPENAI_API_KEY" in str(auth)
    too_long = c(400, {"error": {"message": "This model's maximum context length is 8192"}})
    assert isinstance(too_long, LLMContextLengthError)
    assert isinstance(c(400, {"error": {"message": "bad field"}}), LLMRequestError)
    assert too_long.to_dict()["retryable"] is False
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after({}) is None


# -- against the fake server, through the official SDKs --------------------------------
import contextlib  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from typing import Literal  # noqa: E402

from pydantic import BaseModel  # noqa: E402

from taskloom.agents.errors import LLMOutputError  # noqa: E402
from taskloom.agents.fake_llm import (  # noqa: E402
    FakeLLM,
    context_length_exceeded,
    malformed_json,
    rate_limited,
    reply,
    server_error,
    tool_call,
    tool_calls,
    truncated,
    unauthorized,
)
from taskloom.agents.llm import Provider  # noqa: E402
from taskloom.agents.structured import RefusedModes, complete_structured, extract_json  # noqa: E402
from taskloom.agents.tools import run_tool_loop, tool  # noqa: E402

PROTOCOLS = ["openai", "anthropic"]


class City(BaseModel):
    name: str
    population: int


@contextlib.asynccontextmanager
async def provider_for(fake: FakeLLM, kind: str) -> AsyncIterator[Provider]:
    if kind == "openai":
        provider = open_provider("openai", api_key="test", base_url=fake.openai_url)
    else:
        provider = open_provider("anthropic", api_key="test", base_url=fake.anthropic_url)
    try:
        yield provider
    finally:
        await provider.aclose()


def ask(text: str, **options: object) -> LLMRequest:
    return LLMRequest(model="fake-1", messages=(Message(role="user", content=text),), **options)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
async def test_structured_output_on_both_protocols(kind: str) -> None:
    async with FakeLLM([reply(json={"name": "Oslo", "population": 709000})]) as fake:
        async with provider_for(fake, kind) as p:
            result = await complete_structured(p, ask("a city"), City)
        fake.assert_complete()
    assert result.value == City(name="Oslo", population=709000)
    assert (result.calls, result.repaired) == (1, False)
    sent = fake.requests[0].body
    if kind == "openai":
        assert sent["response_format"]["type"] == "json_schema"
        assert result.mode == "json_schema"
    else:  # no JSON mode: the schema goes into the system prompt
        assert "JSON schema" in sent["system"] and '"population"' in sent["system"]


@pytest.mark.anyio
async def test_a_server_refusing_json_schema_falls_back_and_is_remembered() -> None:
    steps = [
        reply(json={"name": "Lima", "population": 1}),
        reply(json={"name": "Rome", "population": 2}),
    ]
    memory: RefusedModes = {}  # what an AgentRunner keeps
    async with FakeLLM(steps, reject_json_schema=True) as fake:
        local = open_provider("openai-compatible", base_url=fake.openai_url, env={})
        first = await complete_structured(local, ask("a city"), City, refused=memory)
        second = await complete_structured(local, ask("another"), City, refused=memory)
        await local.aclose()
        fake.assert_complete()
    assert (first.mode, second.mode) == ("json_object", "json_object")
    modes = [r.body.get("response_format", {}).get("type") for r in fake.requests]
    assert modes == ["json_schema", "json_object", "json_object"], "refused once, then skipped"
    assert memory == {("openai-compatible", local.endpoint, "fake-1"): {"json_schema"}}


@pytest.mark.anyio
async def test_a_refusal_is_not_held_against_another_server_or_caller() -> None:
    """Two OpenAI-compatible servers serve a model of the same name: the one that
    refuses JSON-schema mode does not make taskloom skip it on the other, and nothing
    is remembered between calls that share no memory (as separate runners, or tests)."""
    city = reply(json={"name": "Lima", "population": 1})
    async with (
        FakeLLM([city, city], reject_json_schema=True) as picky,
        FakeLLM([city]) as able,
    ):
        refusing = open_provider("openai-compatible", base_url=picky.openai_url, env={})
        accepting = open_provider("openai-compatible", base_url=able.openai_url, env={})
        assert (await complete_structured(refusing, ask("a city"), City)).mode == "json_object"
        assert (await complete_structured(accepting, ask("a city"), City)).mode == "json_schema"
        assert (await complete_structured(refusing, ask("a city"), City)).mode == "json_object"
        await refusing.aclose()
        await accepting.aclose()
    sent = [r.body.get("response_format", {}).get("type") for r in picky.requests]
    assert sent == ["json_schema", "json_object", "json_schema", "json_object"]
    assert [r.body["response_format"]["type"] for r in able.requests] == ["json_schema"]


def test_an_endpoint_names_the_server_without_secrets() -> None:
    assert (
        endpoint("openai", "https://user:sk-secret@llm.example:8443/v1/?key=sk-2#frag")
        == "openai https://llm.example:8443/v1"
    )
    # No base URL given: the SDK's own default is named (this test opens no connection
    # and names no provider host of its own).
    provider = open_provider("openai", api_key="sk-secret", env={})
    assert isinstance(provider, OpenAIProvider)
    assert provider.endpoint == endpoint("openai", str(provider.client.base_url))
    assert provider.endpoint.startswith("openai https://") and "sk-secret" not in provider.endpoint


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
async def test_invalid_output_gets_one_repair_turn(kind: str) -> None:
    async with FakeLLM(
        [reply(json={"name": "Oslo"}), reply(json={"name": "Oslo", "population": 3})]
    ) as fake:
        async with provider_for(fake, kind) as p:
            result = await complete_structured(p, ask("a city"), City)
        fake.assert_complete()
    assert result.repaired and result.value.population == 3
    repair = fake.requests[1].messages[-1]
    assert "population" in str(repair["content"]) and "Field required" in str(repair["content"])


@pytest.mark.anyio
async def test_output_still_invalid_after_the_repair_is_a_retryable_failure() -> None:
    async with FakeLLM([malformed_json(), malformed_json()]) as fake:
        with pytest.raises(LLMOutputError, match="no valid City after a repair turn") as caught:
            async with provider_for(fake, "openai") as p:
                await complete_structured(p, ask("a city"), City)
        fake.assert_complete()
    assert "retryable" not in caught.value.to_dict()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
async def test_truncated_output_is_detected_not_parsed(kind: str) -> None:
    async with FakeLLM([truncated('{"name": "Os')]) as fake:
        with pytest.raises(LLMOutputError, match="cut off at the token limit"):
            async with provider_for(fake, kind) as p:
                await complete_structured(p, ask("a city"), City)


@tool
def weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """Current temperature in a city."""
    if city == "Atlantis":
        raise LookupError("no such city")
    return {"city": city, "temp": {"Paris": 21, "Oslo": 9}[city], "unit": unit}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
async def test_a_tool_loop_with_parallel_calls_and_a_failing_tool(kind: str) -> None:
    script = [
        tool_calls(
            tool_call("weather", {"city": "Paris"}),
            tool_call("weather", {"city": "Oslo", "unit": "C"}),
            tool_call("weather", {"city": "Atlantis"}),
        ),
        reply("Paris is warmer."),
    ]
    async with FakeLLM(script) as fake:
        async with provider_for(fake, kind) as p:
            result = await run_tool_loop(p, ask("warmest?"), [weather])
        fake.assert_complete()
    assert (result.response.text, result.turns, result.tool_calls) == ("Paris is warmer.", 2, 3)
    results = [m for m in result.messages if m.role == "tool"]
    assert [m.is_error for m in results] == [False, False, True]
    assert "LookupError: no such city" in results[2].content
    assert '"temp": 21' in results[0].content
    second = fake.requests[1].body
    assert "weather" in str(second["tools"]), "the tools are offered on every turn"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
async def test_provider_errors_are_classified(kind: str) -> None:
    async with FakeLLM(
        [rate_limited(retry_after=3), server_error(), unauthorized(), context_length_exceeded()]
    ) as fake:
        async with provider_for(fake, kind) as provider:
            await _classified(provider)
        fake.assert_complete()
    assert len(fake.requests) == 4, "the SDK's own retries are off: taskloom retries durably"


async def _classified(provider: Provider) -> None:
    with pytest.raises(LLMRateLimitedError) as limited:
        await provider.complete(ask("hi"))
    assert limited.value.retry_after == 3
    with pytest.raises(LLMUnavailableError):
        await provider.complete(ask("hi"))
    with pytest.raises(LLMAuthError):
        await provider.complete(ask("hi"))
    with pytest.raises(LLMContextLengthError):
        await provider.complete(ask("hi"))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_call_past_its_timeout_is_a_retryable_unavailable_error(
    kind: str, streamed: bool
) -> None:
    async def sink(text: str) -> None:
        pass

    fake = FakeLLM([reply("too late", latency=5.0)])
    async with fake, provider_for(fake, kind) as p:
        started = time.monotonic()
        with pytest.raises(LLMUnavailableError) as caught:
            await p.complete(ask("hi", timeout=0.3), stream=sink if streamed else None)
        waited = time.monotonic() - started
    assert caught.value.retryable is not False  # the activity retries it
    assert waited < 4.0, f"the 0.3 s timeout was not applied (gave up after {waited:.1f} s)"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
async def test_streaming_passes_tokens_as_they_arrive(kind: str) -> None:
    seen: list[str] = []

    async def sink(text: str) -> None:
        seen.append(text)

    fake = FakeLLM([reply("one two three four", output_tokens=4)])
    async with fake, provider_for(fake, kind) as p:
        response = await p.complete(ask("count"), stream=sink)
    assert response.text == "one two three four" == "".join(seen)
    assert len(seen) > 1 and response.usage.output_tokens == 4


def test_json_is_extracted_from_prose_and_fences() -> None:
    assert extract_json('Sure! ```json\n{"a": [1, 2]}\n``` done') == {"a": [1, 2]}
    assert extract_json('The answer: {"a": "}"} ok') == {"a": "}"}
    with pytest.raises(ValueError, match="no JSON value"):
        extract_json("no json here")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", PROTOCOLS)
async def test_a_stream_cut_midway_is_a_retryable_unavailable_error(kind: str) -> None:
    from taskloom.agents.fake_llm import disconnect

    async def sink(text: str) -> None:
        pass

    fake = FakeLLM([disconnect(after_chunks=2)])
    async with fake, provider_for(fake, kind) as p:
        with pytest.raises(LLMUnavailableError, match="no answer"):
            await p.complete(ask("count"), stream=sink)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_a_provider_left_at_its_real_default_address_cannot_be_reached(name: str) -> None:
    """The suite's guard (tests/conftest.py): only loopback is reachable, so a client
    that was not pointed at the fake server fails instead of calling a provider."""
    provider = open_provider(name, api_key="sk-test", env={})  # the SDK's default base URL
    request = LLMRequest(model="m", messages=(Message(role="user", content="hi"),))
    try:
        # the guard's AssertionError, raw or wrapped by the provider's error mapping
        with pytest.raises((AssertionError, LLMUnavailableError)) as caught:
            await provider.complete(request)
    finally:
        await provider.aclose()
    causes: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        causes.append(error)
        error = error.__cause__ or error.__context__
    assert any("tests stay on loopback" in str(e) for e in causes), causes


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_an_unreachable_provider_names_model_address_and_real_cause(name: str) -> None:
    """Issue 16: it read 'openai:: no answer (APITimeoutError: Request timed out.)'."""
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    provider = open_provider(name, api_key="sk-test", base_url=url, env={})
    request = LLMRequest(model="gpt-x", messages=(Message(role="user", content="hi"),))
    try:
        with pytest.raises(LLMUnavailableError) as caught:
            await provider.complete(request)
    finally:
        await provider.aclose()
    text = str(caught.value)
    assert f"{name}:gpt-x: no answer from http://127.0.0.1:{port}/v1" in text, text
    assert "ConnectionRefusedError" in text, text  # not the SDK's "Connection error."
