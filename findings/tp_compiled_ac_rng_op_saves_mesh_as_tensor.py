"""Tensor parallel + activation checkpointing + torch.compile: a random op recomputed in the backward puts the
DeviceMesh among the saved tensors, and the compiled forward fails in AOTAutograd's save_from_forward.

With DTensor parameters (``parallelize_module`` with ColwiseParallel/RowwiseParallel) the DeviceMesh is an opaque graph
input (torch/distributed/device_mesh.py::_register_distributed_opaque_types), which the partitioner saves for the
backward.  torch/_functorch/partitioners.py::_extract_fwd_bwd_modules orders the forward outputs as (outputs, saved
tensors, saved opaque objects, saved opaque nodes, saved symints).  When the checkpointed region holds a random op
that is recomputed in the backward (here a dropout), partitioners.py::functionalize_rng_ops adds its RNG-state
output at ``len(fw_outputs) - num_sym_nodes``: *after* the opaque DeviceMesh.  The runtime slices the saved values by
count (torch/_functorch/_aot_autograd/runtime_wrappers.py::_AutogradSavedState.save_from_forward), so the DeviceMesh
falls into the tensor slice: ``AssertionError: expected all tensors_saved_with_vc_check to be Tensors, got types:
[..., DeviceMesh]``.

Minimal conditions: DTensor parameters + checkpoint + compile (aot_eager, min-cut) + a random op recomputed in the
backward; one rank is enough.  Controls, same script: the same step without checkpointing, and with a
selective-checkpoint policy that saves the dropout (no random op recomputed), run.  (The suite's cell
tp-per_block-wrapper-full-fp32 hit it through SDPA, which torch <= 2.13 counts as a random op even at dropout_p=0; torch
2.14 no longer does, so that cell passes there, but a real random op still fails.)
Upstream: none found (searched pytorch issues for "expected all tensors_saved_with_vc_check to be Tensors DeviceMesh",
"functionalize_rng_ops opaque object DeviceMesh", "num_opaque_objects_saved_for_bw rng state").  Related: pytorch#178112
added ``saved_opaque_nodes`` to the partitioner, but functionalize_rng_ops's insertion point does not account for them.

Run: python findings/tp_compiled_ac_rng_op_saves_mesh_as_tensor.py   (1 gloo rank on 127.0.0.1, CPU)
Exit 1 while it reproduces (the assertion is raised with checkpointing and not without), 0 once the checkpointed step
runs, 2 on anything else.
"""

import functools
import socket
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

MSG = "expected all tensors_saved_with_vc_check to be Tensors"


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(16, 32, bias=False)
        self.down = nn.Linear(32, 16, bias=False)

    def forward(self, x):
        return self.down(F.dropout(torch.relu(self.up(x)), p=0.5, training=True))


def save_dropout(ctx, op, *args, **kwargs):
    random = torch.Tag.nondeterministic_seeded in getattr(op, "tags", ())
    return CheckpointPolicy.MUST_SAVE if random else CheckpointPolicy.PREFER_RECOMPUTE


def step(block, x, how: str) -> str:
    def fn(t):
        if how == "checkpoint":
            return checkpoint(block, t, use_reentrant=False)
        if how == "selective (dropout saved)":
            return checkpoint(block, t, use_reentrant=False,
                              context_fn=functools.partial(create_selective_checkpoint_contexts, save_dropout))
        return block(t)

    torch._dynamo.reset()
    try:
        torch.compile(fn, backend="aot_eager", fullgraph=True)(x).pow(2).sum().backward()
    except Exception as e:  # noqa: BLE001 - the defect is an AssertionError, possibly wrapped
        text = str(e)
        return "reproduced" if MSG in text and "DeviceMesh" in text else f"other error: {type(e).__name__}: {text[:200]}"
    block.zero_grad(set_to_none=True)
    return "ran"


def main() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        block = parallelize_module(MLP(), init_device_mesh("cpu", (1,)),
                                   {"up": ColwiseParallel(), "down": RowwiseParallel()})
        x = torch.randn(4, 16)
        seen = {how: step(block, x, how) for how in ("no checkpoint", "selective (dropout saved)", "checkpoint")}
    finally:
        dist.destroy_process_group()
    print(f"torch {torch.__version__}")
    for how, what in seen.items():
        print(f"{how}: {what}")
    if seen["checkpoint"] == "reproduced" and seen["no checkpoint"] == "ran":
        print("DEFECT REPRODUCES: the recomputed dropout's RNG state lands after the saved DeviceMesh")
        return 1
    return 0 if set(seen.values()) == {"ran"} else 2


if __name__ == "__main__":
    sys.exit(main())
