"""Budget solvers: activation_memory_budget x solver x runtime estimator x partitioner knobs on reference models (harness/rows/cases/budget_solvers.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    run = check_cell(cell, goldens, record)
    for key, value in (run.info.get("budget_figures") or {}).items() if run is not None else ():
        record(f"budget_{key}", value)
    if run is not None and run.info.get("budget_figures"):
        print(f"{cell.id}: {run.info['budget_figures']}")
