"""How results are reported: each workload's target (reported, never asserted), whether
a row meets it, and the readable table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import cli_latency, v1_verification

__all__ = ["TARGETS", "render_table", "summary", "target_met"]


TARGETS = {
    "W1": ">= 3000 activities/s and >= 0.4x baseline",
    "W2": "overhead_ratio <= 1.15",
    "W3": "p50 <= 0.5 ms and p99 <= 1.0 ms",
    "W4": "completed, lost 0, recorded_twice 0, executed_twice <= 2, recovery <= 6 s",
    "W5": "overhead_ratio <= 1.2",
    "W6": "overhead_ratio <= 1.3",
    "W7": "retries_recorded == retries_expected (600 for N=1000)",
    "cli": cli_latency.TARGET,
}


def target_met(row: dict[str, Any]) -> bool | None:
    """Whether ``row`` meets its workload's target (``None``: no target)."""
    match row.get("workload"):
        case "W1":
            return bool(row["activities_per_s"] >= 3000 and row["ratio_to_baseline"] >= 0.4)
        case "W2":
            return bool(row["overhead_ratio"] <= 1.15)
        case "W3":
            return bool(row["p50_ms"] <= 0.5 and row["p99_ms"] <= 1.0)
        case "W4":
            return bool(
                row["completed"]
                and row["lost"] == 0
                and row["recorded_twice"] == 0
                and row["executed_twice"] <= 2
                and row["recovery_s"] <= 6
            )
        case "W5":
            return bool(row["overhead_ratio"] <= 1.2)
        case "W6":
            return bool(row["overhead_ratio"] <= 1.3)
        case "W7":
            return bool(row["retries_recorded"] == row["retries_expected"])
        case "V1":
            return v1_verification.target_met(row)
        case "cli":
            return cli_latency.target_met(row)
    return None


def summary(row: dict[str, Any]) -> str:
    """One readable line of results for the table."""
    match row.get("workload"):
        case _ if "error" in row:
            return f"ERROR: {row['error'].splitlines()[0]}"
        case "baseline":
            return (
                f"{row['activities_per_s']:,} tasks/s; sequential round p50 "
                f"{row['seq_p50_ms']} ms, p99 {row['seq_p99_ms']} ms"
            )
        case "W1":
            return (
                f"{row['activities_per_s']:,} activities/s = {row['ratio_to_baseline']}x "
                f"baseline ({row['baseline_activities_per_s']:,}/s)"
            )
        case "W2":
            return (
                f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
                f"= {row['overhead_ratio']}x"
            )
        case "W3":
            return f"step overhead p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
        case "W4":
            return (
                f"completed={row['completed']} lost={row['lost']} "
                f"recorded_twice={row['recorded_twice']} "
                f"executed_twice={row['executed_twice']} recovery {row['recovery_s']} s "
                f"(lease {row['lease_ttl_s']} s)"
            )
        case "W5":
            return (
                f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
                f"= {row['overhead_ratio']}x (SDK alone {row['sdk_overhead_ratio']}x, "
                f"as its README calls it {row['sdk_default_overhead_ratio']}x); "
                f"worker CPU {row['cpu_us_per_call']} us per call "
                f"(SDK alone {row['sdk_cpu_us_per_call']}, "
                f"README way {row['sdk_default_cpu_us_per_call']})"
            )
        case "W6":
            share = row["token_share"]
            return (
                f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
                f"= {row['overhead_ratio']}x; tokens: planning {share['planning']:.0%}, "
                f"verification {share['verification']:.0%}, integration "
                f"{share['integration']:.0%}; {row['redis_commands_per_activity']} Redis "
                f"commands per activity"
            )
        case "W7":
            return (
                f"{row['activities_per_s']:,} activities/s with {row['retries_recorded']} "
                f"retries recorded (expected {row['retries_expected']})"
            )
        case "V1":
            return (
                f"{row['stopped_before_integration']:.0%} of {row['defects']} defects stopped "
                f"before integration, {row['automatic_stopped_without_person']:.0%} of the "
                f"automatic ones without a person; {row['clean_accepted_without_person']:.0%} "
                f"clean accepted alone; {row['false_escalations']} false escalations; "
                f"{row['final_answers_with_defect']} final answers with a defect"
            )
        case "cli":
            return cli_latency.summary(row)
    return ""


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a plain-text table, with the targets underneath."""
    header = ("workload", "n", "seconds", "result", "target met")
    body = []
    for row in rows:
        met = row.get("target_met")
        body.append(
            (
                str(row.get("workload", "")),
                str(row.get("n", "")),
                str(row.get("seconds", "")),
                summary(row),
                "-" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    shown = [str(r.get("workload")) for r in rows if str(r.get("workload")) in TARGETS]
    if shown:
        lines.append("")
        lines.append("targets (reported, not asserted):")
        lines.extend(f"  {w}: {TARGETS[w]}" for w in shown)
    return "\n".join(lines)
