"""torch 2.11: a SAC policy's MUST_SAVE tag leaks onto the `detach` traced right after the tagged op, and min-cut
recomputes that detach in the backward.

Under torch.compile, `torch/utils/checkpoint.py::_CachingTorchDispatchMode.__torch_dispatch__` (2.11.0) tags nodes
by setting the sticky `fx_traceback.current_meta["recompute"] = policy` *before* running an op, and returns early,
without touching that meta, for `SAC_IGNORED_OPS` (aten.detach, prim.device, the FunctionalTensor metadata fns).  So
a `detach` traced right after a MUST_SAVE op (here autograd's save of sigmoid's result for sigmoid_backward and of the
SDPA output for its backward; by the same code path, the `_maybe_detach` of the SAC cache entry) inherits MUST_SAVE from that
op although the policy never saw the detach.  `torch/_functorch/partitioners.py::solve_min_cut` then never
bans a view from recompute (`ban_recomputation_if_allowed` returns False for `op_types.is_view(node)` before it looks
at the tag), so it saves the base and recomputes the "MUST_SAVE" detach in the backward: a joint node tagged MUST_SAVE
shows up as a backward call node of the same name.  Numerics, memory and FLOPs are unaffected (a detach is a free
alias of a tensor that is saved anyway); what breaks is the tag contract ("``{MUST,PREFER}_SAVE``: The operation's
output will be saved during the forward pass and will not be recomputed during the backward pass") as read off the
joint graph's `recompute` meta.

Fixed in torch 2.12 by the SAC annotation rewrite: `_CachingTorchDispatchMode.__torch_dispatch__` now sets
`current_meta["recompute"] = PREFER_RECOMPUTE` first (before the SAC_IGNORED_OPS early return), runs the op, calls the
policy afterwards (new `SelectiveCheckpointContext(op_output=...)`) and writes the policy only onto the nodes the op
itself added (`graph_len_before` snapshot of the proxy tracer's graph).  The detaches are PREFER_RECOMPUTE from 2.12.1
on.  Upstream:
  https://github.com/pytorch/pytorch/pull/175348  "Support user AutoNamingMode in SAC" (moves policy_fn after the op
      call and replaces the current_meta annotation; "certain ops that are ignored by SAC" need special care)
  https://github.com/pytorch/pytorch/pull/176925  "Add SAC annotation edge case tests" (regression test: SAC_IGNORED_OPS
      such as detach get PREFER_RECOMPUTE and don't leak the annotation from the preceding op)
(found with the `issues` search; the merged commit and the release it first shipped in were not checked beyond the
2.11.0 / 2.12.1 site-packages diff.)  The partitioner side is unchanged through 2.14.1: a view op that a policy tags
MUST_SAVE itself (aten.t) is still recomputed; that is a separate question, not reproduced here.

The check is the harness's `must_save_not_recomputed` (harness/core/invariants.py, harness/core/analysis.py): MUST_SAVE nodes of
the joint graph as the partitioner received it; forward nodes = tagged is_forward, or not depending on a tangent;
recomputed = backward call_function nodes (getitem aside) whose name is a forward node of the joint graph.

Run: python findings/sac_must_save_detach_recomputed.py   (CPU, a few seconds).
Exit 1 while it reproduces, 0 once fixed, 2 on anything else.
"""

import copy
import functools
import operator
import sys

import torch
import torch.nn.functional as F
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import min_cut_rematerialization_partition
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

aten = torch.ops.aten
# torchtitan-style save list: matmuls and every SDPA variant this build has.
SDPA_OPS = {getattr(aten, name).default for name in (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention") if hasattr(aten, name)}


def dropout_body(x):  # the harness's reference_dropout_sac_oracle / compiled_rng_sac_random_op body
    return torch.sigmoid(torch.dropout(torch.sigmoid(x), p=0.5, train=True))


def sdpa_body(q, w):  # an attention block: projections (mm) into SDPA
    return torch.sin(F.scaled_dot_product_attention(q @ w, q @ w, q @ w)) @ w


CASES = {
    "sigmoid-dropout-sigmoid, MUST_SAVE sigmoid": (dropout_body, {aten.sigmoid.default}, [(4, 4)]),
    "mm + SDPA, MUST_SAVE mm/SDPA": (sdpa_body, {aten.mm.default} | SDPA_OPS, [(1, 2, 4, 8), (8, 8)]),
}


def forward_nodes(joint):
    """harness.core.analysis.forward_nodes: tagged is_forward, or (untagged) not depending on a tangent."""
    backward, fwd = set(), set()
    for n in joint.graph.nodes:
        tag = n.meta.get("partitioner_tag", "")
        if n.op == "placeholder":
            (backward if "tangents" in str(n.target) else fwd).add(n.name)
        elif n.op != "output":
            from_tangent = any(a.name in backward for a in n.all_input_nodes)
            (backward if "is_backward" in tag or from_tangent and "is_forward" not in tag else fwd).add(n.name)
    return fwd


def recomputed_must_save(body, save_ops, shapes):
    def policy(ctx, func, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if func in save_ops else CheckpointPolicy.PREFER_RECOMPUTE

    def fn(*xs):
        return checkpoint(body, *xs, use_reentrant=False,
                          context_fn=functools.partial(create_selective_checkpoint_contexts, policy))

    graphs = {}

    def partition(joint, joint_inputs, **kwargs):
        graphs["joint"] = copy.deepcopy(joint)  # the partitioner rewrites tags: keep the joint as received
        return min_cut_rematerialization_partition(joint, joint_inputs, **kwargs)

    def keep(kind):
        def compiler(gm, _):
            graphs[kind] = gm
            return gm.forward
        return compiler

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=partition)
    torch.manual_seed(0)
    xs = [torch.randn(*s, requires_grad=True) for s in shapes]
    torch.compile(fn, backend=backend, fullgraph=True)(*xs).sum().backward()
    joint, bw = graphs["joint"], graphs["bw"]
    must_save = {n.name: str(n.target) for n in joint.graph.nodes
                 if n.meta.get("recompute") == CheckpointPolicy.MUST_SAVE}
    if not must_save:
        raise RuntimeError("no joint node is tagged MUST_SAVE: the check would be vacuous")
    fwd = forward_nodes(joint)
    recomputed = {n.name for n in bw.graph.nodes
                  if n.op == "call_function" and n.target is not operator.getitem and n.name in fwd}
    return must_save, {name: must_save[name] for name in sorted(recomputed & must_save.keys())}


def main() -> int:
    print("torch", torch.__version__)
    bad = False
    for name, (body, save_ops, shapes) in CASES.items():
        must_save, hits = recomputed_must_save(body, save_ops, shapes)
        print(f"{name}: MUST_SAVE joint nodes {must_save}")
        for node, op in hits.items():
            print(f"  BUG: node {node} ({op}, policy MUST_SAVE) is recomputed in the backward")
        bad |= bool(hits)
    if bad:
        return 1
    print("fixed: no MUST_SAVE joint node is recomputed in the backward")
    return 0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    try:
        code = main()
    except Exception as e:  # anything but a clean verdict
        print(f"ERROR: {type(e).__name__}: {e}")
        code = 2
    sys.exit(code)
