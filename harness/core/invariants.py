"""Semantic invariants of activation checkpointing, checked mechanically on every recorded cell.

Each invariant is ``f(run) -> number of checks`` and raises AssertionError naming the cell, the node and its policy.
Each docstring states what it claims and the documented rule (torch's docstrings, config comments or partitioner
code) that makes it true.  An invariant that cannot run on a run (graphs that cannot be analysed: another runner,
inference only, no backward; nothing it applies to; symbolic sizes; a baseline the run lacks) raises
:class:`~harness.core.checks.NotRun` with the reason: reported as not run, never as passed, never a false failure.

Invariants are pure functions of the run: what one compares with besides the run (the program compiled without AC,
the other budgets of a sweep) it declares in ``needs`` (a :class:`~harness.core.case.Needs`), and ``run_cell``
(harness/core/run.py) puts it into the run before any verdict.  The fuzzer's oracles call these same functions
(harness/rows/fuzz/oracles.py).

Bytes are accounted by provenance (``harness.core.analysis.saved_tensors``): parameters and leaf user inputs cost no
activation memory; an activation that entered the compiled graph as an input does; RNG states are reported apart.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from harness.core import analysis
from harness.core.analysis import Analysis, is_saved_placeholder, rng_state_of
from harness.core.case import BUDGET_SWEEP, SWEEP_POINTS, Needs
from harness.core.checks import NotRun
from harness.core.pipeline import is_seeded_random

def _where(g, name: str) -> str:
    return f"node {name} (policy {g.policies.get(name, 'untagged')})"


def _bw_text(g) -> str:
    from harness.core.normalize import graph_text

    return "--- bw ---\n" + graph_text(g.bw, annotate=True)


def _saved_list(a: Analysis) -> str:
    return ", ".join(f"{s.name} {s.type} ({s.bytes} B, {s.kind})" for s in a.saved)


def needs(**what):
    """Declare what an invariant reads besides the run (a :class:`~harness.core.case.Needs`)."""
    def mark(f):
        f.needs = Needs(**what)
        return f
    return mark


def _analysis(run) -> Analysis:
    """The run's analysis; NotRun when it has none (no joint and backward graph recorded: another runner's graphs,
    inference only, no backward, graphs without node meta)."""
    a = analysis.of(run)
    if a is None and run.cell.axes.backend == "eager":
        raise NotRun("backend eager is Dynamo only: no AOTAutograd joint graph and no partitioner, so no graph says "
                     "what is saved or recomputed (the run-time oracles of harness/core/oracles.py judge instead)")
    if a is None:
        kinds = sorted(k for k, gms in run.graphs.items() if gms) or "none"
        raise NotRun(f"no analysable joint and backward graph (runner {run.cell.case.runner}, graphs recorded: {kinds})")
    return a


def _graphs(run) -> list:
    return _analysis(run).graphs


def _missing(run, need: str, default: str) -> NotRun:
    """Why the run lacks ``need`` (a NotRun to raise), or, where making it crashed, an AssertionError raised here."""
    why = run.unavailable.get(need, default)
    if isinstance(why, Exception):
        raise AssertionError(f"{run.cell.id}: the baseline this invariant compares with ({need}) could not be made: "
                             f"{type(why).__name__}: {why}")
    return NotRun(why)


def must_save_not_recomputed(run) -> int:
    """A joint node tagged MUST_SAVE is not recomputed in the backward.

    Rule: ``CheckpointPolicy`` (torch/utils/checkpoint.py): "``{MUST,PREFER}_SAVE``: The operation's output will be
    saved during the forward pass and will not be recomputed during the backward pass", and "Use ``MUST_*`` over
    ``PREFER_*`` to indicate that the policy should not be overridden by other subsystems like `torch.compile`"."""
    __tracebackhide__ = True
    n = 0
    for g in _graphs(run):
        for name, policy in g.policies.items():
            if policy != "MUST_SAVE":
                continue
            n += 1
            if name in g.recomputed_names:
                raise AssertionError(f"{run.cell.id}: {_where(g, name)} is recomputed in the backward; expected a "
                                     f"MUST_SAVE node to be saved (or unused), saw it recomputed:\n{_bw_text(g)}")
    if not n:
        raise NotRun("no joint node is tagged MUST_SAVE")
    return n


