"""Which endpoints served a run's model calls, read from its history.

Every model call's activity records who served it (``taskloom.agent`` results carry
``endpoint``, judge verdicts ``endpoints``: provider and base URL, never a key), so a
run says afterwards where its answers came from::

    calls = await served_by_run(orch, run_id)   # {"openai https://api.openai.com/v1": 13}
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskloom.client import Orchestrator

__all__ = ["served_by", "served_by_run"]


def served_by(result: Any) -> Counter[str]:
    """Model calls behind one activity's recorded result, by endpoint: an agent's
    result (``endpoint``, ``calls``), a verification outcome or a list of verdicts
    (each verdict's ``endpoints``); empty for anything else."""
    found: Counter[str] = Counter()
    if isinstance(result, dict):
        endpoint = result.get("endpoint")
        if isinstance(endpoint, str) and endpoint:
            found[endpoint] += max(1, int(result.get("calls") or 1))
        verdicts = result.get("verdicts")
        if isinstance(verdicts, list):
            found += served_by(verdicts)
        for endpoint in result.get("endpoints") or ():
            if isinstance(endpoint, str) and endpoint:
                found[endpoint] += 1
    elif isinstance(result, list):
        for item in result:
            if isinstance(item, dict) and "endpoints" in item:
                found += served_by(item)
    return found


async def served_by_run(orch: Orchestrator, run_id: str) -> Counter[str]:
    """Model calls of run ``run_id`` and its child runs, by the endpoint that served
    them, from their recorded histories."""
    payloads, found = orch.payloads(), Counter[str]()
    pending, seen = [run_id], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        async for event in orch.handle(current).events(follow=False):
            if event.type == "activity_completed":
                found += served_by(await payloads.unpack(event.data.get("result")))
            elif event.type == "child_started":
                pending.append(str(event.data["child_id"]))
    return found
