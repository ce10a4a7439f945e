"""torch's activation-memory-budget knapsack solvers against an exhaustive reference (harness/core/knapsack.py).

Instances are drawn by hypothesis the way ``choose_saved_values_set`` poses them: ``memory`` are normalized sizes
(non-negative; ``_size_of`` / (max_act_size - min_act_size)), ``runtimes`` are ``estimate_runtime`` values (all ``1``
under "testing", integer ``max(flops, 1)`` under "flops", or positive floats), ``max_memory = max(budget, 0)``.
Capacities include the edges: 0, exactly the total, exactly one item's weight, and the float just below it.

What each solver promises, read off its code (torch/_functorch/_activation_checkpointing/knapsack.py, torch 2.13):

* every solver returns ``(objective, saved, recomputable)`` with ``saved`` and ``recomputable`` partitioning the item
  indices (``KnapsackEvaluator._validate_all_indexes_accounted_for_in_provided_output`` asserts exactly that);
* greedy: "Sort items based on the ratio of runtime to memory in descending order" and take an item only
  ``if total_memory + memory[i] <= max_memory``: feasible (up to float accumulation), no optimality promise;
* ilp: ``scipy.optimize.milp`` (HiGHS) on ``max r.x s.t. memory.x <= max_memory, x in {0,1}``: exact up to HiGHS'
  tolerances (MIP feasibility 1e-6, relative MIP gap 1e-4: scipy is passed no options, so HiGHS defaults apply);
* dp: "Quantized pseudopolynomial DP for 0-1 Knapsack" on ``round(m * S)``, ``round(max_memory * S)``, S = 10000,
  with a float32 table: optimal for the *quantized* instance up to float32 rounding of runtime sums; see
  :func:`test_dp_is_optimal_for_its_quantized_instance` for the bound this gives on the real instance;
* dp_knapsack_sliding_hirschberg: the same quantized DP with Hirschberg's split ("compute the same output as
  original dp_knapsack", pytorch#160914), so the same promises;
* dynamic_memory_budget_dp: ``dp_knapsack`` at the knee budget ``get_knee_point_memory_budget`` picks among
  ``min_mem_budget + i * (max_mem_budget - min_mem_budget) / 99`` with ``min_mem_budget = 0.001``: it saves at most
  what dp saves at that budget, which is ``<= max_memory`` whenever ``max_memory >= 0.001``.

Greedy's optimality gap (1 - greedy / optimum) is collected and printed as a table at the end of a serial run (and
written to reports/knapsack_greedy_gap.md), never asserted.

Hypothesis profiles: "knapsack-ci" (default; derandomized, fixed example counts, no example database, so CI is
deterministic) and "knapsack-deep" (random, 20x the examples); choose with KNAPSACK_PROFILE=knapsack-deep.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from harness.core.knapsack import SCALE, Solution, exhaustive, quantize, solve
from harness.rows.collect import knapsack_solvers

SOLVERS = knapsack_solvers()

settings.register_profile(
    "knapsack-ci", derandomize=True, database=None, deadline=None, max_examples=45, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "knapsack-deep", derandomize=False, database=None, deadline=None, max_examples=1200, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile(os.environ.get("KNAPSACK_PROFILE", "knapsack-ci"))
FEW = settings(PROFILE, max_examples=max(PROFILE.max_examples // 8, 6))  # the knee search runs dp 100 times
MORE = settings(PROFILE, max_examples=PROFILE.max_examples * 3)  # greedy + reference are cheap; a wider gap sample

MAX_ITEMS = 8  # exhaustive reference: 2**8 subsets in exact arithmetic
EPS64 = 2.0**-52
EPS32 = 2.0**-24
ILP_FEAS_TOL = 1e-6  # HiGHS mip_feasibility_tolerance default


# ---------------------------------------------------------------------------------------------------- strategies


@st.composite
def memories(draw, n):
    style = draw(st.sampled_from(["grid", "float", "equal", "tiny"]))
    if style == "grid":  # exact multiples of dp's quantum 1/S: quantization is exact
        return [k / SCALE for k in draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))]
    if style == "equal":
        return [draw(st.floats(1e-4, 1.0))] * n
    if style == "tiny":  # below half a quantum: dp rounds them to weight 0
        return draw(st.lists(st.floats(0.0, 1e-4), min_size=n, max_size=n))
    return draw(st.lists(st.floats(1e-6, 1.0), min_size=n, max_size=n))


@st.composite
def runtime_lists(draw, n):
    style = draw(st.sampled_from(["testing", "flops", "float"]))
    if style == "testing":  # estimate_runtime returns 1 for every node
        return [1.0] * n
    if style == "flops":  # max(counted_flops, 1)
        return [float(x) for x in draw(st.lists(st.integers(1, 10**7), min_size=n, max_size=n))]
    return draw(st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n))


@st.composite
def capacities(draw, memory):
    total = math.fsum(memory)
    item = draw(st.sampled_from(memory))
    return draw(st.sampled_from([
        0.0,
        total,
        item,
        math.nextafter(item, 0.0),  # just below an item's weight
        draw(st.floats(0.0, max(total, 1e-9))),
        draw(st.floats(0.0, 1.0)),  # the budget range
    ]))


@st.composite
def instances(draw, positive_memory=False):
    n = draw(st.integers(1, MAX_ITEMS))
    memory = draw(memories(n))
    if positive_memory:
        memory = [m if m > 0 else 1e-9 for m in memory]
    return memory, draw(runtime_lists(n)), draw(capacities(memory))


# ---------------------------------------------------------------------------------------------------- helpers


def _describe(memory, runtimes, cap):
    return f"memory={memory!r}, runtimes={runtimes!r}, max_memory={cap!r}"


def _fp_slack(memory, cap) -> float:
    """Float accumulation of up to n weights: each addition rounds by at most half an ulp of the running total."""
    return len(memory) * EPS64 * max(cap, math.fsum(memory), 1e-300)


def _check_partition(name, sol: Solution, n, inst):
    seen = sorted(sol.saved + sol.recomputed)
    assert seen == list(range(n)), (
        f"{name}: saved + recomputable must be a partition of range({n}); saw saved={sol.saved}, "
        f"recomputable={sol.recomputed} for {_describe(*inst)}"
    )


def _dp_real_slack(sol: Solution, cap) -> float:
    """dp's rounding slack in real units: each saved weight rounds down by <= 1/(2S), the capacity rounds up by <= 1/(2S)."""
    return (len(sol.saved) + 1) / (2 * SCALE)


