"""Each semantic invariant (harness/core/invariants.py) fires on a run built or perturbed to violate it, with a message that
names the cell, the node and its policy; and it stays quiet on the documented exceptions."""

import dataclasses

import pytest
import torch

from harness.core import analysis, baselines, checks, invariants, pipeline
from harness.core.analysis import Analysis, Saved, analyse
from harness.core.case import SWEEP_POINTS, Axes, BuildContext, Case, Cell, Needs, Program
from harness.core.checks import NotRun
from harness.core.pipeline import NOT_ANALYSED
from harness.core.run import complete, run_cell
from harness.rows.cases import find_case


def _run(name: str, **axes):
    return run_cell(Cell(find_case(name), Axes(**axes)))


def _set_policy(run, name: str, policy: str):
    """Perturb the recorded joint graph: give node ``name`` another recompute tag, and re-analyse."""
    from torch.utils.checkpoint import CheckpointPolicy

    node = next(n for n in run.graphs["joint"][0].graph.nodes if n.name == name)
    node.meta["recompute"] = CheckpointPolicy[policy]
    run.analysis = NOT_ANALYSED


def _fires(check, run, *parts):
    with pytest.raises(AssertionError) as info:
        check(run)
    msg = str(info.value)
    for part in (run.cell.id, *parts):
        assert part in msg, f"expected {part!r} in the message of {check.__name__}, saw:\n{msg[:2000]}"


def test_analysis_matches_the_partitioners_saved_values():
    run = _run("reference_block_sac_save_mm")
    a = analysis.of(run)
    saved = {s.name: s.kind for s in a.saved}
    assert {"mm", "mm_1", "mm_2"} <= set(saved), f"expected the three MUST_SAVE mm saved, saw {saved}"
    assert [op for _, op in a.recomputed].count("aten.bmm.default") == 1, f"expected bmm recomputed once, saw {a.recomputed}"
    assert a.activation_bytes == 3 * 16 * 16 * 4, f"expected 3 f32[16, 16] activations, saw {a.activation_bytes} bytes"


def test_must_save_recomputed_fires():
    run = _run("reference_block_full_ac")  # every mm is recomputed
    with pytest.raises(NotRun, match="no joint node is tagged MUST_SAVE"):
        invariants.must_save_not_recomputed(run)
    _set_policy(run, "mm", "MUST_SAVE")
    _fires(invariants.must_save_not_recomputed, run, "node mm (policy MUST_SAVE)", "recomputed in the backward")


def test_must_recompute_saved_fires():
    run = _run("reference_block_sac_save_mm")  # the mm are saved
    assert invariants.recompute_tagged_not_saved(run) > 0
    _set_policy(run, "mm_1", "MUST_RECOMPUTE")
    _fires(invariants.recompute_tagged_not_saved, run, "node mm_1 (policy MUST_RECOMPUTE)", "a MUST_RECOMPUTE node")


def test_plain_ac_intermediate_saved_fires_but_a_region_boundary_does_not():
    run = _run("reference_block_sac_save_mm")
    _set_policy(run, "mm", "PREFER_RECOMPUTE")
    _fires(invariants.recompute_tagged_not_saved, run, "node mm (policy PREFER_RECOMPUTE)", "intermediate")
    # Two consecutive regions: the first's output (cos_1) is saved, as cleanup_recompute_tags documents.
    boundary = _run("tags_sequential_layers")
    a = analysis.of(boundary)
    assert "cos_1" in {s.name for s in a.saved} and "cos_1" in a.graphs[0].boundaries, \
        f"expected the boundary cos_1 saved and recognised, saw saved {[s.name for s in a.saved]}"
    assert invariants.recompute_tagged_not_saved(boundary) > 0


def _case(name, build):
    return Case(name, build, area="meta")


def _ac_saves_more(ctx: BuildContext) -> Program:
    """Legitimately worse with AC: the region reduces a big input to a small tensor the backward needs.  Without AC
    the small tensor is saved; with AC it must be recomputed, so its big input (the region's input) is saved instead."""
    def fn(x):
        big = x.repeat(16, 1) * 2.0
        return ctx.checkpoint(lambda b: torch.sin(b.sum(0)), big, use_reentrant=False)

    return Program(fn, (ctx.randn(8),))


