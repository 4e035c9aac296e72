"""``taskloom inbox``: the escalation inbox from the terminal (list, show, decide, edit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cli import Command

__all__ = ["register"]


def register(cmd: Command) -> None:
    """Add the ``inbox`` command to the CLI (``cmd`` makes a subcommand's parser)."""