def _tol32(runtimes) -> float:
    """dp's table is float32: the conversion and each of the <= n additions on a path round by <= 2**-24 relative."""
    return 2 * (len(runtimes) + 1) * EPS32 * math.fsum(runtimes)


GREEDY_GAPS: list[tuple[str, float, int]] = []  # (instance style, gap, n)


class _GapReport:
    def pytest_terminal_summary(self, terminalreporter):
        if GREEDY_GAPS:
            terminalreporter.write_sep("-", "greedy knapsack optimality gap (not asserted)")
            for line in gap_table():
                terminalreporter.write_line(line)


def gap_table() -> list[str]:
    rows = {}
    for style, gap, _ in GREEDY_GAPS:
        rows.setdefault(style, []).append(gap)
        rows.setdefault("all", []).append(gap)
    out = ["| runtimes | instances | optimal | mean gap | max gap |", "|---|---|---|---|---|"]
    for style, gaps in sorted(rows.items()):
        out.append(f"| {style} | {len(gaps)} | {sum(g <= 1e-12 for g in gaps)} | {sum(gaps) / len(gaps):.4f} | "
                   f"{max(gaps):.4f} |")
    return out


@pytest.fixture(scope="module", autouse=True)
def _greedy_gap_report(request):
    if not request.config.pluginmanager.has_plugin("knapsack-greedy-gap"):  # a module fixture may be set up again
        request.config.pluginmanager.register(_GapReport(), "knapsack-greedy-gap")
    yield
    if GREEDY_GAPS:
        out = Path(request.config.rootpath) / "reports" / "knapsack_greedy_gap.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text("\n".join(gap_table()) + "\n")


