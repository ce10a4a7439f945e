"""torch.compile of a torch.export (torch IR) graph silently drops the selective-checkpoint policy.

`_export_to_torch_ir` keeps the SAC `context_fn` on the checkpoint body (`wrap_body_0.meta["_checkpoint_context_fn"]`),
but when Dynamo re-traces the exported graph, `CheckpointHigherOrderVariable._call_function` only takes `context_fn` from
the call's kwargs; the new body GraphModule never gets the meta.  AOTAutograd then tags every op of the region
PREFER_RECOMPUTE, so MUST_SAVE ops (here both mm) are recomputed in backward: 6 backward mm instead of 4.
Numerics stay correct, which is why upstream's `_compare_orig_and_checkpointed_fns` export path does not notice.

Run: python findings/export_compile_drops_sac_policy.py   (torch 2.13.0, CPU). Exits 1 while the bug is present.
"""

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import min_cut_rematerialization_partition
from torch.export import _trace
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


def policy(ctx, func, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if func == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE


def context_fn():
    return create_selective_checkpoint_contexts(policy)


def gn(x, y):
    return torch.sigmoid(torch.matmul(torch.matmul(x, y), y)) * y


def fn(x, y):
    return checkpoint(gn, x, y, use_reentrant=False, context_fn=context_fn)


class Wrap(torch.nn.Module):
    def forward(self, x, y):
        return fn(x, y)


def backward_mm_count(compile_target) -> int:
    bw = []

    def bw_compiler(gm, _):
        bw.append(gm)
        return gm.forward

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=lambda gm, _: gm.forward, bw_compiler=bw_compiler,
                           partition_fn=min_cut_rematerialization_partition)
    x, y = (torch.randn(4, 4, requires_grad=True) for _ in range(2))
    torch.compile(compile_target, backend=backend)(x, y).sum().backward()
    return sum(n.target == torch.ops.aten.mm.default for n in bw[0].graph.nodes)


args = tuple(torch.randn(4, 4, requires_grad=True) for _ in range(2))
exported = _trace._export_to_torch_ir(Wrap(), args, {}, None, restore_fqn=False, _log_export_usage=False)
print("context_fn on the exported body:", "_checkpoint_context_fn" in exported.wrap_body_0.meta)
direct, via_export = backward_mm_count(fn), backward_mm_count(exported)
print(f"backward mm: compile(fn) = {direct}, compile(export(fn)) = {via_export} (4 = both mm saved, 6 = recomputed)")
raise SystemExit(0 if direct == via_export == 4 else 1)
