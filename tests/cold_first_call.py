"""Run as a script by tests/test_cold_start.py: in a fresh interpreter, open a provider
as a worker does (in a thread), then make its first call on the event loop and print,
as JSON, the modules imported and the pydantic schemas built during that call."""

from __future__ import annotations

import asyncio
import json
import sys

import pydantic._internal._generate_schema as generate

from taskloom.agents.llm import LLMRequest, Message
from taskloom.agents.providers import open_provider


async def main(kind: str, url: str) -> None:
    provider = await asyncio.to_thread(open_provider, kind, api_key="k", base_url=url, env={})
    imported: list[str] = []
    built: list[str] = []
    original = generate.GenerateSchema.generate_schema

    def counted(self: generate.GenerateSchema, obj: object, *args: object) -> object:
        built.append(getattr(obj, "__name__", repr(obj)))
        return original(self, obj, *args)  # type: ignore[arg-type]

    generate.GenerateSchema.generate_schema = counted  # type: ignore[method-assign]
    sys.addaudithook(lambda event, args: imported.append(args[0]) if event == "import" else None)
    await provider.complete(LLMRequest(model="m", messages=(Message(role="user", content="hi"),)))
    print(json.dumps({"imports": imported, "schemas": built}))
    await provider.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
