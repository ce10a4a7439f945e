"""Emulated user-Triton-kernel cells on CPU (issue 27 item 6, harness/core/triton_emulation.py): their launches really
run in Triton's interpreter, only while a cell runs, and a compiled graph that launches the wrong kernel fails the
numerics check.  Skipped, with the reason, where triton is not installed (`make install` installs it)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (make install installs the `triton` extra)")
import triton.language as tl  # noqa: E402
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from harness.core.case import Axes, AxesSpec, Case, Cell, Emulation, Needs  # noqa: E402
from harness.core.checks import assert_numerics  # noqa: E402
from harness.core.pipeline import config_patches, eager, execute  # noqa: E402
from harness.core.run import run_cell  # noqa: E402
from harness.core.triton_emulation import interpreted_launches  # noqa: E402
from harness.rows import collect  # noqa: E402
from harness.rows.cases import triton_kernel  # noqa: E402
from harness.rows.cases import all_cases  # noqa: E402

FAST_ID = "min_cut-aot_eager-cpu-float32-triton_interpreted"


@triton.jit
def add_two_kernel(in_ptr0, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """The wrong kernel: add_one_kernel's signature, x + 2."""
    pid = tl.program_id(axis=0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(in_ptr0 + offsets, mask=mask)
    tl.store(out_ptr + offsets, x + 2, mask=mask)


def _case(name):
    return next(c for c in all_cases() if c.name == name)


def _fast_cell(name="sac_user_triton_kernel_in_autograd_function") -> Cell:
    case = _case(name)
    (cell,) = [c for c in collect.declared_cells(case, "cpu") if c.axes.id == FAST_ID]
    return cell


def _state():
    import torch.utils._triton as torch_triton
    from triton.runtime import driver

    return torch_triton.has_triton, JITFunction.run, driver._active


def test_cells_are_emulated_on_cpu_only_and_say_so():
    """On CPU every cell of the triton cases is emulated, named so and never inductor; on CUDA none is."""
    for case in (_case("sac_user_triton_kernel_in_autograd_function"), _case("sac_user_triton_kernel_triton_op")):
        cpu = collect.case_cells(case, "cpu")
        cuda = collect.case_cells(case, "cuda")
        assert cpu and all(c.axes.emulation == Emulation.TRITON_INTERPRETER and c.id.endswith("-triton_interpreted")
                           and c.axes.backend != "inductor" for c in cpu), [c.id for c in cpu]
        assert cuda and not any(c.axes.emulation for c in cuda), [c.id for c in cuda]
        assert {"min_cut-aot_eager-cuda-float32", "min_cut-inductor-cuda-float32"} <= {c.axes.id for c in cuda}, \
            f"expected the CUDA cells unchanged (aot_eager and inductor, real), saw {[c.id for c in cuda]}"
    fast = [c.cell.id for c in collect.collect("triton_kernel", "cpu") if not c.slow and not c.skip]
    assert sorted(fast) == [f"sac_user_triton_kernel_in_autograd_function-{FAST_ID}",
                            f"sac_user_triton_kernel_triton_op-{FAST_ID}"], f"expected 2 fast emulated cells, saw {fast}"


def test_a_triton_case_off_cuda_must_declare_the_emulation():
    with pytest.raises(ValueError, match="runs off CUDA only emulated"):
        Case("probe", triton_kernel.sac_triton_kernel(triton_kernel._add_one_function), area="meta",
                           requires=triton_kernel.NEEDS_TRITON, axes=AxesSpec(devices="cpu"))


def test_launches_run_in_the_interpreter_only_inside_the_cell():
    """Eager without AC launches the kernel once; eager with AC twice (the region's forward again in backward); the
    compiled program twice (the forward graph, and the backward graph's recompute: the SAC policy saves only mm).
    Each launch is an InterpretedFunction run; after the cell the stock launch path is back, which has no driver on
    this machine, so launching the kernel raises."""
    cell = _fast_cell()
    before = _state()
    runs = mock.patch.object(InterpretedFunction, "run", autospec=True, side_effect=InterpretedFunction.run)
    with runs as interpreted, interpreted_launches() as launches:
        with config_patches(cell.case, cell.axes):
            execute(cell.case, cell.axes, ac=False)
            after_no_ac = list(launches.names)
            execute(cell.case, cell.axes, ac=True)
            after_eager = list(launches.names)
            torch._dynamo.reset()
            execute(cell.case, cell.axes, ac=True, backend="aot_eager")
    assert after_no_ac == ["add_one_kernel"], f"eager without AC: expected 1 launch, saw {after_no_ac}"
    assert after_eager == ["add_one_kernel"] * 3, f"eager with AC: expected 2 more launches, saw {after_eager}"
    assert launches.names == ["add_one_kernel"] * 5, f"compiled: expected 2 more launches, saw {launches.names}"
    assert interpreted.call_count == 5, f"expected every launch run by the interpreter, saw {interpreted.call_count}"
    assert _state() == before, f"expected has_triton, JITFunction.run and the driver restored, saw {_state()}"
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match="active drivers"):
        triton_kernel.add_one_kernel[(4,)](x, torch.empty_like(x), 4, BLOCK_SIZE=4)


@pytest.mark.parametrize("name", ["sac_user_triton_kernel_in_autograd_function", "sac_user_triton_kernel_triton_op"])
def test_a_compiled_graph_that_launches_a_wrong_kernel_fails_numerics(name):
    """The compiled graphs look their kernel up in torch's kernel side table when they launch it
    (triton_kernel_wrapper_mutation_dense); handing them x + 2 instead of x + 1 while eager launches the real kernel
    must fail the numerics check, and the same cell unbroken passes it."""
    cell = _fast_cell(name)
    eager.cache_clear()
    assert assert_numerics(run_cell(cell, Needs())) > 0
    real = kernel_side_table.get_kernel
    with mock.patch.object(kernel_side_table, "get_kernel", lambda idx: add_two_kernel if real(idx) is
                           triton_kernel.add_one_kernel else real(idx)):
        run = run_cell(cell, Needs())
    with pytest.raises(AssertionError, match="compiled vs eager with AC: output"):
        assert_numerics(run)


def test_axes_id_names_the_emulation_last():
    assert Axes(emulation="triton_interpreted", budget=0.5).id == "min_cut-aot_eager-cpu-float32-budget0.5-triton_interpreted"
