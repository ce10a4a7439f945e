"""torch 2.11: ops computed inside a custom torch.autograd.Function inside a checkpointed region get no
`recompute` / `ac_graph_id` meta in the joint graph under torch.compile, so plain AC saves their results.

Under torch.compile, Dynamo wraps the checkpointed region in the `tag_activation_checkpoint` HOP, and the
autograd.Function call inside it becomes an `autograd_function_apply` HOP node of the region's body.  In 2.11.0,
`torch/_higher_order_ops/wrap.py::TagActivationCheckpoint.tag_nodes` stamps `ac_graph_id` (and, for plain AC,
`recompute = PREFER_RECOMPUTE`) onto the body's *top-level* nodes only; `tag_activation_checkpoint_impl` then runs
the body with `fx_traceback.preserve_node_meta()`, and when AOTAutograd desugars `autograd_function_apply` the ops of
the Function's forward are traced from its own subgraph, whose nodes were never tagged.  So:
  * plain AC (no context_fn): the inner mm has neither `recompute` nor `ac_graph_id`; min-cut treats it as an
    ordinary untagged compute-intensive op and *saves* its result instead of recomputing it, which defeats the
    checkpoint (here a (4,4) mm saved for the backward where the checkpointed program saves only its inputs);
  * SAC (context_fn): `_CachingTorchDispatchMode` sets `recompute` through `fx_traceback.current_meta` for every op
    it sees, so the inner mm gets its policy, but not `ac_graph_id` (that came only from tag_nodes).
Numerics stay right either way (saving instead of recomputing changes memory, not values).

Fixed in torch 2.12 (absent from the 2.11.0 site-packages, present in 2.12.1's) by
  https://github.com/pytorch/pytorch/pull/177396  "Fix activation checkpoint metadata loss through custom
      autograd.Function" (soulitzer, ghstack, 2026-03): plain AC now goes through the SAC path with an always
      PREFER_RECOMPUTE policy (`_always_prefer_recompute`), and `context_fn_with_graph_id` plumbs the region's id
      into `_CachingTorchDispatchMode(ac_graph_id=...)`, which writes `current_meta["ac_graph_id"]` for every op,
      including the ops of desugared HOPs such as autograd_function_apply.
The release it first shipped in was read off the site-packages (2.11.0 lacks it, 2.12.1 has it); 2.12.0 was not
checked.  A defect, not an intended behaviour change: the PR calls the untagged ops "defeating activation
checkpointing entirely".

Checks, for plain AC and for SAC (policy: everything PREFER_RECOMPUTE), under torch.compile(aot_autograd with
min_cut_rematerialization_partition, fullgraph=True), CPU:
  1. every forward aten.mm of the joint graph (as the partitioner receives it) carries `recompute` and `ac_graph_id`
     meta (the harness's tags cases' `_forward_mm_nodes_are_tagged`), for two Functions: the harness's `_MatMul`
     (setup_context style, returns x @ w) and `SinMM` (saves its mm result h for cos(h) in the backward);
  2. consequence: for SinMM, no mm result is among the values the forward graph saves for the backward;
  3. compiled output and gradients match eager.
Control: the same SinMM body as a plain function (no autograd.Function) must be tagged on every torch, else the
check itself is broken (exit 2).

Run: python findings/custom_function_in_checkpoint_untagged.py   (CPU, ~30 s).
Exit 1 while it reproduces, 0 once fixed, 2 on anything else.
"""

import copy
import functools
import sys

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import min_cut_rematerialization_partition
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

MM = torch.ops.aten.mm.default


class MatMul(torch.autograd.Function):  # harness/rows/cases/tags.py's _MatMul
    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.t(), x.t() @ grad


class SinMM(torch.autograd.Function):  # saves its mm result: AC should recompute it, not save it
    @staticmethod
    def forward(ctx, x, w):
        h = x @ w
        ctx.save_for_backward(x, w, h)
        return torch.sin(h)

    @staticmethod
    def backward(ctx, grad):
        x, w, h = ctx.saved_tensors
        gh = grad * torch.cos(h)
        return gh @ w.t(), x.t() @ gh


