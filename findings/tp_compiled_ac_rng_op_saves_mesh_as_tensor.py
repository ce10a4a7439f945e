"""Tensor parallel + activation checkpointing + torch.compile: the compiled forward fails in AOTAutograd's
save_from_forward when the checkpointed region contains an RNG op (SDPA).  The DeviceMesh ends up among the saved
tensors.

With DTensor parameters (``parallelize_module`` with ColwiseParallel/RowwiseParallel) the DeviceMesh is an opaque graph
input (torch/distributed/device_mesh.py::_register_distributed_opaque_types).  The partitioner saves it for the backward
(the backward rebuilds the DTensor gradients on it).  torch/_functorch/partitioners.py::_extract_fwd_bwd_modules orders
the forward outputs as (outputs, saved tensors, saved opaque objects, saved opaque nodes, saved symints).  If the
checkpointed region contains a recomputed op tagged ``nondeterministic_seeded``, partitioners.py::functionalize_rng_ops
then adds each RNG-state tensor at ``len(fw_outputs) - num_sym_nodes``, which is *after* the opaque DeviceMesh.  Here
the op is ``aten._scaled_dot_product_flash_attention_for_cpu`` (tagged even with dropout_p=0); ``F.dropout`` does the
same.  The runtime slices the saved values by count
(torch/_functorch/_aot_autograd/runtime_wrappers.py::_AutogradSavedState.save_from_forward), so the DeviceMesh falls
into the tensor slice and the RNG state falls into the opaque slice:
``AssertionError: expected all tensors_saved_with_vc_check to be Tensors, got types: [..., DeviceMesh]``.  With the
harness's Llama the list also shows Parameters; those are saved local weights and are harmless.  The forward graph ends
with ``return (add, primals_1, <weights>, primals_2 /*mesh*/, getitem_2 /*rng state*/)``.

Minimal conditions (torch 2.13.0+cpu): DTensor parameters + checkpoint (checkpoint_wrapper; preserve_rng_state=False
fails too) + compile + an RNG-tagged op recomputed in the backward.  One block is enough: the harness's 2 blocks and
per-block compile are not needed (whole-model compile fails too).  A world of 1 rank fails too, and every rank fails
(rank-independent).  It fails with backend aot_eager (min-cut), inductor and the harness's recorder.
It passes without checkpoint_wrapper, and with plain (non-parallelized) weights.  It also passes with a
selective-checkpoint policy that MUST_SAVEs the SDPA, because then no RNG op is recomputed.  That is probably why,
of the tp cells, only ``tp-per_block-wrapper-full-fp32`` is reported failing (the selective_op policies save the SDPA).
Sequence parallel with full AC also hits this assertion in block 1's forward.  The tp_sp cells, though, fail earlier,
in Dynamo during the no-AC baseline step (findings/sp_compile_stride_change_unhashable_symint.py).
Upstream: none found for this failure (searched pytorch issues for "tensors_saved_with_vc_check Parameter",
"expected all tensors_saved_with_vc_check to be Tensors DeviceMesh", "functionalize_rng_ops opaque object DeviceMesh",
"num_opaque_objects_saved_for_bw rng state").  Related: pytorch#178112 added ``saved_opaque_nodes`` to the
partitioner, but functionalize_rng_ops's insertion point does not account for them; pytorch#172730 is another
functionalize_rng_ops fix.

Run: python findings/tp_compiled_ac_rng_op_saves_mesh_as_tensor.py   (2 gloo ranks on 127.0.0.1, CPU)
Exit 1 while it reproduces (the assertion is raised), 0 once fixed (the compiled step runs and matches eager),
2 on anything else.
Workaround: a selective-checkpoint policy that saves the SDPA (or other RNG ops) instead of recomputing it.
"""

import os
import socket
import subprocess
import sys

MSG = "expected all tensors_saved_with_vc_check to be Tensors"


def rank_main(rank: int, port: int) -> int:
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    class Attention(nn.Module):  # Llama's attention, cut down: q = k = v, no RoPE, no GQA
        def __init__(self):
            super().__init__()
            self.wq = nn.Linear(64, 64, bias=False)
            self.wo = nn.Linear(64, 64, bias=False)

        def forward(self, x):
            b, s, _ = x.shape
            q = self.wq(x).view(b, s, -1, 16).transpose(1, 2)  # -1 heads: the local ones under tensor parallel
            o = F.scaled_dot_product_attention(q, q, q, is_causal=True)
            return x + self.wo(o.transpose(1, 2).reshape(b, s, -1))

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        block = Attention()
        parallelize_module(block, init_device_mesh("cpu", (2,)), {"wq": ColwiseParallel(), "wo": RowwiseParallel()})
        block = checkpoint_wrapper(block)  # torchtitan's order: TP -> AC -> compile
        x = torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(1))

        def step(fn):
            loss = fn(x).pow(2).sum()
            loss.backward()
            grads = [p.grad.full_tensor().clone() for p in block.parameters()]
            block.zero_grad(set_to_none=True)
            return loss.detach(), grads

        ref_loss, ref_grads = step(block)  # eager reference
        try:
            loss, grads = step(torch.compile(block, backend="aot_eager"))
        except AssertionError as e:
            if MSG in str(e):
                print(f"rank {rank}: reproduced: {str(e)[:200]}...", flush=True)
                return 1
            raise
        same = torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-5) and all(
            torch.allclose(g, r, rtol=1e-5, atol=1e-5) for g, r in zip(grads, ref_grads))
        print(f"rank {rank}: compiled step ran; matches eager: {same}", flush=True)
        return 0 if same else 2
    finally:
        dist.destroy_process_group()


def main() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), str(port)], env=env, start_new_session=True)
             for r in range(2)]
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            print("timed out", file=sys.stderr)
            return 2
    print(f"rank exit codes: {codes}")
    if all(c == 1 for c in codes):
        return 1
    return 0 if all(c == 0 for c in codes) else 2


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rank":
        sys.exit(rank_main(int(sys.argv[2]), int(sys.argv[3])))
    sys.exit(main())
