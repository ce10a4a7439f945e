"""The case row's groups (harness/core/case.py): their rules hold at construction, the area comes from the module."""

from __future__ import annotations

import pytest

from harness.core.case import (STANDARD_BACKENDS, AxesSpec, Backend, Case, Checkpoint, CompileSpec, Expect, Need, Numerics, Partitioner,
                              Requires, Runner)
from harness.rows.cases import all_cases
from harness.rows.collect import declared_axes


def _build(ctx):
    raise AssertionError("not built")


def test_shape_only_numerics_need_a_reason():
    with pytest.raises(ValueError, match="shape numerics need a reason"):
        Numerics("shape")
    with pytest.raises(ValueError, match="none numerics need a reason"):
        Numerics("none")
    assert Numerics.shape_only("random ops").reason == "random ops"


def test_a_requirement_needs_its_reason_and_its_argument():
    with pytest.raises(ValueError, match="a reason is required"):
        Requires.cuda("")
    with pytest.raises(ValueError, match="argument"):
        Requires.api("", "why")
    assert Requires.api("torch.no_such_api", "why").unmet("cpu") == (
        "needs torch.no_such_api, missing in torch " + __import__("torch").__version__ + ": why")
    assert Requires.cuda("fused kernels").unmet("cpu") == "CUDA-only: fused kernels (runs under make test-cuda)"
    assert Requires.cuda("fused kernels").unmet("cuda") is None
    assert Requires.torch_at_least("2.14", "why").label == "torch>=2.14"


def test_strings_become_enum_members_and_single_values_tuples():
    axes = AxesSpec(partitioners="min_cut", backends=Backend.INDUCTOR, devices="cpu")
    assert axes.partitioners == (Partitioner.MIN_CUT,) and axes.backends == (Backend.INDUCTOR,)
    assert axes.devices == ("cpu",)
    case = Case("probe", _build, checkpoint="sac", requires=Requires.cuda("why"))
    assert case.checkpoint is Checkpoint.SAC and case.requires == (Requires.cuda("why"),) and case.needs(Need.CUDA)
    assert case.runner is Runner.STANDARD and Case("probe", _build, runner="export").runner is Runner.EXPORT
    with pytest.raises(ValueError):
        Case("probe", _build, runner="custom")
    with pytest.raises(ValueError):
        AxesSpec(partitioners="min-cut")
    with pytest.raises(ValueError, match="unknown dtypes"):
        AxesSpec(dtypes="float64")
    with pytest.raises(ValueError, match="unknown config namespace"):
        CompileSpec(config={"dynamo_": {}})


def test_inductor_cells_are_min_cut_only():
    case = Case("probe", _build, axes=AxesSpec(backends=STANDARD_BACKENDS))
    assert [a.id for a in declared_axes(case, "cpu")] == ["min_cut-aot_eager-cpu-float32", "default-aot_eager-cpu-float32",
                                                     "min_cut-inductor-cpu-float32"]
    assert declared_axes(case, "cuda") and not declared_axes(Case("probe", _build, axes=AxesSpec(devices="cpu")), "cuda")


def test_expect_resolves_callable_op_counts_per_axes():
    expect = Expect(lambda axes: {"bw": {"aten.mul.Tensor": 3 if axes.partitioner == "default" else 2}},
                    counters={"graphs": 1})
    (cell,) = declared_axes(Case("probe", _build, axes=AxesSpec(partitioners="default", devices="cpu")), "cpu")
    assert expect.op_counts(cell) == ({"bw": {"aten.mul.Tensor": 3}}, {})


def test_every_case_carries_its_module_as_its_area():
    import sys

    for case in all_cases():
        module = sys.modules[f"harness.rows.cases.{case.area}"]
        assert any(c.name == case.name for c in module.CASES), f"{case.name}: area {case.area!r} is not its module"
