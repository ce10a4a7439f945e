"""The oracles that read no graph (harness/core/oracles.py) and the composition / backend axes (issue 27), and the state
after the step (issue 31): each oracle fails on a program that breaks it and passes on the same program unbroken."""

from __future__ import annotations

import pytest
import torch

from harness.core import case as case_module
from harness.core import invariants, oracles
from harness.core.case import (AmbientState, Axes, AxesSpec, Backend, Case, Cell, Composition, Partitioner, Program, Selection,
                               composed_checkpoint)
from harness.core.checks import NotRun
from harness.core.pipeline import eager
from harness.core.run import run_cell
from harness.rows import collect
from harness.rows.cases import module_state


def _body(x):
    return torch.cos(torch.sin(torch.mm(x, x)))


def _region(ctx):
    def fn(x):
        return ctx.checkpoint(_body, x, use_reentrant=False).sum(0)

    return Program(fn, (ctx.randn(8, 8),))


CASE = Case("meta_region", _region, area="meta", axes=AxesSpec(devices="cpu"))


def _run(case: Case, **axes) -> object:
    eager.cache_clear()
    return run_cell(Cell(case, Axes(**axes)))


def test_composition_axis_ids_and_selection():
    """The default composition is absent from ids (today's cells keep theirs), every other one is appended; cells on
    the new axes are slow but for the case's fast_axes."""
    spec = AxesSpec(partitioners=Partitioner.MIN_CUT, backends=(Backend.AOT_EAGER, Backend.EAGER), devices="cpu",
                    compositions=(Composition.COMPILE_OUTSIDE, Composition.CHECKPOINT_OF_COMPILE),
                    compiled_autograd=(False, True))
    case = Case("probe", _region, axes=spec, area="meta",
                selection=Selection(fast_axes="min_cut-aot_eager-cpu-float32-checkpoint_of_compile"))
    ids = [a.id for a in collect.declared_axes(case, "cpu")]
    assert ids[:2] == ["min_cut-aot_eager-cpu-float32", "min_cut-eager-cpu-float32"], ids
    assert "min_cut-aot_eager-cpu-float32-compiled_autograd" in ids and \
        "min_cut-eager-cpu-float32-checkpoint_of_compile-compiled_autograd" in ids, ids
    assert len(ids) == 8, f"expected 2 compositions x 2 compiled-autograd x 2 backends, saw {ids}"
    new = [a for a in collect.declared_axes(case, "cpu") if collect.new_axis(a)]
    assert [a.id for a in new if a.id not in case.selection.fast_axes] and len(new) == 7, new


def test_ambient_axis_is_named_only_when_set():
    spec = AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cpu",
                    ambients=(AmbientState.NONE, AmbientState.SAVE_ON_CPU))
    ids = [a.id for a in collect.declared_axes(Case("probe", _region, axes=spec, area="meta"), "cpu")]
    assert ids == ["min_cut-aot_eager-cpu-float32", "min_cut-aot_eager-cpu-float32-save_on_cpu"], ids
    spec = AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cpu", ambients=tuple(AmbientState))
    ids = [a.id for a in collect.declared_axes(Case("probe", _region, axes=spec, area="meta"), "cpu")]
    assert [i.removeprefix("min_cut-aot_eager-cpu-float32") for i in ids] == [
        "", "-save_on_cpu", "-autocast_bf16", "-autocast_bf16_inside", "-autocast_bf16_both", "-no_grad",
        "-inference_mode"], ids


