"""How results are reported: each workload's target (reported, never asserted), whether
a row meets it, and the readable table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import cli_latency, v1_verification

__all__ = ["TARGETS", "render_table", "summary", "target_met"]


TARGETS = {
    "W1": ">= 3000 activities/s and >= 0.4x baseline",
    "W2": "overhead_ratio <= 1.15",
    "W3": "p50 <= 0.5 ms and p99 <= 1.0 ms",
    "W4": (
        "completed, lost 0, recorded_twice 0, executed_twice <= 2, recovery <= 6 s and "
        "within 0.5 s of the raw loop's"
    ),
    "W5": "ratio_to_sdk <= 1.1 and own_cpu_ratio <= 0.5",
    "W6": "overhead_ratio <= 1.15 and redis_commands_per_activity <= 40",
    "W7": "retries_recorded == retries_expected (600 for N=1000)",
    "cold_start": "cold_start_s <= 0.3 s",
    "W8": "used_memory_end within 10% of the start, keys_left == 0",
    "soak": "memory flat (within 10%) after the first retention period, keys_left == 0",
    "cli": cli_latency.TARGET,
}


def target_met(row: dict[str, Any]) -> bool | None:
    """Whether ``row`` meets its workload's target (``None``: no target)."""
    met = _TARGET_MET.get(str(row.get("workload")))
    return None if met is None else met(row)


def _met_w1(row: dict[str, Any]) -> bool:
    return bool(row["activities_per_s"] >= 3000 and row["ratio_to_baseline"] >= 0.4)


def _met_w2(row: dict[str, Any]) -> bool:
    return bool(row["overhead_ratio"] <= 1.15)


def _met_w3(row: dict[str, Any]) -> bool:
    return bool(row["p50_ms"] <= 0.5 and row["p99_ms"] <= 1.0)


def _met_w4(row: dict[str, Any]) -> bool:
    return bool(
        row["completed"]
        and row["lost"] == 0
        and row["recorded_twice"] == 0
        and row["executed_twice"] <= 2
        and row["recovery_s"] <= 6
        and row.get("recovery_over_raw_s") is not None
        and row["recovery_over_raw_s"] <= 0.5
    )


def _met_w5(row: dict[str, Any]) -> bool:
    return bool(row["ratio_to_sdk"] <= 1.1 and row["own_cpu_ratio"] <= 0.5)


def _met_w6(row: dict[str, Any]) -> bool:
    return bool(row["overhead_ratio"] <= 1.15 and row["redis_commands_per_activity"] <= 40)


def _met_w7(row: dict[str, Any]) -> bool:
    return bool(row["retries_recorded"] == row["retries_expected"])


def _met_cold_start(row: dict[str, Any]) -> bool:
    return bool(row["cold_start_s"] <= 0.3)


def _met_w8(row: dict[str, Any]) -> bool:
    return bool(row["end_within_10pct"] and row["keys_left"] == 0)


def _met_soak(row: dict[str, Any]) -> bool:
    return bool(row["memory_flat"] and row["keys_left"] == 0)


def _met_v1(row: dict[str, Any]) -> bool:
    return v1_verification.target_met(row)


def _met_cli(row: dict[str, Any]) -> bool:
    return cli_latency.target_met(row)


_TARGET_MET: dict[str, Callable[[dict[str, Any]], bool]] = {
    "W1": _met_w1,
    "W2": _met_w2,
    "W3": _met_w3,
    "W4": _met_w4,
    "W5": _met_w5,
    "W6": _met_w6,
    "W7": _met_w7,
    "cold_start": _met_cold_start,
    "W8": _met_w8,
    "soak": _met_soak,
    "V1": _met_v1,
    "V1H": _met_v1,
    "cli": _met_cli,
}


def summary(row: dict[str, Any]) -> str:
    """One readable line of results for the table."""
    if "error" in row:
        return f"ERROR: {row['error'].splitlines()[0]}"
    line = _SUMMARIES.get(str(row.get("workload")))
    return "" if line is None else line(row)


def _baseline(row: dict[str, Any]) -> str:
    return (
        f"{row['activities_per_s']:,} tasks/s; sequential round p50 "
        f"{row['seq_p50_ms']} ms, p99 {row['seq_p99_ms']} ms"
    )


def _w1(row: dict[str, Any]) -> str:
    return (
        f"{row['activities_per_s']:,} activities/s = {row['ratio_to_baseline']}x "
        f"baseline ({row['baseline_activities_per_s']:,}/s)"
    )


