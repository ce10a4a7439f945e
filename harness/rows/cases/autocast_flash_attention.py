"""Area "autocast_flash_attention": attention inside a checkpointed region, under autocast and through inductor's
SDPA pattern matcher (CATALOGUE.md items 33, 36).

* Item 33 (CUDA): ``aten._scaled_dot_product_efficient_attention`` called directly, checkpointed (reentrant), run
  under ``torch.autocast`` entered *outside* the compiled function, with the inductor decompositions and min-cut
  (upstream's ``aot_eager_decomp_partition``), not fullgraph, forward only.  CPU analogues: a hand-written attention
  softmax(q·kᵀ/√d)·v with dropout, and ``F.scaled_dot_product_attention``, each checkpointed under
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` on float32 inputs, forward and backward.
* Item 36: the hand-written attention applied to (q.sin(), k, v) under inductor: the joint-graph pattern matcher
  fuses it into one SDPA op whose recompute tag percolates, so fw has 1 fused op, bw recomputes it (1) and does not
  recompute the sin (0).  Which fused op is device-dependent: on CUDA ``_scaled_dot_product_cudnn_attention`` when
  cuDNN > 9.15.00 on a capability 9.0/9.3/10.0/10.3 device, else ``_scaled_dot_product_flash_attention``; on CPU
  ``_scaled_dot_product_flash_attention_for_cpu``."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from harness.core.case import (STANDARD_BACKENDS, DTYPES, Ambient, AxesSpec, Backend, BuildContext, Case, Checkpoint, CompileSpec,
                              Decompositions, Expect, Numerics, Partitioner, Program, Requires)
from harness.core.checks import AUTOCAST_TOLERANCE, count_of, expect_equal

aten = torch.ops.aten
SIN = "aten.sin.default"
EFFICIENT = "aten._scaled_dot_product_efficient_attention.default"
EFFICIENT_BW = "aten._scaled_dot_product_efficient_attention_backward.default"
FLASH_CPU = "aten._scaled_dot_product_flash_attention_for_cpu.default"
FLASH_CPU_BW = "aten._scaled_dot_product_flash_attention_for_cpu_backward.default"
BMM = "aten.bmm.default"
SCALE = 0.17677669529663687  # 1/sqrt(32), the head dim
SHAPE = (4, 2, 16, 32)  # batch, heads, sequence, head dim


def expected_fused_sdpa(device: str) -> str:
    """The op inductor's SDPA pattern replaces a hand-written attention with (upstream test_pattern_matcher's rule)."""
    if device == "cpu":
        return FLASH_CPU
    major, minor = torch.cuda.get_device_capability()
    cudnn = torch.backends.cudnn.version() or 0
    if torch.version.cuda and cudnn > 91500 and major in (9, 10) and minor in (0, 3):
        return "aten._scaled_dot_product_cudnn_attention.default"
    return "aten._scaled_dot_product_flash_attention.default"


def _qkv(ctx: BuildContext) -> tuple:
    return tuple(ctx.randn(*SHAPE) for _ in range(3))


# --- programs ----------------------------------------------------------------------------------------------------

def efficient_attention(ctx: BuildContext) -> Program:
    def body(q, k, v):
        return aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=SCALE)[0]

    def fn(q, k, v):
        return ctx.checkpoint(body, q, k, v, use_reentrant=True)

    return Program(fn, _qkv(ctx))


def _attention(q, k, v, dropout_p=0.0):
    weights = torch.matmul(q, k.transpose(-2, -1)).mul(1.0 / math.sqrt(q.shape[-1])).softmax(dim=-1)
    if dropout_p:
        weights = F.dropout(weights, dropout_p, training=True)
    return weights.matmul(v)


def hand_written_attention(dropout_p: float = 0.0):
    def build(ctx: BuildContext) -> Program:
        def fn(q, k, v):
            return ctx.checkpoint(_attention, q.sin(), k, v, dropout_p, use_reentrant=True)

        return Program(fn, _qkv(ctx))

    return build


def sdpa(ctx: BuildContext) -> Program:
    def fn(q, k, v):
        return ctx.checkpoint(F.scaled_dot_product_attention, q.sin(), k, v, use_reentrant=True)

    return Program(fn, _qkv(ctx))


# --- under autocast -----------------------------------------------------------------------------------------

def autocast_output_dtype(op: str, device: str, low: torch.dtype, inputs: torch.dtype) -> torch.dtype:
    """The dtype autocast gives ``op``'s output: its lower-precision dtype when the op has an Autocast<Device> kernel
    (it is in autocast's lower-precision list), else the inputs' dtype.  ``_scaled_dot_product_efficient_attention``
    has no AutocastCUDA kernel in torch 2.13 (only the public ``scaled_dot_product_attention`` has), so called
    directly on float32 inputs it runs and returns float32."""
    key = "AutocastCUDA" if device == "cuda" else "AutocastCPU"
    return low if torch._C._dispatch_has_kernel_for_dispatch_key(op, key) else inputs


def output_dtype_check(dtype: str, out_op: str):
    """Check: the compiled output has the dtype autocast gives ``out_op`` (the op that produces it)."""
    def check(run) -> None:
        axes = run.cell.axes
        want = autocast_output_dtype(out_op, axes.device, DTYPES[dtype], torch.float32)
        expect_equal(f"{run.cell.case.name}: dtype of the attention output ({out_op} under autocast)",
                     run.compiled.outputs[0].dtype, want)
    return check


def autocast_case(name: str, build, dtype: str, out_op: str = "aten::matmul", **kwargs) -> Case:
    """A case whose every run (eager with and without AC, the compile, its baselines) is under
    ``torch.autocast(<cell device>, dtype)`` entered outside the compiled function, as upstream does."""
    expect = kwargs.pop("expect", Expect())
    return Case(name, build, ambient=Ambient(autocast=dtype), numerics=Numerics(tolerance=AUTOCAST_TOLERANCE),
                expect=dataclasses.replace(expect, check=output_dtype_check(dtype, out_op)), **kwargs)


# --- checks ------------------------------------------------------------------------------------------------------

def _fused_sdpa_recomputed_not_sin(run) -> None:
    """Item 36's facts: one fused SDPA op in fw, recomputed once in bw, and no sin recomputed in bw."""
    __tracebackhide__ = True
    if run.cell.axes.backend != "inductor":
        return  # the SDPA pattern is an inductor joint-graph pass (the slow matrix also runs aot_eager cells)
    op = expected_fused_sdpa(run.cell.axes.device)
    problems = [f"{kind} graph: expected {want} of {op}, saw {count_of(run, kind, op)}"
                for kind, want in (("fw", 1), ("bw", 1)) if count_of(run, kind, op) != want]
    if count_of(run, "bw", SIN):
        problems.append(f"bw graph: expected no {SIN} (the tags percolate to the fused op, sin is saved), "
                        f"saw {count_of(run, 'bw', SIN)}")
    if problems:
        raise AssertionError(f"{run.cell.id}: SDPA pattern-matcher facts do not hold:\n  " + "\n  ".join(problems)
                             + f"\n--- fw ---\n{run.texts.get('fw')}\n--- bw ---\n{run.texts.get('bw')}")


EFFICIENT_ONLY_CUDA = AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cuda")
EFFICIENT_KERNEL = Requires.cuda("aten._scaled_dot_product_efficient_attention has no CPU kernel")
CPU_BOTH_BACKENDS = AxesSpec(backends=STANDARD_BACKENDS, devices="cpu")

CASES = [
    autocast_case("autocast_efficient_attention", efficient_attention, "float16", catalogue=(33,),
                  checkpoint=Checkpoint.REENTRANT,
                  out_op="aten::_scaled_dot_product_efficient_attention",
                  axes=EFFICIENT_ONLY_CUDA, requires=EFFICIENT_KERNEL,
                  compile=CompileSpec(decompositions=Decompositions.INDUCTOR, fullgraph=False, backward=False),
                  expect=Expect({"fw": {EFFICIENT: 1}})),
    autocast_case("autocast_efficient_attention_backward", efficient_attention, "float16", catalogue=(33,),
                  out_op="aten::_scaled_dot_product_efficient_attention",
                  checkpoint=Checkpoint.REENTRANT, axes=EFFICIENT_ONLY_CUDA, requires=EFFICIENT_KERNEL,
                  compile=CompileSpec(decompositions=Decompositions.INDUCTOR, fullgraph=False),
                  expect=Expect({"fw": {EFFICIENT: 1}, "bw": {EFFICIENT: 1, EFFICIENT_BW: 1}}),
                  notes="beyond upstream (forward only): the backward recomputes the attention"),
    autocast_case("autocast_bf16_attention_dropout_cpu", hand_written_attention(dropout_p=0.2), "bfloat16",
                  catalogue=(33,), checkpoint=Checkpoint.REENTRANT, axes=CPU_BOTH_BACKENDS,
                  compile=CompileSpec(config={"inductor": {"fallback_random": True}}),
                  expect=Expect({"fw": {BMM: 2}, "bw": {BMM: 5}}),
                  notes="CPU analogue of item 33: bf16 autocast around a checkpointed hand-written attention with "
                        "dropout; fallback_random keeps inductor's dropout on eager's stream, so numerics are exact"),
    autocast_case("autocast_bf16_sdpa_cpu", sdpa, "bfloat16", catalogue=(33,), checkpoint=Checkpoint.REENTRANT,
                  out_op="aten::scaled_dot_product_attention",
                  axes=CPU_BOTH_BACKENDS,
                  expect=Expect({"fw": {FLASH_CPU: 1}, "bw": {FLASH_CPU: 1, FLASH_CPU_BW: 1}}),
                  notes="CPU analogue of item 33 through the public SDPA entry point"),
    Case("sdpa_pattern_matcher", hand_written_attention(), catalogue=(36,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(backends=Backend.INDUCTOR, dtypes="float16", devices="cuda"),
         expect=Expect(check=_fused_sdpa_recomputed_not_sin),
         # inductor replaces the hand-written fp16 attention by a fused SDPA kernel (a different algorithm: online
         # softmax in fp32), so it is compared with eager's op-by-op fp16 result at fp16's resolution, not 1e-5 atol
         numerics=Numerics(tolerance=(1e-3, 1e-2)),
         requires=Requires.cuda("fused SDPA kernels and the cuDNN/capability rule are CUDA's")),
    Case("sdpa_pattern_matcher_cpu", hand_written_attention(), catalogue=(36,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(backends=Backend.INDUCTOR, devices="cpu"), expect=Expect(check=_fused_sdpa_recomputed_not_sin),
         notes="CPU analogue of item 36 in float32: the pattern fuses into the CPU flash-attention op"),
]
