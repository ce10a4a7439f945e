"""The export cells (issue 27 item 5, Runner.EXPORTED_PROGRAM): their axis and ids, and that their verdict fails on an
exported program that does not differentiate like eager (a synthetic one whose gradient is wrong), naming AC only
when the same program exported without AC differentiates right."""

from __future__ import annotations

import types

import pytest
import torch

from harness.core import attribution, runners
from harness.core.case import EXPORT_MODES, AxesSpec, Case, Cell, ExportMode, Runner, no_checkpoint
from harness.core.checks import assert_numerics
from harness.core.run import run_cell
from harness.rows import collect
from harness.rows.cases import find_case

CELL = "exported_gemm_non_reentrant-non_strict_export-cpu-float32"


def test_export_axis_ids_and_selection():
    """Every exported row is crossed with both export modes (ids ``<case>-<mode>_export-<device>-<dtype>``: no
    partitioner or backend, nothing is compiled); all are slow but the fast_axes the row names; the export axis is
    that runner's alone."""
    cells = [c for c in collect.collect("export", "cpu") if c.cell.case.runner is Runner.EXPORTED_PROGRAM]
    ids = [c.id for c in cells]
    assert len(ids) == 12 == len(set(ids)), ids
    assert {i.split("-")[1] for i in ids} == {"strict_export", "non_strict_export"}, ids
    assert CELL in ids, ids
    fast = sorted(c.id for c in cells if not c.slow)
    assert fast == ["exported_gemm_non_reentrant-non_strict_export-cpu-float32",
                    "exported_gemm_reentrant-non_strict_export-cpu-float32",
                    "exported_gemm_sac-strict_export-cpu-float32"], fast
    build = find_case("exported_gemm_sac").build
    with pytest.raises(ValueError, match="export axis"):
        Case("meta_standard_exported", build, axes=AxesSpec(exports=tuple(ExportMode)))
    with pytest.raises(ValueError, match="export axis"):
        Case("meta_exported_no_mode", build, runner=Runner.EXPORTED_PROGRAM)
    with pytest.raises(ValueError, match="export axis"):
        Case("meta_exported_two_partitioners", build, runner=Runner.EXPORTED_PROGRAM,
             axes=AxesSpec(exports=tuple(ExportMode)))
    assert Case("meta_exported", build, runner=Runner.EXPORTED_PROGRAM, axes=EXPORT_MODES).axes.exports == (
        ExportMode.STRICT, ExportMode.NON_STRICT)


class _HalfGradient(torch.autograd.Function):
    """Identity forward, half the gradient backward: an exported program that differentiates wrongly."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.5


def _broken_export(monkeypatch, *, with_ac: bool, without_ac: bool):
    """Make ``runners.export_program`` return the real exported program whose module halves the gradient, for the
    program with AC and/or without it."""
    real = runners.export_program

    def export_program(prog, mode):
        ep = real(prog, mode)
        ac = prog.module.checkpoint is not no_checkpoint
        if not (with_ac if ac else without_ac):
            return ep
        module = ep.module()
        return types.SimpleNamespace(graph_module=ep.graph_module,
                                     module=lambda: (lambda *a, **k: _HalfGradient.apply(module(*a, **k))))

    monkeypatch.setattr(runners, "export_program", export_program)


def _numerics_failures(run) -> list[tuple[str, str]]:
    try:
        assert_numerics(run)
    except AssertionError as e:
        return attribution.attribute(run, [("numerics", str(e))])
    return []


def _cell() -> Cell:
    return next(c.cell for c in collect.collect("export", "cpu") if c.id == CELL)


def test_unbroken_exported_program_passes():
    run = run_cell(_cell())
    assert _numerics_failures(run) == [], "expected the exported non-reentrant checkpoint to differentiate like eager"
    assert run.compiled.grads.keys() == {"input[0]", "param w"}, run.compiled.grads.keys()
    assert "exported" in run.texts and "aten.sin.default" in run.texts["exported"], run.texts


def test_wrong_gradient_with_ac_is_an_ac_defect(monkeypatch):
    _broken_export(monkeypatch, with_ac=True, without_ac=False)
    failed = _numerics_failures(run_cell(_cell()))
    assert [s for s, _ in failed] == ["numerics"], failed
    msg = failed[0][1]
    for part in ("exported vs eager with AC: grad of input[0]: max abs error",
                 "exported vs eager without AC: grad of param w: max abs error",
                 "attribution: exported without AC vs eager without AC matches on", "the difference comes with AC"):
        assert part in msg, f"expected {part!r} in the verdict, saw:\n{msg}"


def test_wrong_gradient_without_ac_too_is_not_an_ac_defect(monkeypatch):
    _broken_export(monkeypatch, with_ac=True, without_ac=True)
    failed = _numerics_failures(run_cell(_cell()))
    assert [s for s, _ in failed] == [attribution.BACKEND_STAGE], failed
    msg = failed[0][1]
    for part in ("not an AC defect", "the same program non_strict-exported without AC differs from it the same way",
                 "exported without AC vs eager without AC: max abs error"):
        assert part in msg, f"expected {part!r} in the verdict, saw:\n{msg}"


def test_export_failing_without_ac_is_not_blamed_on_ac(monkeypatch):
    """An export that fails without AC too fails the run saying so (export's defect, not AC's)."""
    real = runners.export_program

    def export_program(prog, mode):
        if prog.module.checkpoint is no_checkpoint:
            raise RuntimeError("synthetic export failure")
        return real(prog, mode)

    monkeypatch.setattr(runners, "export_program", export_program)
    with pytest.raises(RuntimeError, match=r"non_strict export of the program without AC fails too \(an export "
                                           r"defect, not AC's\): RuntimeError: synthetic export failure"):
        run_cell(_cell())


def _oracle_verdict(cell_id: str):
    from harness.core import oracles
    from harness.core.checks import NotRun

    cell = next(c.cell for c in collect.collect("export", "cpu") if c.id == cell_id)
    try:
        return oracles.exported_checkpoints_like_eager(run_cell(cell))
    except (AssertionError, NotRun) as e:
        return e


def test_strict_export_checkpoints_like_eager_and_a_lost_policy_fails(monkeypatch):
    """oracles.exported_checkpoints_like_eager: the strictly exported SAC program saves and recomputes what eager SAC
    does; with the kit's fault that drops the region's context_fn in pre-dispatch tracing (the policy lost, its mm
    recomputed) the oracle fails; on a non-strict export it is reported as not run, with its reason."""
    from test_contract_meta import _kit

    from harness.core.checks import NotRun

    strict = "exported_gemm_sac-strict_export-cpu-float32"
    assert _oracle_verdict(strict) == 1, "expected the strict export of the SAC program to checkpoint like eager"
    not_run = _oracle_verdict("exported_gemm_sac-non_strict_export-cpu-float32")
    assert isinstance(not_run, NotRun) and "traces through" in str(not_run), f"expected not run, saw {not_run!r}"
    _kit("hop-pre-dispatch-drops-context-fn")(monkeypatch)
    broken = _oracle_verdict(strict)
    assert isinstance(broken, AssertionError) and "checkpoints differently" in str(broken), (
        f"expected the oracle to fail on the exported program that lost its policy, saw {broken!r}")