def _style(runtimes) -> str:
    if all(r == 1.0 for r in runtimes):
        return "testing (all 1)"
    return "flops (integers)" if all(float(r).is_integer() for r in runtimes) else "float"


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", knapsack_solvers(exact=True))
@PROFILE
@given(inst=instances())
def test_answer_partitions_the_items(name, inst):
    """Every solver's (saved, recomputable) is a partition of range(n): the partitioner turns the recomputable indices
    into ``dont_ban`` and KnapsackEvaluator asserts "All candidate nodes must be accounted for"."""
    memory, runtimes, cap = inst
    _check_partition(name, solve(name, memory, runtimes, cap), len(memory), inst)


@MORE
@given(inst=instances(positive_memory=True))
def test_greedy_is_feasible(inst):
    """greedy takes an item only ``if total_memory + memory[i] <= max_memory`` (float accumulation), so the exact
    memory of its saved set is at most max_memory plus the accumulation error (n half-ulps of the running total).
    Its optimality gap against the exhaustive optimum is recorded, not asserted (a ratio heuristic).
    Weights are positive here: the sort key ``runtimes[i] / memory[i]`` divides by the weight
    (see test_greedy_zero_weight_item)."""
    memory, runtimes, cap = inst
    sol = solve("greedy", memory, runtimes, cap)
    _check_partition("greedy", sol, len(memory), inst)
    used = sol.memory(memory)
    assert used <= Fraction(cap) + Fraction(_fp_slack(memory, cap)), (
        f"greedy: expected saved memory <= max_memory={cap!r}, saw {float(used)!r} (saved={sol.saved}) for "
        f"{_describe(*inst)}"
    )
    best = exhaustive(memory, runtimes, cap)
    got = float(sol.runtime(runtimes))
    gap = 0.0 if best.objective == 0 else max(0.0, 1 - got / best.objective)
    GREEDY_GAPS.append((_style(runtimes), gap, len(memory)))


@PROFILE
@given(inst=instances(positive_memory=True))
@example(inst=([0.5, 0.45, 0.45], [6.0, 5.0, 5.0], 0.9))  # by ratio: item 0 (12) first, then 1 and 2 no longer fit
def test_greedy_takes_items_by_descending_ratio(inst):
    """greedy_knapsack's rule, its own comment in torch/_functorch/_activation_checkpointing/knapsack.py: "Sort items
    based on the ratio of runtime to memory in descending order", then take each item ``if total_memory + memory[i]
    <= max_memory``.  So its saved list is exactly that first-fit walk in descending ratio order (ties in index order:
    Python's sort is stable), in the order taken; an ascending sort, or a walk that skips a fitting item, differs."""
    memory, runtimes, cap = inst
    order = sorted(range(len(memory)), key=lambda i: runtimes[i] / memory[i], reverse=True)
    expected, used = [], 0.0
    for i in order:
        if used + memory[i] <= cap:
            used += memory[i]
            expected.append(i)
    sol = solve("greedy", memory, runtimes, cap)
    assert list(sol.saved) == expected, (
        f"greedy: expected the items that fit in descending runtime/memory order {expected} (order {order}), saw "
        f"saved={list(sol.saved)} for {_describe(*inst)}"
    )