def test_autocast_inside_the_region_wraps_the_checkpointed_function_with_and_without_ac():
    """AUTOCAST_BF16_INSIDE: the region's matmul runs in bfloat16 (with AC, and in the no-AC reference), what follows
    the region does not; a module stays a module, wrapped once."""
    x = torch.randn(4, 4)
    for ac in (True, False):
        ctx = case_module.BuildContext("cpu", torch.float32, ac, ambient=AmbientState.AUTOCAST_BF16_INSIDE)
        out = ctx.checkpoint(torch.mm, x, x, use_reentrant=False)
        assert out.dtype == torch.bfloat16 and torch.mm(x, x).dtype == torch.float32, (ac, out.dtype)
        lin = torch.nn.Linear(4, 4)
        assert ctx.checkpoint(lin, x, use_reentrant=False).dtype == torch.bfloat16
        assert case_module.autocast_inside(lin, "cpu") is case_module.autocast_inside(lin, "cpu")
    plain = case_module.BuildContext("cpu", torch.float32, True, ambient=AmbientState.AUTOCAST_BF16)
    assert plain.checkpoint(torch.mm, x, x, use_reentrant=False).dtype == torch.float32, "outside only: not inside"


def _saving_under_no_grad(monkeypatch):
    """Break every checkpoint with AC: it re-enables grad around the region, so autograd records and saves under an
    ambient no_grad (the no-AC program stays right)."""
    real = case_module.composed_checkpoint

    def broken(*args, **kwargs):
        with torch.enable_grad():
            return real(*args, **kwargs)

    monkeypatch.setattr(case_module, "composed_checkpoint", broken)


def test_grad_disabled_oracle_fails_on_a_checkpoint_that_saves(monkeypatch):
    for ambient in (AmbientState.NO_GRAD, AmbientState.INFERENCE_MODE):
        good = _run(CASE, composition=Composition.CHECKPOINT_OF_COMPILE, ambient=ambient)
        assert oracles.grad_disabled_saves_nothing(good) == 1
    with pytest.raises(NotRun, match="grad is enabled"):
        oracles.grad_disabled_saves_nothing(_run(CASE, composition=Composition.CHECKPOINT_OF_COMPILE))
    _saving_under_no_grad(monkeypatch)
    bad = _run(CASE, composition=Composition.CHECKPOINT_OF_COMPILE, ambient=AmbientState.NO_GRAD)
    with pytest.raises(AssertionError, match="expected nothing saved for backward and no output requiring grad "
                                             "under no_grad.*compiled with AC: [1-9]"):
        oracles.grad_disabled_saves_nothing(bad)


def test_probe_copies_nested_input_tensors():
    """The probe's further calls take fresh copies of every input tensor, nested ones (a list, a dataclass) included:
    their backward must not accumulate into the gradients the run recorded (a dataclass input's did)."""
    x = torch.randn(2, 2, requires_grad=True)
    (copied,) = oracles._copies(([x],))
    assert copied[0] is not x and copied[0].requires_grad and torch.equal(copied[0], x), copied


def test_composed_checkpoint_rejects_context_fn_when_reentrant():
    with pytest.raises(ValueError, match="reentrant checkpoint takes no context_fn"):
        composed_checkpoint(Composition.CHECKPOINT_OF_COMPILE_REENTRANT, lambda f: f, _body, torch.ones(2, 2),
                            context_fn=lambda: None)


def test_eager_backend_graph_invariants_are_not_run_with_the_reason():
    run = _run(CASE, backend="eager")
    with pytest.raises(NotRun, match="Dynamo only"):
        invariants.must_save_not_recomputed(run)
    assert oracles.recompute_evidence(run) == 1 and oracles.saved_evidence(run) == 1 and oracles.no_recompile(run) == 2


def _not_recomputing(monkeypatch):
    """Break the compiled runs only: a composed checkpoint that, when it compiles, runs the compiled block without
    checkpointing (keeps every activation, recomputes nothing); the eager references stay right."""
    real = case_module.composed_checkpoint

    def broken(composition, compile, function, *args, **kwargs):
        block = compile(function)
        if block is function:
            return real(composition, compile, function, *args, **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k not in case_module._CHECKPOINT_KWARGS}
        return block(*args, **kwargs)

    monkeypatch.setattr(case_module, "composed_checkpoint", broken)


