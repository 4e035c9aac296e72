"""The key names of a run's budget, in one place: the LLM layer reserves and settles
against them (:mod:`taskloom.agents.budget`), the engine deletes them with the run
(:meth:`taskloom.engine.keys.Keys.owned`), and neither imports the other."""

from __future__ import annotations

__all__ = ["BudgetKeys"]


class BudgetKeys:
    """Key names of run budgets under one prefix; each run's keys share ``{run_id}``."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def budget(self, run_id: str) -> str:
        """Hash: limits, spent and held totals of the run."""
        return f"{self.prefix}:run:{{{run_id}}}:budget"

    def holds(self, run_id: str) -> str:
        """Hash: reservation id -> its hold, or what became of it, as older versions
        kept them (the budget hash holds them now; this one is only read)."""
        return f"{self.prefix}:run:{{{run_id}}}:budget:holds"

    def expiry(self, run_id: str) -> str:
        """Sorted set: reservation id -> when its hold lapses (ms); settled ids stay
        until then."""
        return f"{self.prefix}:run:{{{run_id}}}:budget:expiry"

    def all(self, run_id: str) -> tuple[str, str, str]:
        """Every budget key of the run (to delete or expire it with the run)."""
        return self.budget(run_id), self.holds(run_id), self.expiry(run_id)