def recompute_tagged_not_saved(run) -> int:
    """MUST_RECOMPUTE and plain-AC (PREFER_RECOMPUTE) nodes are not saved, except the boundaries the partitioner
    documents (``harness.core.analysis.boundaries``: a region output feeding a later region, also after CSE merged
    identical ops of several regions; a hooked region output; the source of an input mutation).

    Rule: ``CheckpointPolicy``: "``{MUST,PREFER}_RECOMPUTE``: The operation's output will not be saved during the
    forward pass and will be recomputed during the backward pass"; checkpoint's docstring: "forward computation in
    checkpointed regions omits saving tensors for backward and recomputes them during the backward pass".  The public
    text lets torch.compile override PREFER_*; torch's partitioner does not (``partitioners.must_recompute`` treats
    both tags alike and min-cut bans saving them), so a change there is flagged for review."""
    __tracebackhide__ = True
    n = 0
    for g in _graphs(run):
        saved = {s.name for s in g.saved}
        for name, policy in g.policies.items():
            if policy not in ("MUST_RECOMPUTE", "PREFER_RECOMPUTE"):
                continue
            n += 1
            if name in saved and name not in g.boundaries:
                what = "a MUST_RECOMPUTE node" if policy == "MUST_RECOMPUTE" else "a checkpointed region's intermediate"
                raise AssertionError(f"{run.cell.id}: {_where(g, name)} is saved for backward; expected {what} "
                                     f"to be recomputed (it is no documented region boundary), saw it among the saved "
                                     f"tensors {sorted(saved)}:\n{_bw_text(g)}")
    if not n:
        raise NotRun("no joint node is tagged for recompute (MUST_RECOMPUTE or PREFER_RECOMPUTE)")
    return n


def _no_ac_baseline(run):
    """The same program compiled without AC and without a budget: what the user would run without memory features
    (the run's ``no_ac_figures``, put there by run_cell from the baseline cache, or the analysis of the runner's own
    no-AC run)."""
    if run.no_ac_figures is not None:
        return run.no_ac_figures
    if run.no_ac is not None:
        plain = analysis.of(run.no_ac)
        if plain is None:
            raise AssertionError(f"{run.cell.id}: the same program compiled without AC recorded no analysable backward")
        return plain
    raise _missing(run, "no_ac", "the run carries no baseline without AC (Needs.no_ac not produced)")


def _checkpointed(run) -> Analysis:
    a = _analysis(run)
    if not any(g.policies for g in a.graphs) and run.cell.axes.eager_checkpoint:
        raise NotRun(f"composition {run.cell.axes.composition}: checkpointing runs in eager autograd around the "
                     "compiled code, so no partitioner sees a checkpointed region (the run-time oracles judge)")
    if not any(g.policies for g in a.graphs):
        raise NotRun("no checkpointed region in the compiled graphs: with and without AC the program is the same")
    return a


@needs(no_ac=True)
def ac_backward_does_no_less_work(run) -> int:
    """Backward FLOPs with AC >= backward FLOPs of the same program compiled without AC.

    Rule: checkpoint's docstring: "Activation checkpointing is a technique that trades compute for memory ...
    recomputes them during the backward pass": the gradient formulas are the same program's, and AC only adds the
    recomputation (min-cut never recomputes the compute-intensive ops the flop counter counts unless a tag says so)."""
    __tracebackhide__ = True
    a = _checkpointed(run)
    plain = _no_ac_baseline(run)
    if a.bw_flops < plain.bw_flops:
        raise AssertionError(f"{run.cell.id}: expected backward FLOPs with AC >= without AC ({plain.bw_flops}), "
                             f"saw {a.bw_flops}; recomputed with AC: {a.recomputed}")
    return 1


