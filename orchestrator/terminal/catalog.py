"""``taskloom templates`` and ``taskloom roles``: what a run may be built from, the
workflow templates and the roles a plan's activities may name."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from taskloom.client import Orchestrator
from taskloom.pipeline.templates import BUILTIN_TEMPLATES
from taskloom.terminal import runview
from taskloom.terminal.output import out

if TYPE_CHECKING:
    from taskloom.terminal.cli import Command

__all__ = ["register"]


def register(cmd: Command) -> None:
    """Add the ``templates`` and ``roles`` commands to the CLI."""
    tp = cmd("templates", _templates, "the workflow templates: names and what each is for")
    tp.add_argument("--json", action="store_true")
    ro = cmd("roles", _roles, "the roles a plan may use: the built-in agents and yours")
    ro.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="a module whose agents a worker would serve (repeatable)",
    )
    ro.add_argument("--json", action="store_true")


async def _templates(args: argparse.Namespace, orch: Orchestrator) -> int:
    templates = sorted(BUILTIN_TEMPLATES, key=lambda t: t.name)
    if args.json:
        out(json.dumps([t.to_dict() for t in templates]))
        return 0
    for line in runview.table(
        ("template", "description"), ([t.name, t.description] for t in templates)
    ):
        out(line)
    out("use one: taskloom run GOAL --template NAME")
    return 0


async def _roles(args: argparse.Namespace, orch: Orchestrator) -> int:
    from taskloom.pipeline.roles import catalog
    from taskloom.pipeline.subagents import Subagents

    worker = orch.worker(modules=args.imports or [])
    await worker.load()  # the built-in roles come with the pipeline
    roles = catalog(Subagents.of(worker).agents)
    if args.json:
        out(json.dumps([{**r.to_dict(), "model": r.model} for r in roles.values()]))
        return 0
    rows = ([r.name, r.output, ", ".join(r.tools), r.description] for r in roles.values())
    for line in runview.table(("role", "output", "tools", "description"), rows):
        out(line)
    more = "" if args.imports else "; --import MODULE adds a module's agents, as a worker would"
    out(f"a plan's activities name these roles{more}")
    return 0
