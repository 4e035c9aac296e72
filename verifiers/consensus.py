"""Consensus: several judge samples (or several models) vote."""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from .base import Check, Tools, Verifier, guarded
from .errors import VerifierConfigError
from .judge import Judge
from .verdict import Status, Verdict

__all__ = ["Consensus"]

SAMPLE_SHARE = 0.9
"""Of the verifier's timeout, what one sample may take."""


class Consensus(Verifier):
    """The judge, asked several times at once: ``samples`` times with one model, or once
    per model in ``models``; the samples vote.

    At least ``quorum`` (default: a majority of the samples asked) passing votes pass,
    at least ``quorum`` failing votes fail (with the failing samples' feedback),
    anything else is uncertain. A sample that errors casts no vote, so it makes a
    quorum harder to reach; if every sample errors the verdict is ``"error"``. Tokens
    and cost are summed over the samples.

    Sampling one model repeatedly needs some randomness, so ``temperature`` defaults to
    0.7 for ``samples`` and to 0 for ``models``.

    Example::

        Consensus("The answer is correct and complete.",
                  models=("openai:gpt-4.1-mini", "anthropic:claude-sonnet-4-5"))
    """

    def __init__(
        self,
        rubric: str,
        *,
        threshold: float = 0.7,
        samples: int = 3,
        models: Iterable[str] = (),
        quorum: int | None = None,
        uncertain_band: float = 0.2,
        model: str | None = None,
        name: str = "consensus",
        template: str = "judge.j2",
        temperature: float | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.models = tuple(models)
        size = len(self.models) or samples
        if size < 1:
            raise VerifierConfigError(f"{name}: samples must be >= 1, got {samples}")
        self.quorum = size // 2 + 1 if quorum is None else quorum
        if not 1 <= self.quorum <= size:
            raise VerifierConfigError(
                f"{name}: quorum must be between 1 and the {size} samples, got {quorum}"
            )
        self.samples = size
        self.model = model
        self.name = name
        self.timeout = timeout
        if temperature is None:
            temperature = 0.0 if self.models else 0.7
        self.judge = Judge(
            rubric,
            threshold=threshold,
            uncertain_band=uncertain_band,
            name=name,
            template=template,
            temperature=temperature,
            timeout=timeout,
        )

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Ask every sample concurrently and count the votes."""
        models: list[str | None] = [*self.models] or [self.model or tools.model] * self.samples
        results: list[Verdict | str] = [""] * len(models)

        async def sample(i: int, model: str | None) -> None:
            # Each sample under a deadline of its own, inside the verifier's: one that
            # hangs casts no vote instead of losing every other sample's.
            verdict, broke = await guarded(
                self.timeout * SAMPLE_SHARE, lambda: self.judge.judge(check, tools, model=model)
            )
            results[i] = verdict if verdict is not None else broke

        async with anyio.create_task_group() as group:
            for i, model in enumerate(models):
                group.start_soon(sample, i, model)
        return self._tally(models, results)

    def _tally(self, models: list[str | None], results: list[Verdict | str]) -> Verdict:
        votes = [r for r in results if isinstance(r, Verdict)]
        lines = [_line(i, m, r) for i, (m, r) in enumerate(zip(models, results, strict=True))]
        if not votes:
            return Verdict(verifier=self.name, status="error", reasons=lines)
        count = {s: sum(v.status == s for v in votes) for s in ("pass", "fail", "uncertain")}
        status: Status = "uncertain"
        if count["pass"] >= self.quorum and count["fail"] < self.quorum:
            status = "pass"
        elif count["fail"] >= self.quorum and count["pass"] < self.quorum:
            status = "fail"
        summary = (
            f"{count['pass']} of {len(models)} samples passed, {count['fail']} failed, "
            f"{count['uncertain']} uncertain, {len(models) - len(votes)} errored "
            f"(quorum {self.quorum})"
        )
        wanted = {"fail"} if status == "fail" else {"fail", "uncertain"}
        feedback = (
            "" if status == "pass" else _unique(v.feedback for v in votes if v.status in wanted)
        )
        scores = [v.score for v in votes if v.score is not None]
        return Verdict(
            verifier=self.name,
            status=status,
            score=sum(scores) / len(scores) if scores else None,
            reasons=[summary, *lines],
            evidence=list(dict.fromkeys(e for v in votes for e in v.evidence)),
            feedback=feedback,
            input_tokens=sum(v.input_tokens for v in votes),
            output_tokens=sum(v.output_tokens for v in votes),
            cost_usd=sum(v.cost_usd for v in votes),
            endpoints=list(dict.fromkeys(e for v in votes for e in v.endpoints)),
        )


def _line(i: int, model: str | None, result: Verdict | str) -> str:
    who = f"sample {i + 1} ({model or 'default model'})"
    if isinstance(result, str):
        return f"{who}: error: {result}"
    score = f" {result.score:.2f}" if result.score is not None else ""
    return f"{who}: {result.status}{score}"


def _unique(texts: Iterable[str]) -> str:
    return "\n".join(dict.fromkeys(t.strip() for t in texts if t.strip()))