@needs(no_ac=True)
def ac_saves_within_eager_bound(run) -> int:
    """Saved activation bytes with AC <= those without AC + the activations the checkpointed regions read from outside.

    Rule: checkpoint's docstring: inside a region "forward computation ... omits saving tensors for backward" and the
    region's inputs are kept to recompute it: eager checkpointing saves exactly the region inputs in place of the
    region's intermediates, so the eager plan costs at most (no-AC saves) + (region inputs).  The compiled plan is
    feasible for min-cut, which minimizes what it saves, so it must not cost more.  Not a claim that AC saves less:
    a region whose own backward needs little can legitimately save more than no AC (fuzz finding 7183f894a5,
    retracted).  RNG states (a per-op generator state that has no counterpart without AC) are left out; tensors a
    SAC policy marks MUST_SAVE or PREFER_SAVE are left out on both sides (a user directive, not the partitioner's
    choice: ``CheckpointPolicy``: "``{MUST,PREFER}_SAVE``: The operation's output will be saved", and torch's
    partitioner bans their recomputation alike; fuzz program f3860d8d78, a PREFER_SAVE rand_like saved where
    no AC saves its 4-byte mask, was this)."""
    __tracebackhide__ = True
    a = _checkpointed(run)
    if a.activation_bytes is None or a.region_input_bytes is None:
        raise NotRun("symbolic sizes: the saved or region-input bytes of the run are not concrete")
    plain = _no_ac_baseline(run)
    if plain.activation_bytes is None:
        raise NotRun("symbolic sizes: the saved bytes without AC are not concrete")
    directed = {s.name: s for g in a.graphs for s in g.saved
                if g.policies.get(s.name) in ("MUST_SAVE", "PREFER_SAVE") and s.kind in ("activation", "input_activation")}
    if None in [s.bytes for s in directed.values()]:
        raise NotRun("symbolic sizes: a tensor a policy saves has no concrete size")
    also_plain = [s for s in plain.saved if s.name in directed and s.kind in ("activation", "input_activation")]
    chosen = a.activation_bytes - sum(s.bytes for s in directed.values())
    bound = plain.activation_bytes - sum(s.bytes or 0 for s in also_plain) + a.region_input_bytes
    if chosen > bound:
        raise AssertionError(
            f"{run.cell.id}: expected saved activation bytes with AC (*_SAVE and RNG states aside) <= without AC + "
            f"the regions' input activations ({plain.activation_bytes} + {a.region_input_bytes}"
            f"{f' - {sum(s.bytes or 0 for s in also_plain)} *_SAVE' if also_plain else ''} = {bound}), saw {chosen}; "
            f"saved with AC: {_saved_list(a)}; without: {_saved_list(plain)}")
    return 1


@needs(sweep=True)
def budget_monotone(run) -> int:
    """Saved activation bytes never increase as activation_memory_budget goes 1.0 -> 0.5 -> 0.0 (min-cut).

    Rule: torch/_functorch/config.py: the partitioner chooses "the fastest option that saves less activations than
    the memory budget", where "0.0 corresponds to the activation memory from applying activation checkpointing to the
    full compiled region, and 1.0 corresponds to the activation memory from the default runtime-optimized strategy":
    0.0 is the least memory, and a budget below 1.0 caps memory below the default's.  Activations that entered the
    graph as inputs count (a fault that saves them instead of recomputing is caught); parameters and leaf inputs,
    alive anyway, do not.  The other budgets' partitions are made from this cell's own joint graphs
    (``pipeline.repartition``): the budget is the partitioner's input alone, so that is what a compile at that budget
    partitions too."""
    __tracebackhide__ = True
    why = sweep_excluded(run)
    if why:
        raise NotRun(why)
    a = _analysis(run)
    if a.activation_bytes is None:
        raise NotRun("symbolic sizes: the run's saved activation bytes are not concrete")
    seen = []
    for b in BUDGET_SWEEP:
        other = a if b == run.cell.axes.budget else run.sweep.get(b)
        if other is None:
            raise _missing(run, "sweep", f"the run carries no figures at budget {b} (Needs.sweep)")
        if other.activation_bytes is None:
            raise NotRun(f"symbolic sizes: the saved activation bytes at budget {b} are not concrete")
        seen.append((b, other.activation_bytes, other))
    for (b0, s0, a0), (b1, s1, a1) in zip(seen, seen[1:]):
        if s1 > s0:
            raise AssertionError(
                f"{run.cell.id}: expected saved activation bytes not to increase as activation_memory_budget goes "
                f"{b0} -> {b1}, saw {s0} -> {s1} (budget {b0}: {_saved_list(a0)}; budget {b1}: {_saved_list(a1)})")
    return len(seen) - 1


# Solvers whose answer is an optimum of the instance they solve, and how far below it each may stop: dp and
# dp_knapsack_sliding_hirschberg are exact on their quantized instance; ilp stops within HiGHS' relative MIP gap
# (scipy's milp leaves mip_rel_gap at HiGHS' default, 1e-4).
KNAPSACK_GAP = {"dp": 0.0, "dp_knapsack_sliding_hirschberg": 0.0, "ilp": 1e-4}


def _solver(run) -> object:
    """The knapsack solver in force for the cell: its case's functorch config patch, else torch's default."""
    import torch._functorch.config as functorch_config

    return run.cell.case.compile.config.get("functorch", {}).get(
        "activation_memory_budget_solver", functorch_config.activation_memory_budget_solver)


