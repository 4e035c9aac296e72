"""Every Python example in the README runs as written (against the test's Redis, and the
fake LLM server where it calls a model)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom import Orchestrator
from taskloom.agents.fake_llm import FakeLLM, reply
from taskloom.testing.simulated import SimulatedTeam
from tests.conftest import worker_env
from tests.helpers import ROOT, running

pytestmark = pytest.mark.anyio

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    plan = {"activities": [{"id": "market", "role": "researcher", "instructions": "size it"}]}
    with FakeLLM() as server:
        server.answer_with(SimulatedTeam(plans=[plan]))
        yield server


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_readme_example_runs(
    index: int, fake: FakeLLM, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(BLOCKS[index])
    env = worker_env(
        redis_url,
        prefix,
        OPENAI_BASE_URL=fake.openai_url,
        OPENAI_API_KEY="sk-test",
        TASKLOOM_DATA_DIR=str(tmp_path / "data"),
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"README example {index} failed:\n{BLOCKS[index]}\n{proc.stderr}"


async def test_the_subagents_example_runs_beside_the_built_in_roles(
    orch: Orchestrator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker serves the built-in roles too: the Subagents example's agent must not
    take one of their names (issue 16: "two different agents are named 'researcher'",
    raised when the workflow's first ctx.agent call registered it)."""
    (block,) = [b for b in BLOCKS if "ctx.agent(" in b and "class Finding" in b]
    (tmp_path / "readme_subagents.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    example = importlib.import_module("readme_subagents")
    finding = {"claim": "vector search scales", "confidence": 0.9}
    async with FakeLLM() as server:
        server.answer_with(lambda request: reply(json=finding))
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        worker = orch.worker(workflows=[example.research])
        async with running(worker):
            handle = await orch.start(example.research, "search")
            assert await handle.result(timeout=60) == [finding] * 3