@pytest.mark.parametrize("name", [s for s in SOLVERS if s != "dynamic_memory_budget_dp"])  # (that one reads the graph)
def test_config_selects_the_solver(name):
    """torch/_functorch/config.py: ``activation_memory_budget_solver`` "controls the solver used for the 0-1 knapsack.
    By default we use a quantized DP solution ("dp"). The other approaches are a "greedy", an "ilp" [...] and
    "dp_knapsack_sliding_hirschberg"".  The partitioner's dispatch (``partitioners._optimize_runtime_with_given_memory``)
    under each name must return that solver's answer, on an instance where they differ: greedy (descending
    runtime/memory) takes item 0 and then fits neither other; the exact solvers take items 1 and 2 (runtime 10 > 6)."""
    from torch._functorch import config, partitioners

    memory, runtimes, cap = [0.5, 0.45, 0.45], [6.0, 5.0, 5.0], 0.9
    with config.patch(activation_memory_budget_solver=name):
        _, saved, _ = partitioners._optimize_runtime_with_given_memory(None, memory, runtimes, cap, None, [])
    expected = [0] if name == "greedy" else [1, 2]
    own = sorted(solve(name, memory, runtimes, cap).saved)
    assert own == expected, f"{name} called directly: expected saved items {expected}, saw {own}"
    assert sorted(saved) == expected, (
        f"activation_memory_budget_solver={name!r}: expected the partitioner's knapsack to save {expected} (the "
        f"{name} solver's answer), saw {sorted(saved)}")


def test_runtime_estimator_flops_counts_flops():
    """The knapsack's ``runtimes`` (``partitioners.estimate_runtime``) follow torch/_functorch/config.py's
    ``activation_memory_budget_runtime_estimator``: ""flops": Bases it off of the flop count provided by
    torch.utils.flop_counter", ""testing": Returns 1 for everything".  An mm of (16, 256) @ (256, 64) counts
    2 * 16 * 256 * 64 FLOPs under "flops" and 1 under "testing"."""
    from torch._functorch import config, partitioners
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.utils.flop_counter import FlopCounterMode

    a, b = torch.randn(16, 256), torch.randn(256, 64)
    with FlopCounterMode(display=False) as counter:
        torch.mm(a, b)
    assert counter.get_total_flops() == 2 * 16 * 256 * 64, (
        f"expected torch.utils.flop_counter to count 2*16*256*64 = {2 * 16 * 256 * 64} FLOPs for the mm, saw "
        f"{counter.get_total_flops()}")
    gm = make_fx(torch.mm, tracing_mode="fake")(a, b)
    node = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.mm.default)
    seen = {}
    for estimator in ("flops", "testing"):
        with config.patch(activation_memory_budget_runtime_estimator=estimator):
            seen[estimator] = partitioners.estimate_runtime(node)
    expected = {"flops": counter.get_total_flops(), "testing": 1}
    assert seen == expected, f"expected estimate_runtime of the mm node per estimator {expected}, saw {seen}"


def test_greedy_zero_weight_item():
    """A zero-size candidate (``_size_of`` of a tensor with numel 0 is 0) makes greedy's sort key
    ``runtimes[i] / memory[i]`` divide by zero.  Documented behaviour of torch 2.13's greedy_knapsack, pinned here so
    a change is noticed; the partitioner only reaches it with an empty tensor among the recomputable banned nodes."""
    with pytest.raises(ZeroDivisionError):
        solve("greedy", [0.0, 0.5], [1.0, 1.0], 0.5)


