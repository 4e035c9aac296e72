"""Every Python example in the README runs as written (against the test's Redis, and the
fake LLM server where it calls a model)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom.agents.fake_llm import FakeLLM
from taskloom.testing.simulated import SimulatedTeam
from tests.conftest import worker_env
from tests.helpers import ROOT

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
