"""harness/core/peak.py on graphs whose peak is computable by hand.

Single graphs come from ``make_fx(..., tracing_mode="fake")`` (every node carries a FakeTensor in ``meta["val"]``);
forward/backward pairs from ``torch.compile`` through a small recording aot_autograd backend (the partitioner's fw and
bw graphs, as the harness records them).  Sizes: float32, so a [1024] tensor is 4096 bytes.
"""

from __future__ import annotations

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition
from torch.fx.experimental.proxy_tensor import make_fx

from harness.core.peak import estimate, graph_peak, torch_peak_memory

KB4 = 4096  # bytes of a float32 [1024]


def _fx(fn, *shapes):
    return make_fx(fn, tracing_mode="fake")(*(torch.randn(*s) for s in shapes))


def record(fn, *args, partition=default_partition):
    """Compile ``fn`` with aot_autograd, keep the fw and bw GraphModules the partitioner produced, run fw + bw."""
    graphs = {}

    def keep(kind):
        def compiler(gm, _example_inputs):
            graphs[kind] = gm
            return gm.forward

        return compiler

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=partition)
    torch.compile(fn, backend=backend, fullgraph=True)(*args).sum().backward()
    return graphs["fw"], graphs["bw"]


def test_chain_keeps_two_tensors_alive():
    """sin -> cos -> exp on [1024]: the input is free; each op allocates 4 KiB while its input is still live, and the
    input dies after it: peak = 2 tensors = 8192."""
    gm = _fx(lambda x: x.sin().cos().exp(), (1024,))
    assert graph_peak(gm) == 2 * KB4, f"expected 8192 (two live [1024] f32), saw {graph_peak(gm)}\n{gm.code}"


def test_view_keeps_its_base_alive_and_costs_nothing():
    """y = sin(x) (4096); v = y[::2] is a view (0 bytes, keeps y's storage); v * 2 allocates 512 floats (2048) while
    y is alive through v: peak = 4096 + 2048."""
    gm = _fx(lambda x: x.sin()[::2] * 2, (1024,))
    assert graph_peak(gm) == KB4 + 2048, f"expected 6144 (base + half-size result), saw {graph_peak(gm)}\n{gm.code}"


def test_multi_output_op_and_getitem():
    """sin of [4, 256] (4096); max(dim=0) allocates values f32[256] (1024) and indices i64[256] (2048) at once;
    the getitems alias them: peak = 4096 + 1024 + 2048 at the max."""
    gm = _fx(lambda x: torch.max(x.sin(), dim=0)[0] + 1, (4, 256))
    assert graph_peak(gm) == KB4 + 1024 + 2048, f"expected 7168, saw {graph_peak(gm)}\n{gm.code}"


def test_view_of_an_input_is_free():
    """x.t() aliases the input (0 bytes); only the product is allocated: peak = 16 * 64 * 4 = 4096."""
    gm = _fx(lambda x: x.t() * 2, (16, 64))
    assert graph_peak(gm) == KB4, f"expected 4096 (only t(x) * 2), saw {graph_peak(gm)}\n{gm.code}"


def _sin_sin(x):
    return torch.sin(torch.sin(x))


def test_fw_bw_default_partition_saves_the_intermediate():
    """default_partition on sin(sin(x)), x [1024]: fw = ``sin = sin(x); sin_1 = sin(sin)``, returns (sin_1, x, sin):
    saved = [x (an input: 0 bytes), sin (4096)].  fw peak: sin + sin_1 = 8192.  After fw, sin_1 goes to the caller,
    sin stays.  bw: ``cos = cos(sin)`` 8192, sin dies; ``mul = tangents * cos`` 8192, cos dies; ``cos_1 = cos(x)``
    8192; ``mul_1 = mul * cos_1`` 12288 (mul, cos_1, mul_1): peak 12288 in bw at mul_1."""
    x = torch.randn(1024, requires_grad=True)
    fw, bw = record(_sin_sin, x, partition=default_partition)
    e = estimate(fw, bw)
    seen = (e.saved_bytes, e.fw_peak_bytes, e.bw_peak_bytes, e.peak_bytes, e.phase, e.at)
    assert seen == (KB4, 2 * KB4, 3 * KB4, 3 * KB4, "bw", "mul_1"), (
        f"expected (saved 4096, fw 8192, bw 12288, peak 12288, 'bw', 'mul_1'), saw {seen}\n{fw.code}\n{bw.code}"
    )
    assert sorted(e.saved) == ["primals_1", "sin"], f"expected saved [primals_1, sin], saw {e.saved}"


