"""Budget sweep: random ops at every budget of the sweep, on models whose saved set moves with the budget (harness/rows/cases/budget_sweep.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    run = check_cell(cell, goldens, record)
    for budget, row in ((run.info.get("sweep_figures") or {}) if run is not None else {}).items():
        record(f"sweep_{budget}", row)
        print(f"{cell.id}: budget {budget}: {row}")