@pytest.mark.skipif("ilp" not in SOLVERS, reason="ilp_knapsack needs scipy (scipy.optimize.milp)")
@PROFILE
@given(inst=instances())
@example(inst=([1e-06], [1.0], 0.0))  # HiGHS saves a 1e-6 item at capacity 0: within its 1e-6 tolerance
def test_ilp_is_feasible_and_optimal(inst):
    """ilp_knapsack solves the exact 0/1 program with HiGHS; the answer may violate the constraint by HiGHS'
    ``mip_feasibility_tolerance`` (1e-6, absolute on the row: a normalized weight below 1e-6 is free to it) and may
    stop at its relative MIP gap (1e-4).  So: saved memory <= max_memory + 1e-6 (+ float slack), and saved runtime >= (1 - 1e-4) * exhaustive optimum.  The reported
    objective (``-res.fun``) must be the runtime of the reported saved set, which its code builds with ``x == 1``."""
    memory, runtimes, cap = inst
    sol = solve("ilp", memory, runtimes, cap)
    _check_partition("ilp", sol, len(memory), inst)
    used = sol.memory(memory)
    assert used <= Fraction(cap) + Fraction(ILP_FEAS_TOL + _fp_slack(memory, cap)), (
        f"ilp: expected saved memory <= max_memory={cap!r} (+{ILP_FEAS_TOL}), saw {float(used)!r} (saved={sol.saved}) for "
        f"{_describe(*inst)}"
    )
    best = exhaustive(memory, runtimes, cap)
    got = float(sol.runtime(runtimes))
    assert got >= (1 - 1e-4) * best.objective - 1e-9, (
        f"ilp: expected the saved runtime >= (1 - 1e-4) * optimum {best.objective!r} (optimal set {best.saved}), "
        f"saw {got!r} (saved={sol.saved}) for {_describe(*inst)}"
    )
    assert math.isclose(sol.objective, got, rel_tol=1e-6, abs_tol=1e-9), (
        f"ilp: expected the reported objective to be the runtime of the saved set {got!r}, saw {sol.objective!r} "
        f"(saved={sol.saved}) for {_describe(*inst)}"
    )


def _check_quantized(name, inst, *, check_objective=True):
    memory, runtimes, cap = inst
    sol = solve(name, memory, runtimes, cap)
    _check_partition(name, sol, len(memory), inst)
    q, Q = quantize(memory, cap)
    q_used = sum(q[i] for i in sol.saved)
    assert q_used <= Q, (
        f"{name}: expected quantized saved memory <= round(max_memory * {SCALE}) = {Q}, saw {q_used} "
        f"(saved={sol.saved}, quantized weights {q}) for {_describe(*inst)}"
    )
    used = sol.memory(memory)
    bound = Fraction(cap) + Fraction(_dp_real_slack(sol, cap) + _fp_slack(memory, cap))
    assert used <= bound, (
        f"{name}: expected saved memory <= max_memory + (k+1)/(2S) = {float(bound)!r}, saw {float(used)!r} "
        f"(saved={sol.saved}) for {_describe(*inst)}"
    )
    best_q = exhaustive(memory, runtimes, Q, weights=q)
    got = float(sol.runtime(runtimes))
    tol = _tol32(runtimes)
    assert got >= best_q.objective - tol, (
        f"{name}: expected the saved runtime >= the quantized optimum {best_q.objective!r} (set {best_q.saved}) "
        f"- {tol:.3g}, saw {got!r} (saved={sol.saved}) for {_describe(*inst)}"
    )
    if check_objective:
        assert abs(sol.objective - got) <= tol, (
            f"{name}: expected the reported objective within {tol:.3g} of the saved set's runtime {got!r}, saw "
            f"{sol.objective!r} for {_describe(*inst)}"
        )
    return sol


