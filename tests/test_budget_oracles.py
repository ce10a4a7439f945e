"""The budget_solvers oracles on hand-made inputs: uniqueness of a knapsack optimum and the feasibility bound."""

from harness.rows.cases.budget_solvers import Figures, feasibility
from harness.core.knapsack import budget_slack, unique_optimum


def test_unique_optimum_found():
    # items (memory, runtime): (0.5, 3), (0.4, 2), (0.3, 2); capacity 0.75: {1, 2} (runtime 4) beats {0} (3)
    assert unique_optimum([0.5, 0.4, 0.3], [3, 2, 2], 0.75) == (1, 2)


def test_tie_is_not_unique():
    assert unique_optimum([0.5, 0.5], [1, 1], 0.6) is None


def test_capacity_tolerance_decides_is_not_unique():
    # {0} fits only with HiGHS' 1e-6 feasibility tolerance: ilp may take it, dp may not
    assert unique_optimum([0.5000005, 0.2], [5, 1], 0.5) is None


def test_quantization_decides_is_not_unique():
    # dp rounds 0.50004 to 0.5000 (5000/10000): on dp's weights item 0 fits, on the exact ones it does not
    assert unique_optimum([0.50004, 0.1], [5, 1], 0.5) is None


def test_too_many_items_not_decided():
    assert unique_optimum([0.01] * 17, [1] * 17, 0.5) is None


def _f(budget, saved, n=3, must=0):
    return Figures(budget, saved, 0, 0, must, 0, n)


def test_feasibility_bound_and_floor():
    lo, hi = _f(0.0, 100), _f(1.0, 200)
    assert feasibility(_f(0.5, 150), lo, hi, "greedy")[0] == "yes"
    assert feasibility(_f(0.5, 151), lo, hi, "greedy")[0] == "NO"
    assert feasibility(_f(0.5, 150 + 50 * budget_slack("dp", 3)), lo, hi, "dp")[0] == "yes"
    assert feasibility(_f(0.1, 160, n=0, must=60), lo, hi, "dp")[0] == "floor"
    assert feasibility(_f(0.1, 161, n=0, must=60), lo, hi, "dp")[0] == "NO"
    assert feasibility(_f(1.0, 999), lo, hi, "dp")[0] == "-"
