"""taskloom installs as a wheel under its one import root, beside the OpenAI Agents SDK.

The checkout's folders (``orchestrator/``, ``agents/``, ...) are mapped onto the
``taskloom`` package (pyproject.toml); a generic top-level name would collide with what
users install beside it: ``agents`` is the import name of ``openai-agents``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

FRONT_DOORS = (
    "from taskloom import Orchestrator, workflow, activity, Agent; "
    "from taskloom.agents.fake_llm import FakeLLM; "
    "from taskloom.prompts import __name__ as p; "
    "from taskloom.agents.prompts import Prompts; "
    "assert 'subagent' in Prompts().names(); "
    "assert Prompts().origin('subagent') == 'taskloom.prompts/subagent.j2'; "
    "assert 'careful' in Prompts().render('subagent', role='a careful tester', task='t'); "
    "from agents import Agent as SDKAgent, Runner; "
    "import taskloom, agents; "
    "print(taskloom.__file__); print(agents.__file__)"
)


def _uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is installed with the dev extra's lock (.ci/run)"
    return uv


def test_a_wheel_installs_beside_openai_agents_and_both_import(tmp_path: Path) -> None:
    uv = _uv()
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("taskloom-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), str(wheel), "openai-agents"],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = subprocess.run(
        [str(python), "-c", FRONT_DOORS],
        cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120,
    ).stdout.split()  # fmt: skip
    assert out[0].endswith("site-packages/taskloom/__init__.py")
    assert out[1].endswith("site-packages/agents/__init__.py"), "the SDK keeps its name"
    top_level = {p.name for p in (venv / "lib").glob("python*/site-packages/*")}
    assert not {"orchestrator", "verifiers", "prompts"} & top_level