@PROFILE
@given(inst=instances())
def test_dp_is_optimal_for_its_quantized_instance(inst):
    """dp_knapsack quantizes ``q_i = round(m_i * S)``, ``Q = round(max_memory * S)`` (S = 10000), fills a float32
    table ``dp[i, j] = max(dp[i-1, j], dp[i-1, j-q_i] + r_i)`` and backtracks on ``dp[i][j] != dp[i-1][j]`` (which
    is consistent with the max that built the entry).  Hence:

    * feasible for the quantized instance, exactly: sum(q[saved]) <= Q;
    * on the real instance: sum(m[saved]) <= max_memory + (k + 1) / (2S) for k saved items (each saved weight
      rounds down by at most 1/(2S), the capacity up by at most 1/(2S)); weights below 1/(2S) round to 0 and are
      always saved;
    * optimal for the quantized instance up to float32: sum(r[saved]) >= OPT_q - 2 (n+1) 2**-24 sum(r), and the
      reported objective (the float32 table entry) is within the same tolerance of sum(r[saved]);
    * consequently, for the real instance, OPT(max_memory - (n+1)/(2S)) - tol <= dp <= OPT(max_memory + (n+1)/(2S))
      + tol (checked in test_dp_sandwich_on_the_real_instance).
    """
    _check_quantized("dp", inst)


@PROFILE
@given(inst=instances())
def test_dp_sandwich_on_the_real_instance(inst):
    """The real-valued consequence of dp's quantization (see test_dp_is_optimal_for_its_quantized_instance): a set of
    real weight <= max_memory - (n+1)/(2S) has quantized weight <= Q, and a set of quantized weight <= Q has real
    weight <= max_memory + (n+1)/(2S), so dp's saved runtime lies between the exhaustive optima at those two
    capacities (up to float32 tolerance)."""
    memory, runtimes, cap = inst
    sol = solve("dp", memory, runtimes, cap)
    got = float(sol.runtime(runtimes))
    slack = (len(memory) + 1) / (2 * SCALE)
    tol = _tol32(runtimes)
    lo = exhaustive(memory, runtimes, max(cap - slack, 0.0)).objective if cap - slack >= 0 else 0.0
    hi = exhaustive(memory, runtimes, cap + slack).objective
    assert lo - tol <= got <= hi + tol, (
        f"dp: expected OPT(max_memory - {slack}) = {lo!r} <= saved runtime <= OPT(max_memory + {slack}) = {hi!r} "
        f"(tol {tol:.3g}), saw {got!r} (saved={sol.saved}) for {_describe(*inst)}"
    )


@pytest.mark.skipif("dp_knapsack_sliding_hirschberg" not in SOLVERS, reason="this torch has no hirschberg solver")
@PROFILE
@given(inst=instances())
@example(inst=([1e-4, 1e-4], [1.0, 2.0], 1e-4))  # the minimal case: fails whatever hypothesis generates
def test_hirschberg_is_feasible_for_its_quantized_instance(inst):
    """dp_knapsack_sliding_hirschberg claims the same output as dp_knapsack (same S, same rounding), so the same
    quantized feasibility and optimality bounds as test_dp_is_optimal_for_its_quantized_instance.  Its reported
    objective is ``sum(runtime[i] for i in saved_items)`` (exact, float64)."""
    _check_quantized("dp_knapsack_sliding_hirschberg", inst)


@pytest.mark.skipif("dp_knapsack_sliding_hirschberg" not in SOLVERS, reason="this torch has no hirschberg solver")
@PROFILE
@given(inst=instances())
def test_hirschberg_reaches_the_quantized_optimum(inst):
    """The half of hirschberg's promise that holds on torch 2.13: the split point maximises left(k) + right(Q - k)
    over the two halves' DP profiles, so the saved runtime is at least the quantized optimum (its capacity excess,
    pytorch#197871, can only add items), and the reported objective is the saved set's runtime."""
    memory, runtimes, cap = inst
    sol = solve("dp_knapsack_sliding_hirschberg", memory, runtimes, cap)
    _check_partition("dp_knapsack_sliding_hirschberg", sol, len(memory), inst)
    q, Q = quantize(memory, cap)
    best_q = exhaustive(memory, runtimes, Q, weights=q)
    got = float(sol.runtime(runtimes))
    assert got >= best_q.objective - _tol32(runtimes), (
        f"hirschberg: expected saved runtime >= quantized optimum {best_q.objective!r} (set {best_q.saved}), saw "
        f"{got!r} (saved={sol.saved}) for {_describe(*inst)}"
    )
    assert math.isclose(sol.objective, got, rel_tol=1e-12, abs_tol=0.0), (
        f"hirschberg: expected objective == runtime of the saved set {got!r}, saw {sol.objective!r}"
    )


