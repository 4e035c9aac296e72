"""Plain engine code for tests of a worker's start: no agent, no pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom import activity, workflow

if TYPE_CHECKING:
    from taskloom import Context


@activity(name="plain.echo")
async def echo(x: int) -> int:
    return x


@workflow(name="plain.once")
async def once(ctx: Context, x: int) -> int:
    return int(await ctx.run(echo, x))