def _ac_computes_less(ctx: BuildContext) -> Program:
    """Not the same program with and without AC: the AC variant drops the matmul, so its backward computes less."""
    def fn(x):
        if ctx.ac:
            return ctx.checkpoint(torch.sin, x, use_reentrant=False)
        return torch.sin(x @ x)

    return Program(fn, (ctx.randn(8, 8),))


def _with_extra_saved(a: Analysis, nbytes: int, name: str = "extra") -> Analysis:
    g = a.graphs[0]
    return Analysis([dataclasses.replace(g, saved=g.saved + [Saved(name, f"f32[{nbytes // 4}]", nbytes, "activation")]),
                     *a.graphs[1:]])


def test_ac_saving_more_than_no_ac_plus_region_inputs_fires_and_a_legit_region_input_does_not():
    run = run_cell(Cell(_case("meta_ac_saves_more", _ac_saves_more), Axes()))
    a = analysis.of(run)
    assert a.region_input_bytes == 16 * 8 * 4 and invariants.ac_saves_within_eager_bound(run) == 1, \
        f"saving the region's input (512 B) is what eager checkpoint does; saw region inputs {a.region_input_bytes}, saved {a.saved}"
    run.analysis = _with_extra_saved(a, 4096)  # the partitioner also keeps a 4 KiB activation it should not
    _fires(invariants.ac_saves_within_eager_bound, run, "expected saved activation bytes with AC", "region")


def test_ac_backward_computing_less_than_no_ac_fires():
    run = run_cell(Cell(_case("meta_ac_computes_less", _ac_computes_less), Axes()))
    _fires(invariants.ac_backward_does_no_less_work, run, "expected backward FLOPs with AC >= without AC")


def test_saved_graph_inputs_are_accounted_by_provenance():
    """A leaf input saved for the backward costs nothing; an activation that entered the graph as an input does."""
    from harness.core.pipeline import Recorder, execute

    case = _case("meta_provenance", lambda ctx: Program(
        lambda x: ctx.checkpoint(lambda t: torch.sin(t) @ t, x, use_reentrant=False), (ctx.randn(8, 8),)))
    axes = Axes()
    for non_leaf in (False, True):
        recorder = Recorder(case.compile, axes)
        x = torch.randn(8, 8, requires_grad=True)
        arg = x * 1.0 if non_leaf else x
        torch.compile(case.build(BuildContext("cpu", torch.float32, ac=True)).fn, backend=recorder, fullgraph=True)(arg).sum().backward()
        joint, bw = recorder.graphs["joint"][0], recorder.graphs["bw"][0]
        kinds = {s.name: s.kind for s in analysis.saved_tensors(bw, joint)}
        want = "input_activation" if non_leaf else "input"
        assert kinds.get("primals_1") == want, f"expected the saved input primals_1 to be {want!r}, saw {kinds}"
        g = analysis.analyse_graphs(joint, None, bw)
        assert (g.activation_bytes >= 256) == non_leaf, \
            f"expected the 256 B input counted as activation memory only when it is an activation, saw {g.activation_bytes}"


def test_budget_sweep_saving_more_at_a_lower_budget_fires(monkeypatch):
    case = find_case("reference_block_full_ac")
    run = pipeline.compile_and_record(case, Axes(budget=0.5), ac=True)  # the cell's recording, no baselines yet
    real_repartition = baselines.repartition
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")  # every other budget partitioned again (through the fake below)

    def fake(run, budget, joints, *rest):  # the partitioner at budget 0.0 "saves" an extra KiB
        other = real_repartition(run, budget, joints, *rest)
        if budget == 0.0:
            other = dataclasses.replace(other, analysis=_with_extra_saved(analysis.of(other), 1024))
        return other

    monkeypatch.setattr(baselines, "repartition", fake)
    monkeypatch.setattr(baselines, "baseline", lambda *a: pytest.fail(f"expected no compile for another budget: {a}"))
    complete(run, Needs(sweep=True))  # what run_cell adds for budget_monotone
    assert sorted(run.sweep) == sorted(set(SWEEP_POINTS) - {0.5}), f"expected the sweep's other budgets in the run, saw {sorted(run.sweep)}"
    _fires(invariants.budget_monotone, run, "not to increase as activation_memory_budget goes 0.5 -> 0.0")


