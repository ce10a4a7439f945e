"""Fuzz finding 9ce06a30b6: crash:compile:AssertionError:expected all tensors_saved_with_vc_check to be Tensors, got types: [<class 'torch.Tensor'>, <class 'torch.Tensor'>, <class 'tuple'>, <class 

Found by `make fuzz` (harness/tools/fuzz) on torch 2.13.0+cpu; program: 7 ops (sort mm sum_all softmax expand_sum layer_norm erf), regions [0:3]N+sac, [0:6]N, [0:5]N, min_cut/aot_eager/budget 0.3.
Run `python findings/fuzz/9ce06a30b6.py` (needs only torch): it prints what is wrong and exits 1 while the problem reproduces.
First lines of the failure as the fuzzer saw it:
    torch.compile raised AssertionError (root cause AssertionError): expected all tensors_saved_with_vc_check to be Tensors, got types: [<class 'torch.Tensor'>, <class 'torch.Tensor'>, <class 'tuple'>, <class 'torch.Tensor'>, <class 'torch.Tensor'>, <class 'torch.Tensor'>]
"""
SPEC = '{"autocast": false, "backend": "aot_eager", "budget": 0.3, "d": 4, "default_policy": "MUST_SAVE", "input_grads": [false, false, false], "n": 4, "n_biases": 2, "n_weights": 1, "partitioner": "min_cut", "policy": {"erf.default": "MUST_RECOMPUTE", "expand.default": "PREFER_RECOMPUTE", "gather.default": "MUST_RECOMPUTE", "native_layer_norm.default": "PREFER_RECOMPUTE", "sum.dim_IntList": "MUST_SAVE"}, "regions": [{"end": 3, "reentrant": false, "sac": true, "start": 0}, {"end": 6, "reentrant": false, "sac": false, "start": 0}, {"end": 5, "reentrant": false, "sac": false, "start": 0}], "steps": [{"args": [2, 2], "b": 0, "op": "sort", "w": 0}, {"args": [4], "b": 0, "op": "mm", "w": 0}, {"args": [5], "b": 0, "op": "sum_all", "w": 0}, {"args": [6], "b": 0, "op": "softmax", "w": 0}, {"args": [7], "b": 0, "op": "expand_sum", "w": 0}, {"args": [3], "b": 0, "op": "layer_norm", "w": 0}, {"args": [9], "b": 0, "op": "erf", "w": 0}], "weights_are_params": false}'  # the program, for `python -m harness.tools.fuzz promote findings/fuzz/9ce06a30b6.py`

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

POLICY = {
    torch.ops.aten.erf.default: CheckpointPolicy.MUST_RECOMPUTE,
    torch.ops.aten.expand.default: CheckpointPolicy.PREFER_RECOMPUTE,
    torch.ops.aten.gather.default: CheckpointPolicy.MUST_RECOMPUTE,
    torch.ops.aten.native_layer_norm.default: CheckpointPolicy.PREFER_RECOMPUTE,
    torch.ops.aten.sum.dim_IntList: CheckpointPolicy.MUST_SAVE,
}


def policy_fn(ctx, op, *args, **kwargs):
    return POLICY.get(op, CheckpointPolicy.MUST_SAVE)


def program(ckpt, R, x0, x1, x2, w0, b0, b1):
    v0 = x0
    v1 = x1
    v2 = x2
    def region1(v2):
        def region2(v2):
            def region0(v2):
                v3, _s0i = v2.sort(-1)
                v4 = v2.gather(-1, _s0i)
                v5 = torch.mm(v4, w0)
                v6 = v5 * torch.tanh(v5.sum())
                return (v3, v6,)
            v3, v6, = ckpt(region0, v2, use_reentrant=False, context_fn=functools.partial(create_selective_checkpoint_contexts, policy_fn))
            v7 = torch.softmax(v6, -1)
            v8 = v7.unsqueeze(0).expand(3, 4, 4).sum(0)
            return (v3, v8,)
        v3, v8, = ckpt(region2, v2, use_reentrant=False)
        v9 = F.layer_norm(v3, (4,), b0)
        return (v8, v9,)
    v8, v9, = ckpt(region1, v2, use_reentrant=False)
    v10 = torch.erf(v9)
    return (v0, v1, v8, v10,)


import copy
import sys

from functorch.compile import default_partition, make_boxed_func, min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd

N, D, INPUT_GRADS, N_WEIGHTS, N_BIASES = 4, 4, [False, False, False], 1, 2
PARAMS, PARTITIONER, BACKEND, BUDGET, N_DRAWS = False, 'min_cut', 'aot_eager', 0.3, 0
RTOL, ATOL = 1e-05, 1e-05
GRAPHS = {}