@pytest.mark.skipif("dp_knapsack_sliding_hirschberg" not in SOLVERS, reason="this torch has no hirschberg solver")
def test_hirschberg_minimal_case():
    """The minimal case of pytorch#197871: two items of one quantum (1/S) each, capacity one quantum; the quantized
    optimum (and dp_knapsack) saves only item 1 (runtime 2.0).  torch 2.13's hirschberg saves both (2 quanta)."""
    memory, runtimes, cap = [1e-4, 1e-4], [1.0, 2.0], 1e-4
    expected = solve("dp", memory, runtimes, cap)
    assert expected.saved == (1,), f"dp: expected saved=(1,), saw {expected.saved}"
    sol = solve("dp_knapsack_sliding_hirschberg", memory, runtimes, cap)
    assert sol.saved == (1,), f"hirschberg: expected saved=(1,) like dp (1 quantum of capacity), saw {sol.saved}"


@pytest.mark.skipif("dynamic_memory_budget_dp" not in SOLVERS, reason="needs networkx")
@FEW
@given(inst=instances(positive_memory=True))
def test_dynamic_budget_dp_is_feasible_above_its_min_budget(inst):
    """dynamic_memory_budget_dp runs dp_knapsack at a knee budget chosen from ``min_mem_budget + i * (max_mem_budget -
    min_mem_budget) / (iterations - 1)`` (min 0.001, max = max_memory, 100 steps) or ``max_mem_budget`` when the
    runtime or memory range is 0; for max_memory >= 0.001 that is <= max_memory, so dp's real-instance bound
    (max_memory + (k+1)/(2S)) holds.  Below 0.001 the candidate budgets run from 0.001 *down* to max_memory and the
    knee may exceed the budget (see test_dynamic_budget_dp_below_its_min_budget)."""
    memory, runtimes, cap = inst
    cap = min(cap, 1.0)  # the partitioner passes max(memory_budget, 0) with memory_budget in [0, 1]
    assume(cap >= 0.001)
    sol = solve("dynamic_memory_budget_dp", memory, runtimes, cap)
    _check_partition("dynamic_memory_budget_dp", sol, len(memory), inst)
    used = sol.memory(memory)
    bound = Fraction(cap) + Fraction(_dp_real_slack(sol, cap) + _fp_slack(memory, cap))
    assert used <= bound, (
        f"dynamic_memory_budget_dp: expected saved memory <= {float(bound)!r}, saw {float(used)!r} "
        f"(saved={sol.saved}) for {_describe(*inst)}"
    )


@pytest.mark.skipif("dynamic_memory_budget_dp" not in SOLVERS, reason="needs networkx")
def test_dynamic_budget_dp_below_its_min_budget():
    """The partitioner's promise ("choosing the fastest option that saves less activations than the memory budget",
    config.py) for a budget in (0, 0.001): ``max(memory_budget, 0)`` reaches the solver (budget 0 itself returns
    ``node_info.inputs`` before), and with max_memory = 0.0005 the knee is 0.001, so the 0.001 item is saved."""
    memory, runtimes, cap = [0.001, 0.5], [10.0, 1.0], 0.0005
    sol = solve("dynamic_memory_budget_dp", memory, runtimes, cap)
    used = sol.memory(memory)
    bound = Fraction(cap) + Fraction(_dp_real_slack(sol, cap))
    assert used <= bound, (
        f"dynamic_memory_budget_dp: expected saved memory <= max_memory + (k+1)/(2S) = {float(bound)!r}, saw "
        f"{float(used)!r} (saved={sol.saved}) for {_describe(memory, runtimes, cap)}"
    )
