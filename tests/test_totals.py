"""The totals verifier: sum rows of markdown tables and JSON arrays, and total fields
next to their parts, against the sum of those parts."""

from __future__ import annotations

from typing import Any

import pytest

from taskloom.verifiers import Check, Tools, Totals, Verdict, VerifySpec, build
from taskloom.verifiers.errors import VerifierConfigError

pytestmark = pytest.mark.anyio

REGIONS = """Revenue by region, FY2024:

| Region | Revenue (EUR) | Orders | Growth | Share |
|:-------|-------------:|------:|------:|-----:|
| North  | 1,200,000 | 310 | 5.1% | 40% |
| South  | 1,000,000 | 275 | -2.0% | 33% |
| West   |   800,000 | 190 | 12.4% | 27% |
| **Total** | **{total}** | 775 | 3.9% | 100% |

Growth is year on year.
"""


async def verify(output: Any, **options: Any) -> Verdict:
    return await Totals(**options).verify(Check(output=output), Tools())


async def test_a_wrong_markdown_total_fails_naming_row_column_and_both_values() -> None:
    verdict = await verify(REGIONS.format(total="3,100,000"))
    assert verdict.status == "fail"
    assert verdict.evidence == [
        "markdown table 1 in the output, row 'Total', column 'Revenue (EUR)': "
        "states 3,100,000, its 3 parts add up to 3,000,000"
    ]
    assert "recompute each one" in verdict.feedback and verdict.evidence[0] in verdict.feedback


async def test_the_clean_twin_passes_and_rates_and_shares_are_not_summed() -> None:
    # Growth's total row holds a rate (3.9%, not 15.5%); Share's 100% is a sum.
    verdict = await verify(REGIONS.format(total="3,000,000"))
    assert verdict.status == "pass", verdict.evidence
    assert verdict.reasons == ["every total in 1 table(s) adds up"]
    assert (await verify("No table here; revenue was 3.1M in total.")).reasons == [
        "no totals found"
    ]


@pytest.mark.parametrize(
    "table",
    [
        # Parts rounded to one decimal need not add up to the rounded total exactly.
        "| Item | EUR m |\n|---|---|\n| A | 1.2 |\n| B | 3.4 |\n| C | 5.6 |\n| Total | 10.3 |",
        # Rounded shares: 33% + 33% + 33% is stated as 100%.
        "| Party | Share % |\n|---|---|\n| A | 33 |\n| B | 33 |\n| C | 33 |\n| Sum | 100 |",
        # Currency, thousands separators, negatives in parentheses, dashes as zero.
        "| Line | Amount |\n|---|---|\n| Sales | $12,500.00 |\n| Refunds | ($1,250.50) |\n"
        "| Fees | - |\n| Other | \u2212249.50 |\n| Total | $11,000.00 |",
        # European separators and a scale suffix.
        "| Posten | Betrag |\n|---|---|\n| A | 1.234.567,50 € |\n| B | 765.432,50 € |\n"
        "| Summe | 2.000.000,00 € |",
        "| Segment | Revenue |\n|---|---|\n| Cloud | 1.5M |\n| Ads | 750k |\n"
        "| Grand total | 2.25M |",
        # Subtotals per section, and a total of the sections.
        "| Cost | USD |\n|---|---|\n| Rent | 100 |\n| Power | 50 |\n| Subtotal | 150 |\n"
        "| Staff | 300 |\n| Travel | 20 |\n| Subtotal | 320 |\n| Total | 470 |",
        # Within the relative tolerance (0.5%).
        "| A | n |\n|---|---|\n| x | 100,000 |\n| y | 100,000 |\n| Total | 200,700 |",
    ],
)
async def test_totals_that_add_up_pass(table: str) -> None:
    verdict = await verify(table)
    assert verdict.status == "pass", verdict.evidence


