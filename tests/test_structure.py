"""The code stays in small rooms (issue 13): no module of the product over 600 lines,
no class over 400. A module or class that grows past them is split along what it holds
(ARCHITECTURE.md says where things live), not trimmed of its comments."""

from __future__ import annotations

import ast

from tests.helpers import ROOT

FOLDERS = ("orchestrator", "agents", "verifiers", "prompts", "benchmarks")
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400


def test_no_module_or_class_is_over_the_size_limits() -> None:
    too_big: list[str] = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            where = path.relative_to(ROOT)
            if (lines := source.count("\n")) > MAX_MODULE_LINES:
                too_big.append(f"{where}: {lines} lines (at most {MAX_MODULE_LINES})")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ClassDef):
                    size = (node.end_lineno or node.lineno) - node.lineno + 1
                    if size > MAX_CLASS_LINES:
                        too_big.append(
                            f"{where}: class {node.name} {size} lines (at most {MAX_CLASS_LINES})"
                        )
    assert not too_big, "split these along what they hold:\n" + "\n".join(too_big)
