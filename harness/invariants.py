"""Semantic invariants of activation checkpointing, checked mechanically on every recorded cell.

Each invariant is ``f(run) -> number of checks`` and raises AssertionError naming the cell, the node and its policy.
They are registered in ``harness.suite.SEMANTIC_CHECKS`` (see :func:`register`).  A cell whose graphs cannot be
analysed (custom pipelines, inference-only, no backward) is skipped: 0 checks, never a false failure.

* MUST_SAVE never recomputed: a joint node tagged MUST_SAVE is not redone in the backward.
* MUST_RECOMPUTE never saved, and plain-AC (PREFER_RECOMPUTE) region intermediates never saved, except the boundaries
  the partitioner documents (``analysis.boundaries``: a region output feeding the next region, a hooked region output,
  the source of an input mutation).
* With AC vs the same program compiled without AC (same axes without a budget, cached): saved bytes <=, backward
  FLOPs >=.  Saved bytes here leave out RNG generator states saved to replay a random op (a fixed per-op cost with
  no counterpart without AC: 5 KB on CPU, reported as ``rng_state_bytes``) and tensors a SAC policy marked MUST_SAVE
  (a user directive that may name a bigger tensor than the plain program keeps).
* Budget monotonicity: along activation_memory_budget 1.0 -> 0.5 -> 0.0 (min-cut), saved bytes never increase.
* Random ops: a forward random op redone in the backward is replayed under the forward's saved RNG state
  (run_with_rng_state fed by a saved backward input); and for cases registered in :data:`DROPOUT_ORACLES`, the input
  gradient is non-zero exactly where the forward output is non-zero (positions where the input is exactly 0 excepted),
  an oracle that holds whatever the RNG stream.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from harness.analysis import Analysis, analyse, is_rng_replay, is_saved_placeholder
from harness.case import Axes, Case, Cell

BUDGET_SWEEP = (1.0, 0.5, 0.0)
# case name -> (output index, input index) where output = dropout-like(elementwise, derivative non-zero)(input).
DROPOUT_ORACLES: dict[str, tuple[int, int]] = {}


def analysis_of(run) -> Analysis | None:
    if "analysis" not in run.info:
        run.info["analysis"] = analyse(run)
    return run.info["analysis"]


def _ctx(run, g, name: str) -> str:
    policy = g.policies.get(name, "untagged")
    return f"node {name} (policy {policy})"


def must_save_not_recomputed(run) -> int:
    __tracebackhide__ = True
    a = analysis_of(run)
    if a is None:
        return 0
    n = 0
    for g in a.graphs:
        recomputed = {name for name, _ in g.recomputed}
        for name, policy in g.policies.items():
            if policy != "MUST_SAVE":
                continue
            n += 1
            if name in recomputed:
                raise AssertionError(f"{run.cell.id}: {_ctx(run, g, name)} is recomputed in the backward; expected a "
                                     f"MUST_SAVE node to be saved (or unused), saw it recomputed:\n{_bw_text(g)}")
    return n


def recompute_tagged_not_saved(run) -> int:
    """MUST_RECOMPUTE and plain-AC (PREFER_RECOMPUTE) nodes are not saved, documented boundaries excepted."""
    __tracebackhide__ = True
    a = analysis_of(run)
    if a is None:
        return 0
    n = 0
    for g in a.graphs:
        saved = {s.name for s in g.saved}
        for name, policy in g.policies.items():
            if policy not in ("MUST_RECOMPUTE", "PREFER_RECOMPUTE"):
                continue
            n += 1
            if name in saved and name not in g.boundaries:
                what = "a MUST_RECOMPUTE node" if policy == "MUST_RECOMPUTE" else "a checkpointed region's intermediate"
                raise AssertionError(f"{run.cell.id}: {_ctx(run, g, name)} is saved for backward; expected {what} "
                                     f"to be recomputed (it is no documented region boundary), saw it among the saved "
                                     f"tensors {sorted(saved)}:\n{_bw_text(g)}")
    return n


def _bw_text(g) -> str:
    from harness.normalize import graph_text

    return "--- bw ---\n" + graph_text(g.bw, annotate=True)


# --- comparisons with other compilations of the same case -------------------------------------------------------

@functools.lru_cache(maxsize=256)
def compiled_analysis(case: Case, axes: Axes, ac: bool) -> Analysis | None:
    """The analysis of ``case`` compiled under ``axes`` with or without AC (cached per case and axes)."""
    from harness.pipeline import Recorder, Run, compile_counters, config_patches, execute, fresh_state

    recorder = Recorder(case, axes)
    fresh_state()
    with config_patches(case, axes):
        execute(case, axes, ac=ac, backend=recorder)
    run = Run(Cell(case, axes), graphs=dict(recorder.graphs))
    run.counters = compile_counters(recorder)
    return analyse(run)


def ac_saves_no_more_and_computes_no_less(run) -> int:
    __tracebackhide__ = True
    a = analysis_of(run)
    if a is None or run.cell.case.custom is not None or not any(g.policies for g in a.graphs):
        return 0  # no checkpointed region (the program with and without AC is the same), or a custom pipeline
    case, axes = run.cell.case, run.cell.axes
    # The baseline is the program the user would run without memory features: no AC and no budget.  Under a budget
    # the partitioner rematerializes the no-AC program too, and a SAC MUST_SAVE directive may then legitimately keep
    # more than it (rng_sac_random_op at budget 0.5 saves both MUST_SAVE sigmoids, 128 B, where budget-only keeps 64 B).
    plain = compiled_analysis(case, dataclasses.replace(axes, budget=None), False)
    if plain is None:
        raise AssertionError(f"{run.cell.id}: the same program compiled without AC recorded no analysable backward")
    n = 0
    # A SAC MUST_SAVE directive names the tensor to keep even where the plain program keeps a cheaper one (inductor
    # saves relu's b8 mask, sac_outplace_op's policy the f32 sigmoid): the promise covers what AC chose itself.
    # Graph inputs (parameters, user inputs and views of them) are alive anyway: saving one costs no activation
    # memory, and recomputing from the inputs is exactly what AC trades for (the fuzzer's linear->cos under the
    # default partitioner saves x, W and b instead of addmm).  So the promise is about activations.
    directed = [s for g in a.graphs for s in g.saved if g.policies.get(s.name) == "MUST_SAVE" and s.kind == "activation"]
    if a.activation_bytes is not None and plain.activation_bytes is not None and None not in [s.bytes for s in directed]:
        n += 1
        chosen = a.activation_bytes - sum(s.bytes for s in directed)
        if chosen > plain.activation_bytes:
            raise AssertionError(
                f"{run.cell.id}: expected saved activation bytes (inputs, RNG states and MUST_SAVE tensors aside) with "
                f"AC <= without AC ({plain.activation_bytes}), saw {chosen}; saved with AC: {_saved_list(a)}; "
                f"without: {_saved_list(plain)}")
    n += 1
    if a.bw_flops < plain.bw_flops:
        raise AssertionError(f"{run.cell.id}: expected backward FLOPs with AC >= without AC ({plain.bw_flops}), "
                             f"saw {a.bw_flops}; recomputed with AC: {a.recomputed}")
    return n


def _saved_list(a: Analysis) -> str:
    return ", ".join(f"{s.name} {s.type} ({s.bytes} B)" for s in a.saved)


def budget_monotone(run) -> int:
    """Saved activation bytes never increase along the budget sweep (checked from each min-cut cell with a budget).

    Graph inputs are left out: at budget 0 the partitioner saves the inputs of a region instead of its activations,
    which costs no memory (the fuzzer's linear->cos->add at 0.5 saved addmm, at 0.0 x, W and b)."""
    __tracebackhide__ = True
    axes = run.cell.axes
    if (axes.budget is None or axes.partitioner != "min_cut" or axes.budget not in BUDGET_SWEEP
            or run.cell.case.custom is not None):
        return 0
    a = analysis_of(run)
    if a is None or a.activation_bytes is None:
        return 0
    seen = []
    for b in BUDGET_SWEEP:
        other = a if b == axes.budget else compiled_analysis(run.cell.case, dataclasses.replace(axes, budget=b), True)
        if other is None or other.activation_bytes is None:
            return 0
        seen.append((b, other.activation_bytes, other))
    for (b0, s0, a0), (b1, s1, a1) in zip(seen, seen[1:]):
        if s1 > s0:
            raise AssertionError(
                f"{run.cell.id}: expected saved activation bytes (inputs and RNG states aside) not to increase as activation_memory_budget goes {b0} -> {b1}, "
                f"saw {s0} -> {s1} (budget {b0}: {_saved_list(a0)}; budget {b1}: {_saved_list(a1)})")
    return len(seen) - 1


# --- randomness ---------------------------------------------------------------------------------------------

def _is_random(node) -> bool:
    """A seeded-nondeterministic op, except one whose ``dropout_p`` is literally 0.0 (SDPA-family ops are tagged
    nondeterministic_seeded wholesale but draw nothing without dropout; torch >= 2.14's partitioner likewise
    recomputes them without an RNG replay: ``partitioners.is_rng_op``, pytorch/pytorch#187985)."""
    if not (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and torch.Tag.nondeterministic_seeded in node.target.tags):
        return False
    schema = node.target._schema.arguments
    i = next((i for i, a in enumerate(schema) if a.name == "dropout_p"), None)
    if i is None:
        return True
    p = node.args[i] if len(node.args) > i else node.kwargs.get("dropout_p", schema[i].default_value)
    return not (isinstance(p, (int, float)) and p == 0.0)


def random_ops_replayed(run) -> int:
    """A forward random op redone in the backward must be an RNG replay fed by a state the forward saved."""
    __tracebackhide__ = True
    a = analysis_of(run)
    if a is None:
        return 0
    n = 0
    for g in a.graphs:
        recomputed = {name for name, _ in g.recomputed}
        for node in g.bw.graph.nodes:
            if _is_random(node) and node.name in recomputed:
                raise AssertionError(f"{run.cell.id}: forward random op {node.name} ({node.target}, policy "
                                     f"{g.policies.get(node.name, 'untagged')}) is recomputed in the backward without "
                                     f"the forward's RNG state; expected a run_with_rng_state replay:\n{_bw_text(g)}")
            if is_rng_replay(node):
                n += 1
                state = node.args[0]
                if not (isinstance(state, torch.fx.Node) and is_saved_placeholder(state)):
                    raise AssertionError(f"{run.cell.id}: RNG replay {node.name} in the backward takes its state from "
                                         f"{state}, expected a tensor the forward saved:\n{_bw_text(g)}")
    return n


def dropout_oracle(run) -> int:
    """grad(input) != 0 exactly where output != 0, except where the input is exactly zero."""
    __tracebackhide__ = True
    spec = DROPOUT_ORACLES.get(run.cell.case.name)
    if spec is None or run.compiled is None:
        return 0
    out_i, in_i = spec
    y = run.compiled.outputs[out_i]
    grad = run.compiled.grads[f"input[{in_i}]"]
    x = _inputs(run)[in_i]
    return check_dropout_oracle(run.cell.id, x, y, grad)


def check_dropout_oracle(cell_id: str, x, y, grad) -> int:
    __tracebackhide__ = True
    live = x.detach().cpu() != 0
    kept, flows = (y.cpu() != 0) & live, (grad.cpu() != 0) & live
    if not 0 < int(kept.sum()) < int(live.sum()):
        raise AssertionError(f"{cell_id}: expected a dropout mask that keeps some but not all of the {int(live.sum())} "
                             f"non-zero inputs, saw {int(kept.sum())} kept: the oracle would be vacuous")
    bad = (kept != flows).nonzero().tolist()
    if bad:
        raise AssertionError(f"{cell_id}: expected the input gradient to be non-zero exactly where the forward output "
                             f"is non-zero (the backward replays the forward's mask); they differ at {len(bad)} "
                             f"positions, first {bad[:5]}: forward kept {int(kept.sum())}, gradient flows through "
                             f"{int(flows.sum())}")
    return 1


def _inputs(run):
    from harness.case import DTYPES, BuildContext
    from harness.pipeline import BUILD_SEED, flat_tensors

    axes = run.cell.axes
    torch.manual_seed(BUILD_SEED)  # the inputs the compiled run started from
    prog = run.cell.case.build(BuildContext(device=axes.device, dtype=DTYPES[axes.dtype], ac=True))
    return flat_tensors(prog.inputs)


INVARIANTS = [must_save_not_recomputed, recompute_tagged_not_saved, ac_saves_no_more_and_computes_no_less,
              budget_monotone, random_ops_replayed, dropout_oracle]


def register() -> None:
    from harness import suite

    for f in INVARIANTS:
        if f not in suite.SEMANTIC_CHECKS:
            suite.SEMANTIC_CHECKS.append(f)