@pytest.mark.parametrize(
    ("table", "evidence"),
    [
        (
            "| Team | Heads |\n|---|---|\n| A | 3 |\n| B | 4 |\n| Total | 8 |",
            "row 'Total', column 'Heads': states 8, its 2 parts add up to 7",
        ),
        (
            "| Cost | USD |\n|---|---|\n| Rent | 100 |\n| Power | 50 |\n| Subtotal | 160 |\n"
            "| Staff | 300 |\n| Total | 450 |",
            "row 'Subtotal', column 'USD': states 160, its 2 parts add up to 150",
        ),
        (
            "| Item | EUR m |\n|---|---|\n| A | 1.2 |\n| B | 3.4 |\n| Total | 4.9 |",
            "row 'Total', column 'EUR m': states 4.9, its 2 parts add up to 4.6",
        ),
        (
            "| Party | Share |\n|---|---|\n| A | 50% |\n| B | 40% |\n| Total | 100% |",
            "row 'Total', column 'Share': states 100%, its 2 parts add up to 90",
        ),
    ],
)
async def test_totals_that_do_not_add_up_fail(table: str, evidence: str) -> None:
    verdict = await verify(f"Intro.\n\n{table}\n\nEnd.")
    assert verdict.status == "fail"
    assert verdict.evidence == [f"markdown table 1 in the output, {evidence}"]


async def test_json_rows_with_a_total_row_and_total_fields_next_to_parts() -> None:
    rows = [
        {"region": "North", "revenue": 120.5, "orders": 3},
        {"region": "South", "revenue": 80, "orders": 4},
        {"region": "Total", "revenue": 210.5, "orders": 7},
    ]
    bad = await verify({"title": "Q3", "rows": rows})
    assert bad.evidence == [
        "the output, field 'rows', row 'Total', column 'revenue': "
        "states 210.5, its 2 parts add up to 200.5"
    ]
    rows[2]["revenue"] = 200.5
    assert (await verify({"title": "Q3", "rows": rows})).status == "pass"

    invoice: dict[str, Any] = {
        "lines": [{"item": "a", "amount": "€1,250.00"}, {"item": "b", "amount": "€250.00"}],
        "total_amount": "€1,600.00",
    }
    bad = await verify({"invoice": invoice})
    assert bad.evidence == [
        "the output, field 'invoice', field 'total_amount' of 'amount': "
        "states €1,600.00, its 2 parts add up to 1,500"
    ]
    invoice["total_amount"] = "€1,500.00"
    assert (await verify({"invoice": invoice})).status == "pass"
    assert (await verify({"by_quarter": {"q1": 1, "q2": 2}, "total": 4})).status == "fail"
    assert (await verify({"by_quarter": [1, 2, 3.5], "sum": 6.5})).status == "pass"


async def test_json_totals_it_cannot_attribute_are_left_alone() -> None:
    lines = [{"qty": 2, "price": 3.5}, {"qty": 1, "price": 10}]
    # Two numeric fields (total = qty x price), a total that counts the parts, two lists.
    assert (await verify({"lines": lines, "total": 17})).reasons == ["no totals found"]
    results = [{"id": "a", "score": 0.9}, {"id": "b", "score": 0.4}]
    assert (await verify({"results": results, "total": 2})).status == "pass"
    assert (await verify({"a": [1, 2], "b": [3, 4], "total": 99})).status == "pass"


async def test_json_in_text_and_in_fenced_blocks_is_read() -> None:
    text = '[{"k": "x", "v": 1}, {"k": "y", "v": 2}, {"k": "Total", "v": 4}]'
    assert (await verify(text)).evidence[0].startswith("the output's JSON, row 'Total'")
    fenced = f"Here it is:\n\n```json\n{text}\n```\n"
    assert (await verify(fenced)).evidence[0].startswith("JSON block 1 in the output, row")
    nested = {"report": REGIONS.format(total="3,100,000")}
    assert "markdown table 1 in field 'report'" in (await verify(nested)).evidence[0]


async def test_tolerance_is_an_option_and_the_spec_turns_totals_off() -> None:
    table = "| A | n |\n|---|---|\n| x | 1,000 |\n| y | 1,000 |\n| Total | 2,030 |"
    assert (await verify(table)).status == "fail"
    assert (await verify(table, tolerance=0.02)).status == "pass"
    with pytest.raises(VerifierConfigError, match="tolerance"):
        Totals(tolerance=1.5)
    assert not [v for v in build(VerifySpec(totals=False)) if isinstance(v, Totals)]
    assert [v for v in build(VerifySpec()) if isinstance(v, Totals)]
