"""The public surface is exactly what is meant (as httpx checks its own)."""

from __future__ import annotations

import agents
import orchestrator
from orchestrator import errors


def test_all_names_exist_and_are_public() -> None:
    for name in orchestrator.__all__:
        assert hasattr(orchestrator, name), name
        assert not name.startswith("_")
    assert sorted(orchestrator.__all__) == orchestrator.__all__


def test_every_error_is_exported_and_derives_from_the_root() -> None:
    exported = {n for n in errors.__all__}
    assert exported <= set(orchestrator.__all__)
    for name in exported:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.TaskloomError)
        assert name in (errors.__doc__ or ""), f"{name} missing from the tree in errors.py"


def test_the_agents_package_exports_what_it_means_to() -> None:
    assert sorted(agents.__all__) == agents.__all__
    for name in agents.__all__:
        assert hasattr(agents, name), name
        assert not name.startswith("_")
    for name in ("Agent", "AgentRunner", "PriceTable", "Prompts", "tool", "TaskloomError"):
        assert name in agents.__all__
    assert agents.TaskloomError is orchestrator.TaskloomError  # one exception root


def test_importing_taskloom_leaves_the_provider_sdks_for_first_use() -> None:
    """Each SDK takes about a second to import: a worker or a CLI command that makes no
    model call must not pay for it (W4's recovery is measured from a fresh worker)."""
    import subprocess
    import sys

    code = (
        "import sys, agents, orchestrator.cli, orchestrator.subagents; "
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
        "import sys, orchestrator.cli; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'httpx', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