def test_gradients_handed_to_the_caller_unless_kept():
    """sin(x) + cos(y), x and y [1024], min_cut: the backward computes grad_x = tangents * cos(x), then
    grad_y = tangents * -sin(y).  By default a gradient is released after its last use in the graph (the autograd
    engine takes it), so the bw peak is two tensors (8192); with keep_outputs=True grad_x is still live while grad_y
    is computed from two temporaries: 12288."""
    x = torch.randn(1024, requires_grad=True)
    y = torch.randn(1024, requires_grad=True)
    fw, bw = record(lambda a, b: torch.sin(a) + torch.cos(b), x, y, partition=min_cut_rematerialization_partition)
    default, kept = estimate(fw, bw), estimate(fw, bw, keep_outputs=True)
    seen = (default.bw_peak_bytes, kept.bw_peak_bytes)
    assert seen == (2 * KB4, 3 * KB4), f"expected bw peaks (8192, 12288), saw {seen}\n{bw.code}"


def test_fw_bw_min_cut_recomputes_and_saves_only_the_input():
    """min_cut on sin(sin(x)): recomputing sin(x) is cheaper than saving it, so saved = [x] only (0 activation
    bytes).  fw peak 8192 (sin, sin_1); bw: sin (recomputed) 4096, cos 8192, mul 8192, cos_1 8192, mul_1 12288."""
    x = torch.randn(1024, requires_grad=True)
    fw, bw = record(_sin_sin, x, partition=min_cut_rematerialization_partition)
    e = estimate(fw, bw)
    seen = (e.saved, e.saved_bytes, e.saved_input_bytes, e.fw_peak_bytes, e.bw_peak_bytes)
    assert seen == (["primals_1"], 0, KB4, 2 * KB4, 3 * KB4), (
        f"expected (['primals_1'], 0, 4096, 8192, 12288), saw {seen}\n{fw.code}\n{bw.code}"
    )


def test_saved_transposed_weight_is_an_input():
    """Linear without bias, x [32, 32], W [32, 32] (4096 B each): the backward needs x and W (or t(W)), both graph
    inputs or views of them: 0 saved activation bytes, and their bytes are reported as saved_input_bytes."""
    x = torch.randn(32, 32, requires_grad=True)
    w = torch.randn(32, 32, requires_grad=True)
    fw, bw = record(lambda a, b: a @ b.t(), x, w, partition=min_cut_rematerialization_partition)
    e = estimate(fw, bw)
    assert e.saved_bytes == 0, f"expected 0 saved activation bytes (only inputs saved), saw {e.describe()}\n{bw.code}"
    assert e.saved_input_bytes == 2 * KB4, (
        f"expected saved_input_bytes 8192 (x and W), saw {e.saved_input_bytes} (saved {e.saved})\n{bw.code}"
    )


def test_checkpoint_saves_less_than_no_checkpoint():
    """Two relu(linear) layers on [64, 64] under torch.utils.checkpoint (non-reentrant) and min_cut: the recompute tags
    make the partitioner save fewer activation bytes than without AC, and the estimate sees that (saved bytes strictly
    smaller; the fw peak cannot grow)."""
    w1 = torch.randn(64, 64, requires_grad=True)
    w2 = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(64, 64, requires_grad=True)

    def body(a):
        return torch.relu(torch.relu(a @ w1) @ w2).sin()

    plain = estimate(*record(body, x, partition=min_cut_rematerialization_partition))
    ac = estimate(*record(lambda a: torch.utils.checkpoint.checkpoint(body, a, use_reentrant=False), x,
                          partition=min_cut_rematerialization_partition))
    assert ac.saved_bytes < plain.saved_bytes, (
        f"expected AC to save fewer activation bytes than no AC, saw AC {ac.describe()} vs no AC {plain.describe()}"
    )
    assert ac.fw_peak_bytes <= plain.fw_peak_bytes, (
        f"expected AC fw peak <= no-AC fw peak, saw {ac.fw_peak_bytes} vs {plain.fw_peak_bytes}"
    )


def test_torch_estimator_counts_a_superset():
    """torch's memory_estimator.get_peak_memory logic (run by torch_peak_memory with the CPU filter lifted) counts
    primals and tangents, never releases primal storages and keeps user outputs through the backward; it releases
    other storages after their last use like ours, so its peak is >= ours.  On sin(sin(x)) under default_partition:
    fw = x, sin, sin_1 (12288); bw = baseline sin_1 (4096) + placeholders x, sin, tangents (12288) + cos, mul, cos_1,
    mul_1 as they come."""
    x = torch.randn(1024, requires_grad=True)
    fw, bw = record(_sin_sin, x, partition=default_partition)
    ours = estimate(fw, bw).peak_bytes
    theirs = torch_peak_memory(fw, bw)
    assert theirs is not None, "expected torch._inductor.fx_passes.memory_estimator in torch 2.13"
    assert theirs >= ours, f"expected torch's estimate (inputs included) >= ours, saw torch {theirs} vs ours {ours}"