def test_recompute_and_saved_evidence_fail_on_a_region_that_is_not_checkpointed(monkeypatch):
    good = _run(CASE, composition=Composition.CHECKPOINT_OF_COMPILE)
    assert oracles.recompute_evidence(good) == 1 and oracles.saved_evidence(good) == 1
    _not_recomputing(monkeypatch)
    bad = _run(CASE, composition=Composition.CHECKPOINT_OF_COMPILE)
    with pytest.raises(AssertionError, match="the region was not recomputed"):
        oracles.recompute_evidence(bad)
    with pytest.raises(AssertionError, match="the region's activations were kept"):
        oracles.saved_evidence(bad)


_STATE = {"n": 0}


def _recompiling(ctx):
    def fn(x):
        _STATE["n"] += 1  # a Python global the graph specializes on: every call changes a guarded value
        return ctx.checkpoint(_body, x * _STATE["n"], use_reentrant=False).sum(0)

    return Program(fn, (ctx.randn(8, 8),))


def test_no_recompile_fails_on_a_program_that_recompiles():
    case = Case("meta_recompiling", _recompiling, area="meta", axes=AxesSpec(devices="cpu"),
                notes="numerics differ by design (the global changes between runs)")
    run = _run(case, backend="eager")
    with pytest.raises(AssertionError, match="expected no compile on a second identical call"):
        oracles.no_recompile(run)


def test_batchnorm_state_differences_are_reported_with_the_rule():
    """Eager AC updates BatchNorm's statistics twice (documented: the recompute re-invokes the forward): reported with
    the rule; compile(checkpoint(f)) updates them once: reported as a disagreement of the two AC pipelines."""
    (bn,) = [c for c in module_state.CASES if c.name == "state_batchnorm_training"]
    verdict = oracles.assert_state(_run(collect.axis_case(bn), composition=Composition.CHECKPOINT_OF_COMPILE))
    failed = dict(verdict.failed)
    assert set(failed) == {"eager_ac"} and verdict.passed == ("compiled",), verdict
    assert "re-invokes the region's forward" in failed["eager_ac"] and "num_batches_tracked: 2 vs 1" in \
        failed["eager_ac"], failed["eager_ac"]
    verdict = oracles.assert_state(_run(bn))
    failed = dict(verdict.failed)
    assert set(failed) == {"eager_ac", "compiled"}, verdict
    assert "compiled with AC vs eager with AC: buffer block.bn.num_batches_tracked: 1 vs 2" in failed["compiled"], \
        failed["compiled"]


def test_state_check_does_not_run_without_module_state():
    run = _run(CASE)
    assert oracles.mutated_state(run) == []
    with pytest.raises(NotRun, match="mutates no module state"):
        oracles.assert_state(run)


class _BatchNormBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.bn = torch.nn.BatchNorm1d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.lin(x)))


class _BatchNormModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([_BatchNormBlock(), _BatchNormBlock()])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def _bn_factory():
    return _BatchNormModel().train(), (torch.randn(4, 8, requires_grad=True),)


def test_user_path_reports_the_state_after_the_step():
    """Issue 31: a BatchNorm model in training mode under the user's full AC policy (checkpoint_wrapper per block) is
    no longer a PASS: eager AC updates the statistics twice (with the rule), compiled AC once (a disagreement); the
    wrapper's name prefix does not make the states incomparable."""
    from harness.user import conformance

    (result,) = conformance.run_case(conformance.user_case(_bn_factory, "full", backends=("aot_eager",)))
    failed = dict(result.failures)
    assert result.verdict == "wrong" and set(failed) == {"state:eager_ac", "state:compiled"}, result.failures
    assert "buffer layers.0.bn.num_batches_tracked: 2 vs 1" in failed["state:eager_ac"] and \
        "re-invokes the region's forward" in failed["state:eager_ac"], failed["state:eager_ac"]
    assert "_checkpoint_wrapped_module" not in result.message, result.message