def _w2(row: dict[str, Any]) -> str:
    return f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s = {row['overhead_ratio']}x"


def _w3(row: dict[str, Any]) -> str:
    return f"step overhead p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"


def _w4(row: dict[str, Any]) -> str:
    return (
        f"completed={row['completed']} lost={row['lost']} "
        f"recorded_twice={row['recorded_twice']} "
        f"executed_twice={row['executed_twice']} recovery {row['recovery_s']} s "
        f"(lease {row['lease_ttl_s']} s; raw loop {row.get('raw_recovery_s')} s, "
        f"+{row.get('recovery_over_raw_s')} s)"
    )


def _w5(row: dict[str, Any]) -> str:
    return (
        f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
        f"= {row['overhead_ratio']}x (SDK alone {row['sdk_overhead_ratio']}x, "
        f"as its README calls it {row['sdk_default_overhead_ratio']}x); "
        f"worker CPU {row['cpu_us_per_call']} us per call "
        f"(SDK alone {row['sdk_cpu_us_per_call']}, "
        f"README way {row['sdk_default_cpu_us_per_call']}); two workers of half the "
        f"slots {row['two_workers_overhead_ratio']}x"
    )


def _w6(row: dict[str, Any]) -> str:
    share = row["token_share"]
    return (
        f"makespan {row['seconds']} s vs ideal {row['ideal_s']} s "
        f"= {row['overhead_ratio']}x (the SDK alone, same requests: "
        f"{row['sdk_overhead_ratio']}x; taskloom over it {row['ratio_to_sdk']}x); "
        f"tokens: planning {share['planning']:.0%}, "
        f"verification {share['verification']:.0%}, integration "
        f"{share['integration']:.0%}; {row['redis_commands_per_activity']} Redis "
        f"commands per activity"
    )


def _w7(row: dict[str, Any]) -> str:
    return (
        f"{row['activities_per_s']:,} activities/s with {row['retries_recorded']} "
        f"retries recorded (expected {row['retries_expected']})"
    )


def _cold_start(row: dict[str, Any]) -> str:
    return (
        f"launch to first activity {row['cold_start_s']} s (plain engine code "
        f"{row['cold_start_plain_s']} s; slowest {row['cold_start_max_s']} s; "
        f"compiling from source {row.get('cold_start_nocache_s')} s; a raw redis-py "
        f"worker {row.get('cold_start_raw_s')} s; without the OpenTelemetry SDK "
        f"{row.get('cold_start_without_otel_sdk_s')} s, the raw worker "
        f"{row.get('cold_start_raw_without_otel_sdk_s')} s), median of {row['launches']}"
    )


def _w8(row: dict[str, Any]) -> str:
    return (
        f"{row['runs']} runs, {row['runs_per_s']}/s, p50 {row['p50_ms']} ms, p99 "
        f"{row['p99_ms']} ms; used_memory {row['used_memory_start_mib']} -> peak "
        f"{row['used_memory_peak_mib']} -> {row['used_memory_end_mib']} MiB after "
        f"expiry ({row['drain_s']} s); {row['keys_left']} run keys left"
    )


def _v1(row: dict[str, Any]) -> str:
    return (
        f"{row['stopped_before_integration']:.0%} of {row['defects']} defects stopped "
        f"before integration, {row['automatic_stopped_without_person']:.0%} of the "
        f"automatic ones without a person; {row['clean_accepted_without_person']:.0%} "
        f"clean accepted alone; {row['false_escalations']} false escalations; "
        f"{row['final_answers_with_defect']} final answers with a defect"
    )


def _s1(row: dict[str, Any]) -> str:
    return (
        f"W1 best {row['W1_1m_best_per_s']}/s on 1 master, {row['W1_3m_best_per_s']}/s on 3 "
        f"(busiest master {row['W1_3m_busiest_share']:.0%} of commands); many runs best "
        f"{row['spread_1m_best_per_s']}/s on 1, {row['spread_3m_best_per_s']}/s on 3 "
        f"(busiest {row['spread_3m_busiest_share']:.0%}); {len(row['rows'])} rows in --json"
    )


def _cli(row: dict[str, Any]) -> str:
    return cli_latency.summary(row)


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "baseline": _baseline,
    "W1": _w1,
    "W2": _w2,
    "W3": _w3,
    "W4": _w4,
    "W5": _w5,
    "W6": _w6,
    "W7": _w7,
    "cold_start": _cold_start,
    "W8": _w8,
    "soak": _w8,
    "S1": _s1,
    "V1": _v1,
    "V1H": _v1,
    "cli": _cli,
}


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