def no_checkpoint(fn, *args, use_reentrant=None, context_fn=None):
    return fn(*args)


def tensors():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(N, D, generator=g).requires_grad_(rg) for rg in INPUT_GRADS]
    ws = [torch.randn(D, D, generator=g) / D ** 0.5 for _ in range(N_WEIGHTS)]
    ws += [torch.randn(D, generator=g) for _ in range(N_BIASES)]
    return xs, [w.requires_grad_() for w in ws]


def recording_backend():
    def keep(kind):
        def compiler(gm, example_inputs):
            GRAPHS.setdefault(kind, []).append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    real = min_cut_rematerialization_partition if PARTITIONER == "min_cut" else default_partition

    def partition(joint, joint_inputs, **kwargs):
        GRAPHS.setdefault("joint", []).append(copy.deepcopy(joint))
        return real(joint, joint_inputs, **kwargs)

    return aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=partition,
                        keep_inference_input_mutations=True)


def run(ckpt, compiled=False, replay=None):
    xs, ws = tensors()
    if PARAMS:
        module = torch.nn.Module()
        for i, w in enumerate(ws):
            module.register_parameter(f"p{i}", torch.nn.Parameter(w.detach()))
        ws = list(module.parameters())
        fn = lambda *a: program(ckpt, replay, *a, *ws)  # noqa: E731
        args = xs
    else:
        fn = lambda *a: program(ckpt, replay, *a)  # noqa: E731
        args = xs + ws
    if compiled:
        fn = torch.compile(fn, backend=recording_backend() if BACKEND == "aot_eager" else BACKEND, fullgraph=True)
    torch.manual_seed(1)
    with torch._functorch.config.patch(activation_memory_budget=1.0 if BUDGET is None else BUDGET):
        outs = fn(*args)
    g = torch.Generator().manual_seed(1234)
    weights = [torch.randn(o.shape, generator=g) if o.is_floating_point() else None for o in outs]
    terms = [(o * w.to(o.dtype)).sum() for o, w in zip(outs, weights) if o.requires_grad]
    if terms:
        sum(terms).backward()
    return [o.detach() for o in outs], [t.grad for t in list(xs) + list(ws) if t.requires_grad]


def compare(label, a, b):
    problems = []
    for kind, xs, ys in (("output", a[0], b[0]), ("grad", a[1], b[1])):
        for i, (x, y) in enumerate(zip(xs, ys)):
            if (x is None) != (y is None):
                problems.append(f"{label}: {kind} {i}: one side has no gradient")
            elif x is not None and not torch.allclose(x.double(), y.double(), RTOL, ATOL, equal_nan=True):
                err = (x.double() - y.double()).abs().max().item()
                problems.append(f"{label}: {kind} {i} differs (max abs error {err:.3g})")
    return problems


def policy_problems():
    from torch._functorch.partitioners import must_recompute
    from torch.utils.checkpoint import CheckpointPolicy

    problems = []
    for joint, bw in zip(GRAPHS.get("joint", []), GRAPHS.get("bw", [])):
        recomputed = {n.name: n.target for n in bw.graph.nodes if n.op == "call_function"}
        saved = {n.name for n in bw.graph.nodes if n.op == "placeholder"}
        for n in joint.graph.nodes:
            tag = n.meta.get("recompute")
            if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload) or n.target.is_view:
                continue
            if tag == CheckpointPolicy.MUST_SAVE and recomputed.get(n.name) == n.target:
                problems.append(f"{n.name} = {n.target} is tagged MUST_SAVE but the backward graph recomputes it")
            boundary = any(must_recompute(u) and u.meta.get("ac_graph_id", -1) > n.meta.get("ac_graph_id", -1)
                           for u in n.users)
            if tag == CheckpointPolicy.MUST_RECOMPUTE and n.name in saved and not boundary:
                problems.append(f"{n.name} = {n.target} is tagged MUST_RECOMPUTE but the forward saves it")
    return problems


if __name__ == "__main__":
    reference = run(no_checkpoint)
    eager_ac = run(torch.utils.checkpoint.checkpoint)
    compiled = run(torch.utils.checkpoint.checkpoint, compiled=True)
    problems = compare("eager with AC vs eager without AC", eager_ac, reference)
    if N_DRAWS:  # random ops: replay the compiled run's own draws in eager (RNG-independent reference)
        draws = tuple(t.clone() for t in compiled[0][len(compiled[0]) - N_DRAWS:])
        problems += compare("compiled vs eager replaying the compiled draws", compiled, run(no_checkpoint, replay=draws))
    else:
        problems += compare("compiled vs eager without AC", compiled, reference)
    problems += policy_problems()
    print("\n".join(problems) or "OK: compiled matches eager and the SAC policy is respected")
    sys.exit(1 if problems else 0)
