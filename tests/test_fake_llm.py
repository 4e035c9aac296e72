"""The fake LLM server, driven by the official openai and anthropic SDKs over loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import openai
import pydantic
import pytest

import taskloom.agents.fake_llm as fake_llm
from taskloom.agents.errors import UserError
from taskloom.agents.fake_llm import (
    FakeLLM,
    RateLimit,
    Reply,
    Request,
    context_length_exceeded,
    disconnect,
    error,
    estimate_tokens,
    malformed_json,
    rate_limited,
    reply,
    server_error,
    tool_call,
    tool_calls,
    truncated,
    unauthorized,
)

pytestmark = pytest.mark.anyio

USER: Any = [{"role": "user", "content": "What is the capital of France?"}]


def user(text: str) -> Any:
    """A one-message conversation (typed loosely: the SDKs want their TypedDicts)."""
    return [{"role": "user", "content": text}]


ADD_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
}
MUL_TOOL: Any = {
    "type": "function",
    "function": {**ADD_TOOL["function"], "name": "mul", "description": "Multiply"},
}
ANTHROPIC_TOOLS: Any = [
    {"name": t["function"]["name"], "input_schema": t["function"]["parameters"]}
    for t in (ADD_TOOL, MUL_TOOL)
]


class City(pydantic.BaseModel):
    name: str
    population: int


@asynccontextmanager
async def openai_client(fake: FakeLLM, max_retries: int = 0) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake.openai_url, api_key="sk-secret", max_retries=max_retries
    ) as client:
        yield client


@asynccontextmanager
async def anthropic_client(
    fake: FakeLLM, max_retries: int = 0
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake.anthropic_url, api_key="sk-ant-secret", max_retries=max_retries
    ) as client:
        yield client


# -- plain text ---------------------------------------------------------------


async def test_openai_plain_text_is_answered_and_recorded() -> None:
    async with FakeLLM([reply("Paris is the capital.")]) as fake, openai_client(fake) as client:
        out = await client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
        fake.assert_complete()

    assert fake.openai_url.startswith("http://127.0.0.1:") and fake.openai_url.endswith("/v1")
    choice = out.choices[0]
    assert choice.message.content == "Paris is the capital."
    assert choice.finish_reason == "stop"
    assert out.model == "gpt-4.1-mini"
    assert out.usage is not None
    assert out.usage.completion_tokens == estimate_tokens("Paris is the capital.")
    assert out.usage.prompt_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens

    (req,) = fake.requests
    assert req.protocol == "openai"
    assert (req.method, req.path, req.status) == ("POST", "/v1/chat/completions", 200)
    assert req.model == "gpt-4.1-mini" and req.messages == USER
    assert req.step == reply("Paris is the capital.")
    assert req.headers["authorization"] == "<redacted>"
    assert "sk-secret" not in json.dumps(req.headers)
    assert req.headers["content-type"] == "application/json"


async def test_anthropic_plain_text_with_system_prompt() -> None:
    async with FakeLLM([reply("Paris.")]) as fake, anthropic_client(fake) as client:
        out = await client.messages.create(
            model="claude-test", max_tokens=256, system="Be brief.", messages=USER
        )
        fake.assert_complete()

    assert [b.type for b in out.content] == ["text"]
    assert out.content[0].text == "Paris."  # type: ignore[union-attr]
    assert out.stop_reason == "end_turn"
    assert out.usage.output_tokens == estimate_tokens("Paris.")
    assert out.usage.input_tokens > 0
    req = fake.last_request
    assert req.protocol == "anthropic" and req.path == "/v1/messages"
    assert req.body["system"] == "Be brief."
    # anthropic 2.x sends the key as "Authorization: Bearer", 0.x as "x-api-key".
    assert "<redacted>" in (req.headers.get("authorization"), req.headers.get("x-api-key"))
    assert "sk-ant-secret" not in json.dumps(req.headers)
    assert "anthropic-version" in req.headers


async def test_usage_given_by_the_step_overrides_the_estimate() -> None:
    step = reply("ok", input_tokens=1234, output_tokens=56)
    async with FakeLLM([step, step]) as fake:
        async with openai_client(fake) as oa:
            out = await oa.chat.completions.create(model="m", messages=USER)
        async with anthropic_client(fake) as an:
            msg = await an.messages.create(model="c", max_tokens=100, messages=USER)
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (1234, 56)
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (1234, 56)


# -- structured output --------------------------------------------------------


async def test_openai_json_schema_response_format_is_parsed() -> None:
    async with FakeLLM([reply(json={"name": "Paris", "population": 2_100_000})]) as fake:
        async with openai_client(fake) as client:
            out = await client.chat.completions.parse(
                model="gpt-4.1-mini", messages=USER, response_format=City
            )
        fake.assert_complete()
    assert out.choices[0].message.parsed == City(name="Paris", population=2_100_000)
    sent = fake.last_request.body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "City"


async def test_anthropic_structured_output_is_parsed() -> None:
    async with (
        FakeLLM([reply(json={"name": "Oslo", "population": 700_000})]) as fake,
        anthropic_client(fake) as client,
    ):
        out = await client.messages.parse(
            model="claude-test", max_tokens=256, messages=USER, output_format=City
        )
    assert out.parsed_output == City(name="Oslo", population=700_000)
    assert fake.last_request.body["output_config"]["format"]["type"] == "json_schema"


async def test_malformed_json_reaches_the_client_verbatim() -> None:
    async with (
        FakeLLM([malformed_json(), malformed_json("Sure! {oops")]) as fake,
        openai_client(fake) as client,
    ):
        raw = await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(pydantic.ValidationError):
            await client.chat.completions.parse(model="m", messages=USER, response_format=City)
    text = raw.choices[0].message.content
    assert text is not None and raw.choices[0].finish_reason == "stop"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


# -- tools --------------------------------------------------------------------


async def test_openai_parallel_tool_calls_round_trip() -> None:
    script = [
        tool_calls(tool_call("add", {"a": 1, "b": 2}), tool_call("mul", {"a": 3, "b": 4})),
        reply("1+2=3 and 3*4=12"),
    ]
    async with FakeLLM(script) as fake, openai_client(fake) as client:
        first = await client.chat.completions.create(
            model="gpt-4.1-mini", messages=USER, tools=[ADD_TOOL, MUL_TOOL]
        )
        msg = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls"
        calls = msg.tool_calls or []
        assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
            ("add", {"a": 1, "b": 2}),
            ("mul", {"a": 3, "b": 4}),
        ]
        assert len({c.id for c in calls}) == 2
        results = {"add": "3", "mul": "12"}
        followup: list[Any] = [
            *USER,
            msg.model_dump(exclude_none=True),
            *(
                {"role": "tool", "tool_call_id": c.id, "content": results[c.function.name]}  # type: ignore[union-attr]
                for c in calls
            ),
        ]
        second = await client.chat.completions.create(
            model="gpt-4.1-mini", messages=followup, tools=[ADD_TOOL, MUL_TOOL]
        )
        fake.assert_complete()

    assert second.choices[0].message.content == "1+2=3 and 3*4=12"
    first_req, second_req = fake.requests
    assert [t["function"]["name"] for t in first_req.body["tools"]] == ["add", "mul"]
    tool_messages = [m for m in second_req.messages if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        (calls[0].id, "3"),
        (calls[1].id, "12"),
    ]
    assert second_req.messages[1]["tool_calls"][0]["id"] == calls[0].id


async def test_anthropic_parallel_tool_use_round_trip() -> None:
    script = [
        tool_calls(
            tool_call("add", {"a": 1, "b": 2}),
            tool_call("mul", {"a": 3, "b": 4}),
            text="Let me compute both.",
        ),
        reply("3 and 12"),
    ]
    async with FakeLLM(script) as fake, anthropic_client(fake) as client:
        first = await client.messages.create(
            model="claude-test", max_tokens=512, messages=USER, tools=ANTHROPIC_TOOLS
        )
        assert first.stop_reason == "tool_use"
        assert [b.type for b in first.content] == ["text", "tool_use", "tool_use"]
        uses = [b for b in first.content if b.type == "tool_use"]
        assert [(u.name, u.input) for u in uses] == [
            ("add", {"a": 1, "b": 2}),
            ("mul", {"a": 3, "b": 4}),
        ]
        results = [
            {"type": "tool_result", "tool_use_id": u.id, "content": r}
            for u, r in zip(uses, ["3", "12"], strict=True)
        ]
        followup: list[Any] = [
            *USER,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {"role": "user", "content": results},
        ]
        second = await client.messages.create(
            model="claude-test", max_tokens=512, messages=followup, tools=ANTHROPIC_TOOLS
        )
        fake.assert_complete()

    assert second.content[0].text == "3 and 12"  # type: ignore[union-attr]
    sent = fake.requests[1].messages[-1]["content"]
    assert [(r["tool_use_id"], r["content"]) for r in sent] == [
        (uses[0].id, "3"),
        (uses[1].id, "12"),
    ]


async def test_tool_arguments_that_are_not_json() -> None:
    broken = tool_calls(tool_call("add", '{"a": 1, "b"'))
    async with FakeLLM([broken, broken]) as fake:
        async with openai_client(fake) as oa:
            out = await oa.chat.completions.create(model="m", messages=USER)
        async with anthropic_client(fake) as an:
            # A non-streamed Message cannot carry them: the fake says so.
            with pytest.raises(anthropic.BadRequestError, match="JSON object"):
                await an.messages.create(model="c", max_tokens=50, messages=USER)
    calls = out.choices[0].message.tool_calls or []
    assert calls[0].function.arguments == '{"a": 1, "b"'  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="cannot send step"):
        fake.assert_complete()


# -- streaming ----------------------------------------------------------------


async def test_openai_stream_is_reassembled_by_the_sdk_helper() -> None:
    text = "Paris has been the capital of France since 508 AD."
    async with FakeLLM([reply(text)]) as fake, openai_client(fake) as client:
        deltas: list[str] = []
        async with client.chat.completions.stream(
            model="gpt-4.1-mini", messages=USER, stream_options={"include_usage": True}
        ) as stream:
            async for event in stream:
                if event.type == "content.delta":
                    deltas.append(event.delta)
            final = await stream.get_final_completion()

    assert len(deltas) > 3 and "".join(deltas) == text
    assert final.choices[0].message.content == text
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == estimate_tokens(text)
    assert fake.last_request.stream


async def test_openai_streamed_parallel_tool_calls_and_raw_chunks() -> None:
    step = tool_calls(
        tool_call("add", {"a": 1, "b": 2}), tool_call("mul", {"a": 30, "b": 40, "note": "x" * 40})
    )
    async with FakeLLM([step, step]) as fake, openai_client(fake) as client:
        async with client.chat.completions.stream(
            model="m", messages=USER, tools=[ADD_TOOL, MUL_TOOL]
        ) as stream:
            final = await stream.get_final_completion()
        raw = await client.chat.completions.create(model="m", messages=USER, stream=True)
        chunks = [c async for c in raw]

    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("add", {"a": 1, "b": 2}),
        ("mul", {"a": 30, "b": 40, "note": "x" * 40}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    # Without stream_options.include_usage there is no usage chunk.
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_anthropic_stream_is_reassembled_by_the_sdk_helper() -> None:
    text = "Paris has been the capital of France since 508 AD."
    async with (
        FakeLLM([reply(text)]) as fake,
        anthropic_client(fake) as client,
        client.messages.stream(model="claude-test", max_tokens=256, messages=USER) as stream,
    ):
        pieces = [t async for t in stream.text_stream]
        final = await stream.get_final_message()

    assert len(pieces) > 3 and "".join(pieces) == text
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == estimate_tokens(text)
    assert final.usage.input_tokens == fake.tokens.total(kind="input")


async def test_anthropic_streamed_tool_use() -> None:
    step = tool_calls(tool_call("add", {"a": 1, "b": 2}), tool_call("mul", {"a": 3, "b": 4}))
    async with (
        FakeLLM([step]) as fake,
        anthropic_client(fake) as client,
        client.messages.stream(
            model="c", max_tokens=256, messages=USER, tools=ANTHROPIC_TOOLS
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("add", {"a": 1, "b": 2}),
        ("mul", {"a": 3, "b": 4}),
    ]


# -- errors -------------------------------------------------------------------


async def test_openai_429_surfaces_retry_after_and_rate_limit_headers() -> None:
    limit = RateLimit(limit_tokens=30_000, remaining_tokens=0, reset_tokens=1.5)
    async with (
        FakeLLM([rate_limited(retry_after=0.25, rate_limit=limit)]) as fake,
        openai_client(fake) as client,
    ):
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    err = caught.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    headers = err.response.headers
    assert float(headers["retry-after"]) == 0.25
    assert headers["x-ratelimit-limit-tokens"] == "30000"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-reset-tokens"] == "1.5s"
    assert fake.tokens.events() == []  # a refused request bills nothing


async def test_anthropic_429_surfaces_retry_after() -> None:
    limit = RateLimit(limit_requests=50, remaining_requests=0, reset_requests=30)
    async with (
        FakeLLM([rate_limited(retry_after=3, rate_limit=limit)]) as fake,
        anthropic_client(fake) as client,
    ):
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model="c", max_tokens=10, messages=USER)
    err = caught.value
    assert err.type == "rate_limit_error"
    assert err.response.headers["retry-after"] == "3"
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert err.response.headers["anthropic-ratelimit-requests-reset"].endswith("Z")


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_sdk_waits_out_retry_after_and_the_next_step_answers(protocol: str) -> None:
    async with FakeLLM([rate_limited(retry_after=1.0), reply("second time lucky")]) as fake:
        started = time.monotonic()
        if protocol == "openai":
            async with openai_client(fake, max_retries=1) as oa:
                out = await oa.chat.completions.create(model="m", messages=USER)
            text = out.choices[0].message.content
        else:
            async with anthropic_client(fake, max_retries=1) as an:
                msg = await an.messages.create(model="c", max_tokens=50, messages=USER)
            text = msg.content[0].text  # type: ignore[union-attr]
        elapsed = time.monotonic() - started
        fake.assert_complete()

    assert text == "second time lucky"
    first, second = fake.requests
    assert (first.status, second.status) == (429, 200)
    # Without Retry-After the SDKs would back off for at most 0.5 s.
    assert second.received_at - first.received_at >= 1.0
    assert elapsed >= 1.0
    assert second.headers["x-stainless-retry-count"] == "1"


@pytest.mark.parametrize(
    ("step", "openai_error", "anthropic_error"),
    [
        (server_error(), openai.InternalServerError, anthropic.InternalServerError),
        (server_error(503), openai.InternalServerError, anthropic.ServiceUnavailableError),
        (server_error(529), openai.InternalServerError, anthropic.OverloadedError),
    ],
)
async def test_5xx(
    step: Any, openai_error: type[Exception], anthropic_error: type[Exception]
) -> None:
    async with FakeLLM([step, step]) as fake:
        async with openai_client(fake) as oa:
            with pytest.raises(openai_error) as oa_caught:
                await oa.chat.completions.create(model="m", messages=USER)
        async with anthropic_client(fake) as an:
            with pytest.raises(anthropic_error) as an_caught:
                await an.messages.create(model="c", max_tokens=10, messages=USER)
    assert oa_caught.value.status_code == step.status  # type: ignore[attr-defined]
    assert an_caught.value.status_code == step.status  # type: ignore[attr-defined]
    assert [r.status for r in fake.requests] == [step.status, step.status]


async def test_non_retryable_errors_have_provider_shaped_bodies_and_are_not_retried() -> None:
    script = [context_length_exceeded(), unauthorized(), context_length_exceeded()]
    async with FakeLLM(script) as fake:
        async with openai_client(fake, max_retries=3) as oa:
            with pytest.raises(openai.BadRequestError) as too_long:
                await oa.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.AuthenticationError) as auth:
                await oa.chat.completions.create(model="m", messages=USER)
        async with anthropic_client(fake, max_retries=3) as an:
            with pytest.raises(anthropic.BadRequestError) as an_too_long:
                await an.messages.create(model="c", max_tokens=10, messages=USER)
        fake.assert_complete()
    assert too_long.value.code == "context_length_exceeded"
    assert auth.value.code == "invalid_api_key"
    assert an_too_long.value.type == "invalid_request_error"
    assert "prompt is too long" in (an_too_long.value.api_message or "")
    assert len(fake.requests) == 3  # no retries


async def test_custom_error_message_and_verbatim_body() -> None:
    body = {"error": {"message": "exactly this", "type": "odd", "code": "odd_code"}}
    async with (
        FakeLLM([error(400, "roles must alternate"), error(422, body=body)]) as fake,
        openai_client(fake) as client,
    ):
        with pytest.raises(openai.BadRequestError, match="roles must alternate"):
            await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
    assert caught.value.body == body["error"]


async def test_disconnect_is_a_connection_error() -> None:
    async with FakeLLM([disconnect(), disconnect(after_chunks=3)]) as fake:
        async with openai_client(fake) as client:
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="m", messages=USER)
            seen: list[str] = []
            with pytest.raises(openai.APIConnectionError):
                stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
                async for chunk in stream:
                    seen.append(chunk.choices[0].delta.content or "")
        fake.assert_complete()
    assert len(seen) == 3  # the role chunk and two words, then the connection dropped


# -- truncation ---------------------------------------------------------------


async def test_truncation_finish_reason_length_and_max_tokens() -> None:
    script = [truncated('{"name": "Par'), truncated('{"name": "Par'), truncated("The cap")]
    async with FakeLLM(script) as fake:
        async with openai_client(fake) as oa:
            out = await oa.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.LengthFinishReasonError):
                await oa.chat.completions.parse(model="m", messages=USER, response_format=City)
        async with anthropic_client(fake) as an:
            msg = await an.messages.create(model="c", max_tokens=3, messages=USER)
        fake.assert_complete()
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.content == '{"name": "Par'
    assert msg.stop_reason == "max_tokens"


async def test_text_longer_than_max_tokens_is_cut_there() -> None:
    long_text = "word " * 100
    async with FakeLLM([reply(long_text), reply(long_text), reply(long_text)]) as fake:
        async with openai_client(fake) as oa:
            out = await oa.chat.completions.create(model="m", messages=USER, max_tokens=10)
        async with anthropic_client(fake) as an:
            async with an.messages.stream(model="c", max_tokens=10, messages=USER) as stream:
                streamed = await stream.get_final_message()
            roomy = await an.messages.create(model="c", max_tokens=1000, messages=USER)
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.content == long_text[:40]
    assert out.usage is not None and out.usage.completion_tokens == 10
    assert streamed.stop_reason == "max_tokens"
    assert streamed.content[0].text == long_text[:40]  # type: ignore[union-attr]
    assert roomy.stop_reason == "end_turn"


# -- capabilities -------------------------------------------------------------


async def test_reject_json_schema_like_a_local_server() -> None:
    schema_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": City.model_json_schema()},
    }
    async with FakeLLM(
        [reply(json={"name": "Rome", "population": 1})], reject_json_schema=True
    ) as fake:
        async with openai_client(fake, max_retries=2) as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model="local", messages=USER, response_format=schema_format
                )
            assert fake.pending  # the refusal used no step
            out = await client.chat.completions.create(
                model="local", messages=USER, response_format={"type": "json_object"}
            )
        fake.assert_complete()
    assert caught.value.param == "response_format"
    assert "json_schema" in caught.value.message
    assert json.loads(out.choices[0].message.content or "") == {"name": "Rome", "population": 1}
    assert [r.status for r in fake.requests] == [400, 200]
    assert fake.requests[0].step is None


async def test_reject_json_object_too() -> None:
    async with FakeLLM(reject_json_schema=True, reject_json_object=True) as fake:
        async with openai_client(fake) as client:
            with pytest.raises(openai.BadRequestError, match="json_object"):
                await client.chat.completions.create(
                    model="local", messages=USER, response_format={"type": "json_object"}
                )
        fake.assert_complete()


# -- concurrency --------------------------------------------------------------


async def test_100_concurrent_requests_are_served_concurrently() -> None:
    in_flight = 0
    most = 0

    async def script(request: Request) -> Reply:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)  # a script function may itself wait
        in_flight -= 1
        return reply(f"answer to {request.messages[0]['content']}", latency=0.2)

    async with FakeLLM(script) as fake, openai_client(fake) as client:
        outs = await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=user(str(i))) for i in range(100))
        )
        fake.assert_complete()

    assert sorted(o.choices[0].message.content or "" for o in outs) == sorted(
        f"answer to {i}" for i in range(100)
    )
    assert most > 10  # served concurrently (a wall-clock bound failed CI on a loaded machine)
    assert len(fake.requests) == 100
    assert fake.tokens.max_requests_in_window(60.0, model="m") == 100


# -- the script ---------------------------------------------------------------


async def test_assert_complete_fails_listing_unused_steps() -> None:
    async with FakeLLM([reply("one"), reply("two"), rate_limited(5)]) as fake:
        async with openai_client(fake) as client:
            await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(AssertionError) as caught:
            fake.assert_complete()
    message = str(caught.value)
    assert "2 scripted step(s) never used" in message
    assert "'two'" in message and "status=429" in message
    assert "'one'" not in message


async def test_a_request_beyond_the_script_fails_fast_and_is_reported() -> None:
    async with FakeLLM([reply("only")]) as fake:
        async with openai_client(fake, max_retries=2) as client:
            await client.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.BadRequestError, match="no step left"):
                await client.chat.completions.create(model="m", messages=USER)
        assert len(fake.requests) == 2  # not retried
        with pytest.raises(AssertionError, match="no step left"):
            fake.assert_complete()


async def test_steps_then_a_script_function() -> None:
    def echo(request: Request) -> Reply:
        return reply(f"echo {request.model}")

    async with FakeLLM(echo) as fake:
        fake.add(reply("scripted first"))
        async with anthropic_client(fake) as client:
            texts = [
                (await client.messages.create(model=f"c{i}", max_tokens=9, messages=USER))
                .content[0]
                .text  # type: ignore[union-attr]
                for i in range(3)
            ]
        fake.assert_complete()
    assert texts == ["scripted first", "echo c1", "echo c2"]


async def test_a_failing_script_function_is_reported() -> None:
    def broken(request: Request) -> Reply:
        raise RuntimeError("bug in the test")

    async with FakeLLM(broken) as fake, openai_client(fake) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="m", messages=USER)
    with pytest.raises(AssertionError, match="bug in the test"):
        fake.assert_complete()


async def test_latency_is_waited_without_blocking_other_requests() -> None:
    def script(request: Request) -> Reply:
        slow = request.messages[0]["content"] == "slow"
        return reply("slow" if slow else "fast", latency=3.0 if slow else 0.0)

    async with FakeLLM(script) as fake, openai_client(fake) as client:
        slow = asyncio.ensure_future(
            client.chat.completions.create(model="m", messages=user("slow"))
        )
        while not fake.requests:  # the slow one is in its latency wait
            await asyncio.sleep(0.01)
        fast = await client.chat.completions.create(model="m", messages=user("fast"))
        assert not slow.done(), "the fast answer waited for the slow one's latency"
        assert (await slow).choices[0].message.content == "slow"
    assert fast.choices[0].message.content == "fast"


def test_steps_are_validated_early() -> None:
    with pytest.raises(UserError, match="latency"):
        reply("x", latency=-1)
    with pytest.raises(UserError, match="either text or json"):
        reply("x", json={"a": 1})
    with pytest.raises(UserError, match="4xx or 5xx"):
        error(200)
    with pytest.raises(UserError, match="not a step"):
        FakeLLM(["just a string"])  # type: ignore[list-item]
    with pytest.raises(UserError, match="not running"):
        _ = FakeLLM().openai_url


async def test_keep_alive_and_chunked_request_bodies_on_a_raw_connection() -> None:
    body = json.dumps({"model": "m", "messages": USER}).encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    async with FakeLLM([reply("one"), reply("two")]) as fake:
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        half = len(body) // 2
        chunked = b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:])
        )
        writer.write(f"{head}transfer-encoding: chunked\r\n\r\n".encode() + chunked + b"0\r\n\r\n")
        await writer.drain()
        answers = []
        for _ in range(2):
            status_and_headers = await reader.readuntil(b"\r\n\r\n")
            assert status_and_headers.startswith(b"HTTP/1.1 200 OK\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in status_and_headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            answers.append(json.loads(await reader.readexactly(length)))
        writer.close()
        fake.assert_complete()
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["one", "two"]


# -- sync use, token windows, exports -----------------------------------------


def test_sync_clients_against_a_server_on_its_own_thread() -> None:
    with FakeLLM([reply("sync openai"), reply("sync anthropic")]) as fake:
        with openai.OpenAI(base_url=fake.openai_url, api_key="k", max_retries=0) as oa:
            out = oa.chat.completions.create(model="m", messages=USER)
        with anthropic.Anthropic(base_url=fake.anthropic_url, api_key="k", max_retries=0) as an:
            msg = an.messages.create(model="c", max_tokens=20, messages=USER)
        fake.assert_complete()
    assert out.choices[0].message.content == "sync openai"
    assert msg.content[0].text == "sync anthropic"  # type: ignore[union-attr]

    fake.start()  # start() / stop() work too, and it can be restarted
    try:
        with (
            openai.OpenAI(base_url=fake.openai_url, api_key="k", max_retries=0) as oa,
            pytest.raises(openai.BadRequestError),
        ):
            oa.chat.completions.create(model="m", messages=USER)
    finally:
        fake.stop()


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_token_counter_windows_per_model() -> None:
    clock = ManualClock()
    step: Callable[[Request], Reply] = lambda r: reply("x", input_tokens=100, output_tokens=10)  # noqa: E731
    async with FakeLLM(step, clock=clock) as fake, openai_client(fake) as client:
        for at, model in [(0, "a"), (20, "a"), (50, "b"), (70, "a"), (75, "a"), (200, "a")]:
            clock.now = at
            await client.chat.completions.create(model=model, messages=USER)

    tokens = fake.tokens
    assert tokens.total(model="a") == 5 * 110
    assert tokens.total(model="b", kind="input") == 100
    assert [e.at for e in tokens.events(model="a")] == [0, 20, 70, 75, 200]
    # [20, 80) holds three requests for model a: the busiest minute.
    assert tokens.max_in_window(60.0, model="a") == 330
    assert tokens.max_requests_in_window(60.0, model="a") == 3
    assert tokens.max_in_window(60.0) == 440  # [20, 80) across both models
    assert tokens.in_window(0, 60, model="a", kind="output") == 20
    assert [r.received_at for r in fake.requests] == [0, 20, 50, 70, 75, 200]


def test_exports() -> None:
    assert fake_llm.__all__ == sorted(fake_llm.__all__)
    for name in fake_llm.__all__:
        assert hasattr(fake_llm, name), name
        assert not name.startswith("_")