def _replay_node(run):
    bw = run.graphs["bw"][0]
    return bw, next(n for n in bw.graph.nodes if n.op == "call_function" and "rng_state" in str(n.target))


def test_random_op_recomputed_without_the_forward_rng_state_fires():
    run = _run("reference_dropout_ac_oracle")
    assert invariants.random_ops_replayed(run) == 1
    bw, replay = _replay_node(run)
    replay.target, replay.args = replay.args[1], replay.args[2:]  # a fresh draw instead of the replay
    replay._rename("native_dropout")  # the forward node's name: recomputed
    run.analysis = NOT_ANALYSED
    _fires(invariants.random_ops_replayed, run, "forward random op native_dropout", "without the forward's RNG state")


def test_rng_replay_from_an_unsaved_state_fires():
    run = _run("reference_dropout_ac_oracle")
    bw, replay = _replay_node(run)
    with bw.graph.inserting_before(replay):
        state = bw.graph.call_function(torch.ops.aten.clone.default, (replay.args[0],))
    replay.args = (state, *replay.args[1:])
    run.analysis = NOT_ANALYSED
    _fires(invariants.random_ops_replayed, run, "takes its state from", "expected a state the forward saved")


def test_dropout_oracle_fires_on_a_mask_mismatch_and_minds_exact_zeros():
    x = torch.tensor([1.0, 2.0, 0.0, 3.0, 4.0])
    y = torch.tensor([2.0, 0.0, 0.0, 6.0, 0.0])  # kept: 0, 3
    grad = torch.tensor([2.0, 0.0, 5.0, 2.0, 0.0])  # position 2 is an exact-zero input: not judged
    assert checks.check_dropout_oracle("cell", x, y, grad) == 1
    with pytest.raises(AssertionError, match=r"cell: expected the input gradient to be non-zero exactly where .* "
                                             r"differ at 1 positions, first \[\[1\]\]"):
        checks.check_dropout_oracle("cell", x, y, torch.tensor([2.0, 1.0, 0.0, 2.0, 0.0]))
    with pytest.raises(AssertionError, match="the oracle would be vacuous"):
        checks.check_dropout_oracle("cell", x, x, x)


def test_dropout_oracle_runs_as_the_reference_cases_check():
    run = _run("reference_dropout_ac_oracle")
    run.cell.case.expect.check(run)
    run.compiled.grads["input[0]"] = torch.ones_like(run.compiled.grads["input[0]"])  # gradient everywhere
    _fires(run.cell.case.expect.check, run, "expected the input gradient to be non-zero exactly where")


def test_a_run_without_graphs_is_not_run_by_any_invariant():
    """Issue 28: an invariant that cannot run is "not run" with its reason, never a pass (it used to return 0)."""
    from harness.core.pipeline import Run

    run = Run(Cell(_case("meta_no_graphs", _ac_saves_more), Axes()))
    assert analyse(run) is None
    found = invariants.violations(run)
    assert found.checks == 0 and not found.failed, f"expected no check made and no failure, saw {found}"
    assert [name for name, _ in found.not_run] == [f.__name__ for f in invariants.INVARIANTS], found.not_run
    assert all("no analysable joint and backward graph" in why or "budget" in why for _, why in found.not_run), \
        f"expected each to say why it could not run, saw {found.not_run}"


