"""``taskloom serve``: the web inbox and ``/metrics`` (Starlette + uvicorn, imported only
when the command runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cli import Command

__all__ = ["register"]


def register(cmd: Command) -> None:
    """Add the ``serve`` command to the CLI."""