@needs(sweep=True)
def budget_knapsack_monotone(run) -> int:
    """Along the budget sweep (:data:`~harness.core.case.SWEEP_POINTS`), what torch's partitioner guarantees to be
    monotone in ``activation_memory_budget``, and nothing more:

    1. the budgets in (0, 1) at which it poses its knapsack are all those up to some threshold: fewer (or as many)
       knapsacks as the budget grows;
    2. with an exact solver (dp, dp_knapsack_sliding_hirschberg; ilp up to its MIP gap), the knapsack's objective,
       the estimated runtime of the banned nodes it keeps saved (the recompute it avoids), never decreases as the
       capacity grows on the same instance (same items, same memories and runtimes).

    Rule: torch/_functorch/config.py: the partitioner chooses "the fastest option that saves less activations than
    the memory budget"; ``partitioners.py::choose_saved_values_set`` returns the inputs at 0.0 and the runtime-optimised
    min-cut at 1.0, and for a budget b in (0, 1) the more aggressive min-cut if its memory ratio is < b, else the
    fully aggressive one if its ratio is < b, else the knapsack over the recomputable banned nodes with capacity b.
    The ratios and the knapsack's items (``memory``: ``_size_of`` normalised by max - min, ``runtimes``:
    ``estimate_runtime``) are computed from the joint graph alone, before the budget is read, so (1): the knapsack is
    posed exactly for b <= min(both ratios); and (2): an exact solver maximises the objective over the sets that fit
    the capacity, and a larger capacity admits a superset of them.

    What is *not* monotone by construction, so not asserted here: the saved bytes between two interior budgets (a
    larger capacity may keep a costlier, smaller node; and the final min-cut with the knapsack's ``dont_ban`` set may
    save other nodes than the knapsack's items, partitioners.py's own "Estimated doesn't align exactly with actual"),
    and the peak live activation bytes (harness/core/peak.py): the budget bounds what is saved between forward and
    backward, never the peak, and recomputing an intermediate moves its bytes into the backward, where they add to the
    gradients being built; tests/test_sweep_oracles.py shows the peak rising as the budget falls (0.5 -> 0.3 and
    0.1 -> 0.0) on a 4-layer MLP with no defect.  The budget's documented end points are budget_monotone's."""
    __tracebackhide__ = True
    why = sweep_excluded(run)
    if why:
        raise NotRun(why)
    calls = {}
    for b in SWEEP_POINTS:
        if b == run.cell.axes.budget:
            calls[b] = tuple(run.info.get("knapsack", ()))
        elif b not in run.sweep:
            raise _missing(run, "sweep", f"the run carries no figures at budget {b} (Needs.sweep)")
        else:
            calls[b] = tuple(run.sweep[b].knapsack)
    interior = [b for b in sorted(calls) if 0.0 < b < 1.0]
    if not any(calls[b] for b in interior):
        raise NotRun(f"the partitioner posed no knapsack at any budget of the sweep {SWEEP_POINTS}")
    n = 0
    for b0, b1 in zip(interior, interior[1:]):
        n += 1
        if len(calls[b1]) > len(calls[b0]):
            raise AssertionError(
                f"{run.cell.id}: expected the partitioner to pose no more knapsacks as activation_memory_budget grows "
                f"{b0} -> {b1} (it poses one for every budget up to its aggressive min-cuts' memory ratios), saw "
                f"{len(calls[b0])} -> {len(calls[b1])} (knapsacks per budget: "
                f"{ {b: len(c) for b, c in calls.items()} })")
    solver = _solver(run)
    if solver not in KNAPSACK_GAP:
        return n
    gap = KNAPSACK_GAP[solver]
    posed = [(b, c) for b in interior for c in calls[b]]
    for (b0, c0), (b1, c1) in ((p, q) for p in posed for q in posed if p[1].max_memory < q[1].max_memory):
        if (c0.memory, c0.runtimes) != (c1.memory, c1.runtimes):
            continue
        n += 1
        if c1.objective < c0.objective * (1 - gap):
            raise AssertionError(
                f"{run.cell.id}: expected exact solver {solver}'s objective (estimated runtime of the saved banned "
                f"nodes) not to decrease as the capacity grows on the same instance, saw {c0.objective} at "
                f"budget {b0} (saved items {c0.saved}) -> {c1.objective} at budget {b1} (saved items {c1.saved}); "
                f"memory {c0.memory}, runtimes {c0.runtimes}")
    return n