def sin_mm_plain(x, w):
    return torch.sin(x @ w)


BODIES = {"MatMul.apply": MatMul.apply, "SinMM.apply": SinMM.apply, "control: plain sin(x @ w)": sin_mm_plain}


def prefer_recompute(ctx, op, *args, **kwargs):
    return CheckpointPolicy.PREFER_RECOMPUTE


def compile_and_run(body, sac):
    kwargs = {"context_fn": functools.partial(create_selective_checkpoint_contexts, prefer_recompute)} if sac else {}

    def fn(x, w):
        return checkpoint(body, x, w, use_reentrant=False, **kwargs)

    graphs = {}

    def partition(joint, joint_inputs, **kw):
        graphs["joint"] = copy.deepcopy(joint)  # the partitioner rewrites meta: keep the joint as received
        return min_cut_rematerialization_partition(joint, joint_inputs, **kw)

    def keep(kind):
        def compiler(gm, _):
            graphs[kind] = gm
            return gm.forward
        return compiler

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=partition)
    torch.manual_seed(0)
    x, w = torch.randn(4, 4, requires_grad=True), torch.randn(4, 4, requires_grad=True)
    ct = torch.randn(4, 4)
    out = torch.compile(fn, backend=backend, fullgraph=True)(x, w)
    grads = torch.autograd.grad(out, (x, w), ct)
    x_e, w_e = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    out_e = body(x_e, w_e)
    grads_e = torch.autograd.grad(out_e, (x_e, w_e), ct)
    numerics_ok = torch.allclose(out, out_e) and all(torch.allclose(a, b) for a, b in zip(grads, grads_e))
    return graphs, numerics_ok


def check(body_name, sac):
    graphs, numerics_ok = compile_and_run(BODIES[body_name], sac)
    fw_mms = [n for n in graphs["joint"].graph.nodes
              if n.op == "call_function" and n.target == MM and n.meta.get("partitioner_tag") == "is_forward"]
    if not fw_mms:
        raise RuntimeError(f"{body_name}: no forward mm in the joint graph: the check would be vacuous")
    seen = {n.name: {k: n.meta.get(k, "<missing>") for k in ("recompute", "ac_graph_id")} for n in fw_mms}
    missing = sorted(f"{name}.{k}" for name, meta in seen.items() for k, v in meta.items() if v == "<missing>")
    # the forward graph returns the program's one output first, then what it saves for the backward
    saved = [a for a in graphs["fw"].graph.output_node().args[0][1:] if isinstance(a, torch.fx.Node)]
    saved_mm = [a.name for a in saved if a.target == MM]
    bw_mm = sum(n.target == MM for n in graphs["bw"].graph.nodes)
    print(f"  {'SAC' if sac else 'AC '} {body_name}: forward mm meta {seen}")
    print(f"      saved for backward {[a.name for a in saved]}; backward mm count {bw_mm}; "
          f"numerics vs eager {'ok' if numerics_ok else 'MISMATCH'}")
    problems = []
    if missing:
        problems.append(f"forward mm nodes missing recompute/ac_graph_id meta: expected [], saw {missing}")
    if saved_mm:
        problems.append(f"mm results saved for the backward instead of recomputed: expected [], saw {saved_mm}")
    if not numerics_ok:
        problems.append("compiled output/gradients differ from eager")
    return problems


def main() -> int:
    print("torch", torch.__version__)
    bad = False
    for sac in (False, True):
        for body_name in BODIES:
            problems = check(body_name, sac)
            for p in problems:
                print(f"      {'CONTROL BROKEN' if body_name.startswith('control') else 'BUG'}: {p}")
            if problems and body_name.startswith("control"):
                return 2
            bad |= bool(problems)
    if bad:
        return 1
    print("fixed: ops inside a custom autograd.Function in a checkpointed region are tagged and recomputed")
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
