"""Fuzz finding 7144c61e6a: numerics-random:aot_eager:eager with AC vs eager without AC

Found by `make fuzz` (harness/tools/fuzz) on torch 2.13.0+cpu; program: 7 ops (bernoulli dropout cat_slice sort mm chunk2 silu), regions [0:6]N+sac, [6:7]N, [1:3]N, min_cut/aot_eager/budget 0.
Run `python findings/fuzz/7144c61e6a.py` (needs only torch): it prints what is wrong and exits 1 while the problem reproduces.
First lines of the failure as the fuzzer saw it:
    numerics mismatch:
      eager with AC vs eager without AC: grad of input[3]: max abs error 2.69, max rel error 2.69e+12 exceed rtol=1e-05 atol=1e-05 (8 of 16 elements)
      compiled vs eager replaying the compiled draws: grad of input[3]: max abs error 2.06, max rel error 1.28e+12 exceed rtol=1e-05 atol=1e-05 (12 of 16 elements)
"""
SPEC = '{"autocast": false, "backend": "aot_eager", "budget": 0.0, "d": 4, "default_policy": "PREFER_RECOMPUTE", "input_grads": [false, true, false], "n": 3, "n_biases": 2, "n_weights": 1, "partitioner": "min_cut", "policy": {"bernoulli.default": "MUST_SAVE"}, "regions": [{"end": 6, "reentrant": false, "sac": true, "start": 0}, {"end": 7, "reentrant": false, "sac": false, "start": 6}, {"end": 3, "reentrant": false, "sac": false, "start": 1}], "steps": [{"args": [2], "b": 0, "op": "bernoulli", "w": 0}, {"args": [3], "b": 0, "op": "dropout", "w": 0}, {"args": [4, 4], "b": 0, "op": "cat_slice", "w": 0}, {"args": [5, 5], "b": 0, "op": "sort", "w": 0}, {"args": [4], "b": 0, "op": "mm", "w": 0}, {"args": [0], "b": 1, "op": "chunk2", "w": 0}, {"args": [10], "b": 1, "op": "silu", "w": 0}], "weights_are_params": false}'  # the program, for `python -m harness.tools.fuzz promote findings/fuzz/7144c61e6a.py`

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

POLICY = {
    torch.ops.aten.bernoulli.default: CheckpointPolicy.MUST_SAVE,
}


def policy_fn(ctx, op, *args, **kwargs):
    return POLICY.get(op, CheckpointPolicy.PREFER_RECOMPUTE)


def program(ckpt, R, x0, x1, x2, w0, b0, b1):
    v0 = x0
    v1 = x1
    v2 = x2
    def region0(v0, v2):
        r0 = torch.bernoulli(torch.full_like(v2, 0.5)) if R is None else R[0]
        v3 = v2 * r0
        def region2(v3):
            v4, r1 = torch.ops.aten.native_dropout(v3, 0.5, True) if R is None else (v3 * R[1] * 2.0, R[1])
            v5 = torch.cat([v4, v4], 0)[3 // 2:3 // 2 + 3]
            return (v4, v5, r1,)
        v4, v5, r1, = ckpt(region2, v3, use_reentrant=False)
        v6, _s3i = v5.sort(-1)
        v7 = v5.gather(-1, _s3i)
        v8 = torch.mm(v4, w0)
        _s5p, _s5q = v0.chunk(2, -1)
        v9 = torch.cat([_s5q, _s5p], -1)
        v10 = torch.cat([_s5p * _s5q, _s5q], -1)
        return (v6, v7, v8, v9, v10, r0, r1,)
    v6, v7, v8, v9, v10, r0, r1, = ckpt(region0, v0, v2, use_reentrant=False, context_fn=functools.partial(create_selective_checkpoint_contexts, policy_fn))
    def region1(v10):
        v11 = F.silu(v10)
        return (v11,)
    v11, = ckpt(region1, v10, use_reentrant=False)
    return (v1, v6, v7, v8, v9, v11, r0, r1,)


import copy
import sys

from functorch.compile import default_partition, make_boxed_func, min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd

N, D, INPUT_GRADS, N_WEIGHTS, N_BIASES = 3, 4, [False, True, False], 1, 2
PARAMS, PARTITIONER, BACKEND, BUDGET, N_DRAWS = False, 'min_cut', 'aot_eager', 0.0, 2
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