@pytest.mark.parametrize("digest", ["7183f894a5", "57011d7d53"])
def test_retracted_fuzz_findings_do_not_fire(digest):
    """Both were reported as defects and are not (findings/fuzz/README.md): 7183f894a5 saves a region input plus an
    RNG state where no AC keeps a 4 B mask (within the eager bound); 57011d7d53's saved amax is the CSE-merged value
    of two regions that cleanup_recompute_tags saves on purpose.  No invariant may fire on them."""
    from harness.rows.fuzz import oracles, repro
    from harness.core.paths import FINDINGS

    prog, _ = repro.read_spec(FINDINGS / "fuzz" / f"{digest}.py")
    run = run_cell(oracles.cell_for(prog))
    found = invariants.violations(run)
    assert not found.failed, f"expected no invariant to fire on retracted finding {digest}, saw {found.failed}"
    # The invariant each was wrongly reported by must have run on it (issue 28: a test asserts what it relies on ran).
    relied_on = {"7183f894a5": "ac_saves_within_eager_bound", "57011d7d53": "recompute_tagged_not_saved"}[digest]
    assert relied_on not in dict(found.not_run) and found.checks > 0, \
        f"expected {relied_on} to run on {digest}, saw not run: {found.not_run}, {found.checks} checks"


def test_a_prefer_save_directive_is_no_excess_of_the_eager_bound():
    """Fuzz program f3860d8d78: a SAC default of PREFER_SAVE saves rand_like (16 B) where no AC saves its 4-byte mask;
    the user's *_SAVE directive is left out of the bound on both sides, as MUST_SAVE is."""
    from harness.rows.fuzz import oracles
    from harness.rows.fuzz.program import Prog

    spec = ('{"autocast": false, "backend": "aot_eager", "budget": null, "d": 4, "default_policy": "PREFER_SAVE", '
            '"input_grads": [true], "n": 1, "n_biases": 1, "n_weights": 1, "partitioner": "min_cut", "policy": {}, '
            '"regions": [{"end": 1, "reentrant": false, "sac": true, "start": 0}], "steps": [{"args": [0], "b": 0, '
            '"op": "rand_mask", "w": 0}, {"args": [1], "b": 0, "op": "expand_sum", "w": 0}, {"args": [2], "b": 0, '
            '"op": "randn_noise", "w": 0}, {"args": [3, 3], "b": 0, "op": "max_dim", "w": 0}, {"args": [5], "b": 0, '
            '"op": "cos", "w": 0}], "weights_are_params": true}')
    run = run_cell(oracles.cell_for(Prog.from_json(spec)))
    assert invariants.ac_saves_within_eager_bound(run) == 1, "expected the bound checked and met"


def test_verdicts_are_pure_functions_of_runs(monkeypatch):
    """Issue 25: an invariant (or a case check) declares what it needs and run_cell puts it into the run; judging the
    run compiles nothing.  Every way to compile is made to fail after the run: the verdicts still run."""
    from harness.core import runners

    run = _run("reference_block_full_ac", budget=0.5)  # needs the no-AC baseline and the sweep
    assert run.no_ac_figures is not None and sorted(run.sweep) == sorted(set(SWEEP_POINTS) - {0.5}), (run.no_ac_figures, run.sweep)

    def compiles(*args, **kwargs):
        raise AssertionError(f"a verdict compiled: {args[:2]}")

    for module, name in ((pipeline, "compile_and_record"), (pipeline, "baseline"), (pipeline, "execute"),
                         (baselines, "figures"), (runners, "record")):
        monkeypatch.setattr(module, name, compiles)
    found = invariants.violations(run)
    assert not found.failed and found.checks > 0, found
    ran = {f.__name__ for f in invariants.INVARIANTS} - {name for name, _ in found.not_run}
    assert {"ac_backward_does_no_less_work", "ac_saves_within_eager_bound", "budget_monotone"} <= ran, found.not_run


def test_rows_say_what_not_how():
    """No row module imports the pipeline, a runner or run_cell: a row names its runner, one runner knows how."""
    import ast

    from harness.core.paths import ROOT

    forbidden = {"harness.core.pipeline", "harness.core.runners", "harness.core.run", "harness.core.baselines"}
    seen = {}
    for path in sorted((ROOT / "harness" / "rows" / "cases").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
                     if isinstance(node, ast.ImportFrom) else [])
            hits = [n for n in names if n in forbidden]
            if hits:
                seen.setdefault(path.name, []).extend(hits)
    assert seen == {}, f"expected no row module to import {sorted(forbidden)}, saw {seen}"
