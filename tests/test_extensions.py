"""Worker extensions: a layer above the engine teaches a bare engine worker a kind of
spec, its activity and a Context method of its own (as the subagents do)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from taskloom import Context, Orchestrator, RunFailedError, UserError, Worker, workflow
from taskloom.engine.attempt import current
from taskloom.engine.context import Context as EngineContext
from taskloom.engine.definitions import ActivityDef
from taskloom.engine.extensions import WorkerExtension
from tests.helpers import running

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Greeting:
    """The extension's kind of spec, found at the top level of the worker's modules."""

    name: str
    text: str


async def _greet(greeting: str, who: str) -> str:
    host = current().host
    greeter = host.extension(Greeter)
    assert greeter is not None
    return f"{greeter.greetings[greeting].text}, {who}"


GREET = ActivityDef(name="test.greet", fn=_greet, is_async=True)


class GreetingContext(EngineContext):
    async def greet(self, greeting: Greeting, who: str) -> str:
        greeter = self.extension(Greeter)
        assert greeter is not None
        greeter.greetings.setdefault(greeting.name, greeting)
        result: str = await self.run(GREET, greeting.name, who)
        return result


class Greeter(WorkerExtension):
    context = GreetingContext

    def __init__(self) -> None:
        self.greetings: dict[str, Greeting] = {}

    def install(self, worker: Worker) -> None:
        for module in worker.registry.modules:
            for value in vars(module).values():
                if isinstance(value, Greeting):
                    self.greetings[value.name] = value
        worker.registry.add(GREET)


def _module() -> ModuleType:
    module = ModuleType("greetings")
    module.hello = Greeting(name="hello", text="hello")  # type: ignore[attr-defined]

    @workflow(name="greet_twice")
    async def greet_twice(ctx: Any, who: str) -> list[str]:
        hello = await ctx.greet(module.hello, who)
        hi = await ctx.greet(Greeting(name="hi", text="hi"), who)  # met in the call
        return [type(ctx).__name__, hello, hi]

    module.greet_twice = greet_twice  # type: ignore[attr-defined]
    return module


async def test_an_extension_gives_workflows_its_context_and_serves_its_specs(
    orch: Orchestrator, make_worker: Callable[..., Worker]
) -> None:
    module = _module()
    greeter = Greeter()
    worker = make_worker(modules=[module], extensions=[greeter])
    assert worker.extension(Greeter) is greeter
    assert sorted(greeter.greetings) == ["hello"], "found in the module the worker imports"
    async with running(worker):
        handle = await orch.start(module.greet_twice, "ana")
        assert await handle.result(timeout=20) == ["GreetingContext", "hello, ana", "hi, ana"]


async def test_a_worker_without_it_says_where_the_method_comes_from(
    orch: Orchestrator, make_worker: Callable[..., Worker]
) -> None:
    module = _module()
    async with running(make_worker(modules=[module])):
        handle = await orch.start(module.greet_twice, "ana")
        with pytest.raises(RunFailedError, match=r"ctx\.greet is not a method .*orch\.worker"):
            await handle.result(timeout=20)


async def test_an_extension_installs_once_and_contexts_must_extend_each_other(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker(extensions=[Greeter()])
    with pytest.raises(UserError, match="already has a Greeter"):
        worker.extend(Greeter())

    class Other(WorkerExtension):
        context = Context  # the subagents' Context: not a GreetingContext

        def install(self, worker: Worker) -> None:
            raise AssertionError("a refused extension is not installed")

    with pytest.raises(UserError, match="does not extend the GreetingContext"):
        worker.extend(Other())
    assert worker.context_type is GreetingContext
    assert worker.extension(Other) is None
