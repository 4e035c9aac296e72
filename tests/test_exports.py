"""The public surface is exactly what is meant (as httpx checks its own)."""

from __future__ import annotations

import taskloom
from taskloom import agents, errors


def test_all_names_exist_and_are_public() -> None:
    for name in taskloom.__all__:
        assert hasattr(taskloom, name), name
        assert not name.startswith("_")
    assert sorted(taskloom.__all__) == taskloom.__all__


def test_every_error_is_exported_and_derives_from_the_root() -> None:
    exported = {n for n in errors.__all__}
    assert exported <= set(taskloom.__all__)
    for name in exported:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.TaskloomError)
        assert name in (errors.__doc__ or ""), f"{name} missing from the tree in errors.py"


def test_the_agents_package_exports_what_it_means_to() -> None:
    assert sorted(taskloom.agents.__all__) == agents.__all__
    for name in agents.__all__:
        assert hasattr(agents, name), name
        assert not name.startswith("_")
    for name in ("Agent", "AgentRunner", "PriceTable", "Prompts", "tool", "TaskloomError"):
        assert name in agents.__all__
    assert agents.TaskloomError is taskloom.TaskloomError  # one exception root


def test_importing_taskloom_leaves_the_provider_sdks_for_first_use() -> None:
    """Each SDK takes about a second to import: a worker or a CLI command that makes no
    model call must not pay for it (W4's recovery is measured from a fresh worker)."""
    import subprocess
    import sys

    code = (
        "import sys, taskloom.agents as agents, taskloom.terminal.cli; "
        "import taskloom.pipeline.subagents; "
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules)); "
        "agents.OpenAIProvider; print('openai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_importing_taskloom_leaves_the_web_and_webhook_libraries_for_first_use() -> None:
    """starlette/uvicorn (serve), httpx (webhooks) and rich (the live view) load only
    when a command needs them: every worker and CLI command starts faster."""
    import subprocess
    import sys

    code = (
        "import sys, taskloom.terminal.cli; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'httpx', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_imports_the_folders_by_their_own_names() -> None:
    """The checkout's folders are importable by their names from its root (pytest puts
    it on sys.path), but an installed taskloom has only ``taskloom``: an import of
    ``orchestrator`` or ``agents`` would pass here and fail for users (or load the
    OpenAI Agents SDK instead)."""
    import re

    from tests.helpers import ROOT

    old = re.compile(r"^\s*(from|import)\s+(orchestrator|agents|verifiers|prompts)\b", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("orchestrator", "agents", "verifiers", "prompts", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if old.search(path.read_text())
    ]
    assert offenders == []


ENGINE_IMPORTS = (
    "import taskloom.engine",
    "from taskloom.engine.worker import Worker",
    "from taskloom import Worker, Store, Registry, RetryPolicy, ManualClock, workflow, activity",
    "from taskloom import heartbeat, activity_info, HumanTasks, DeadLetters, TaskloomError",
)


def test_importing_the_engine_loads_no_llm_sdk_no_templates_and_no_web() -> None:
    """The engine knows nothing of LLMs or the web: a process that imports it, its worker
    and the engine's names at the front door loads no provider SDK, no Jinja2 and no
    Starlette (each one a layer above, imported by whoever uses it)."""
    import subprocess
    import sys

    heavy = ("openai", "anthropic", "jinja2", "starlette")
    probe = f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    code = "; ".join(
        (
            "import sys",
            *ENGINE_IMPORTS,
            probe,
            # the probe sees a library when one is loaded (Jinja2: on a first render)
            "import taskloom.agents.prompts as p; p.Prompts().env",
            probe,
        )
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert "jinja2" in out[1]


def test_the_names_loaded_on_first_use_are_the_ones_type_checkers_see() -> None:
    """``taskloom`` and ``taskloom.agents`` load most names on first use; their ``if
    TYPE_CHECKING:`` imports are what mypy and IDEs see, and name the same objects."""
    import ast
    import importlib
    from pathlib import Path

    for package in (taskloom, agents):
        tree = ast.parse(Path(str(package.__file__)).read_text())
        (block,) = [
            node.body
            for node in tree.body
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        ]
        seen = {
            alias.asname or alias.name: "." * node.level + (node.module or "")
            for node in block
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert sorted(seen) == sorted(package._HOME), package.__name__
        for name, module in seen.items():
            home = importlib.import_module(module, package.__name__)
            assert getattr(package, name) is getattr(home, name), name