def sweep_excluded(run) -> str | None:
    """Why ``run``'s cell is no point of a budget sweep (None: it is one): budget_monotone's precondition, which
    run_cell reads too, so it makes no sweep for a cell that has none."""
    axes = run.cell.axes
    if axes.budget is None:
        return "no activation_memory_budget on this cell"
    if axes.partitioner != "min_cut":
        return f"the {axes.partitioner} partitioner does not read activation_memory_budget"
    if axes.budget not in BUDGET_SWEEP:
        return f"budget {axes.budget} is not a point of the sweep {BUDGET_SWEEP}"
    return None


def _is_random(node) -> bool:
    """A seeded-nondeterministic op, except one whose ``dropout_p`` is literally 0.0 (SDPA-family ops are tagged
    nondeterministic_seeded wholesale but draw nothing without dropout; torch >= 2.14's partitioner likewise
    recomputes them without an RNG replay: ``partitioners.is_rng_op``, pytorch/pytorch#187985)."""
    if not is_seeded_random(node):
        return False
    schema = node.target._schema.arguments
    i = next((i for i, a in enumerate(schema) if a.name == "dropout_p"), None)
    if i is None:
        return True
    p = node.args[i] if len(node.args) > i else node.kwargs.get("dropout_p", schema[i].default_value)
    return not (isinstance(p, (int, float)) and p == 0.0)


def _replay_state_ok(state) -> bool:
    """The backward's RNG state is one the forward produced: a saved tensor (``run_with_rng_state(state, op, ...)``
    on CPU and with fallback_random), or, for ``graphsafe_run_with_rng_state(op, ..., rng_state=...)`` (CUDA,
    partitioners.py ``functionalize_rng_ops``), the generator-valued backward input ``bwd_rng_state_N`` the
    partitioner adds and feeds from the forward's generator state."""
    if not isinstance(state, torch.fx.Node) or state.op != "placeholder":
        return False
    return is_saved_placeholder(state) or str(state.target).startswith("bwd_rng_state")


def random_ops_replayed(run) -> int:
    """A forward random op redone in the backward is an RNG replay fed by a state the forward produced.

    Rule: checkpoint's docstring: "By default, checkpointing includes logic to juggle the RNG state such that
    checkpointed passes making use of RNG (through dropout for example) have deterministic output as compared to
    non-checkpointed passes"; under compile the partitioner functionalizes it (``run_and_save_rng_state`` in the
    forward, ``run_with_rng_state`` / ``graphsafe_run_with_rng_state`` in the backward)."""
    __tracebackhide__ = True
    n = 0
    for g in _graphs(run):
        for node in g.bw.graph.nodes:
            if _is_random(node) and node.name in g.recomputed_names:
                raise AssertionError(f"{run.cell.id}: forward random op {node.name} ({node.target}, policy "
                                     f"{g.policies.get(node.name, 'untagged')}) is recomputed in the backward without "
                                     f"the forward's RNG state; expected an RNG-state replay:\n{_bw_text(g)}")
            if analysis.is_rng_replay(node):
                n += 1
                state = rng_state_of(node)
                if not _replay_state_ok(state):
                    raise AssertionError(f"{run.cell.id}: RNG replay {node.name} in the backward takes its state from "
                                         f"{state}, expected a state the forward saved:\n{_bw_text(g)}")
    if not n:
        raise NotRun("no random op is redone in the backward")
    return n


INVARIANTS = (must_save_not_recomputed, recompute_tagged_not_saved, ac_backward_does_no_less_work,
              ac_saves_within_eager_bound, budget_monotone, budget_knapsack_monotone, random_ops_replayed)
# What the invariants read besides the run: run_cell produces it (every invariant that declares no need needs nothing).
NEEDS = functools.reduce(lambda a, b: a | b, (getattr(inv, "needs", Needs()) for inv in INVARIANTS))
# Invariants that need the program compiled again (without AC, along a budget sweep): the fuzzer's fast mode skips them.
RECOMPILING = frozenset(inv.__name__ for inv in INVARIANTS if getattr(inv, "needs", Needs()) != Needs())


@dataclasses.dataclass
class Violations:
    """Every invariant on one run: the checks made, each failure (name, message), each not run (name, reason)."""

    checks: int = 0
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    not_run: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def violations(run, cheap: bool = False) -> Violations:
    """Every invariant on ``run``.  ``cheap`` leaves out the RECOMPILING ones (the fuzzer's fast mode)."""
    out = Violations()
    for inv in INVARIANTS:
        if cheap and inv.__name__ in RECOMPILING:
            continue
        try:
            out.checks += inv(run)
        except NotRun as e:
            out.not_run.append((inv.__name__, str(e)))
        except AssertionError as e:
            out.failed.append((inv.__name__, str(e)))
    return out
