"""Standalone repro scripts for findings: need only torch, print what is wrong, exit 1 when it reproduces."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch

from harness.rows.fuzz.program import DEEP_AUTOCAST_TOLERANCE, Prog

TEMPLATE = '''"""Fuzz finding {digest}: {signature}

Found by `make fuzz` (harness/tools/fuzz) on torch {torch}; program: {describe}.
Run `python {path}` (needs only torch): it prints what is wrong and exits 1 while the problem reproduces.
First lines of the failure as the fuzzer saw it:
{message}
"""
SPEC = {spec!r}  # the program, for `python -m harness.tools.fuzz promote {path}`

{module}

import copy
import sys

from functorch.compile import default_partition, make_boxed_func, min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd

N, D, INPUT_GRADS, N_WEIGHTS, N_BIASES = {n}, {d}, {input_grads}, {n_weights}, {n_biases}
PARAMS, PARTITIONER, BACKEND, BUDGET, N_DRAWS = {params}, {partitioner!r}, {backend!r}, {budget!r}, {n_draws}
RTOL, ATOL = {rtol}, {atol}
GRAPHS = {{}}


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
            module.register_parameter(f"p{{i}}", torch.nn.Parameter(w.detach()))
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
                problems.append(f"{{label}}: {{kind}} {{i}}: one side has no gradient")
            elif x is not None and not torch.allclose(x.double(), y.double(), RTOL, ATOL, equal_nan=True):
                err = (x.double() - y.double()).abs().max().item()
                problems.append(f"{{label}}: {{kind}} {{i}} differs (max abs error {{err:.3g}})")
    return problems


def policy_problems():
    from torch._functorch.partitioners import must_recompute
    from torch.utils.checkpoint import CheckpointPolicy

    problems = []
    for joint, bw in zip(GRAPHS.get("joint", []), GRAPHS.get("bw", [])):
        recomputed = {{n.name: n.target for n in bw.graph.nodes if n.op == "call_function"}}
        saved = {{n.name for n in bw.graph.nodes if n.op == "placeholder"}}
        for n in joint.graph.nodes:
            tag = n.meta.get("recompute")
            if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload) or n.target.is_view:
                continue
            if tag == CheckpointPolicy.MUST_SAVE and recomputed.get(n.name) == n.target:
                problems.append(f"{{n.name}} = {{n.target}} is tagged MUST_SAVE but the backward graph recomputes it")
            boundary = any(must_recompute(u) and u.meta.get("ac_graph_id", -1) > n.meta.get("ac_graph_id", -1)
                           for u in n.users)
            if tag == CheckpointPolicy.MUST_RECOMPUTE and n.name in saved and not boundary:
                problems.append(f"{{n.name}} = {{n.target}} is tagged MUST_RECOMPUTE but the forward saves it")
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
    print("\\n".join(problems) or "OK: compiled matches eager and the SAC policy is respected")
    sys.exit(1 if problems else 0)
'''


def render(prog: Prog, signature: str, message: str, path: str) -> str:
    rtol, atol = DEEP_AUTOCAST_TOLERANCE if prog.autocast else (1e-5, 1e-5)
    msg = "\n".join("    " + ln for ln in message.replace('"""', "'''").splitlines()[:12])
    return TEMPLATE.format(
        digest=prog.digest(), signature=signature, torch=torch.__version__, describe=prog.describe(), path=path,
        message=msg, spec=prog.to_json(), module=prog.module_source(), n=prog.n, d=prog.d, input_grads=list(prog.input_grads),
        n_weights=prog.n_weights, n_biases=prog.n_biases, params=prog.weights_are_params,
        partitioner=str(prog.partitioner), backend=str(prog.backend), budget=prog.budget, n_draws=prog.n_draws(),
        rtol=rtol, atol=atol)


def read_spec(path: Path) -> tuple[Prog, str]:
    """The program and signature recorded in a finding script."""
    text = Path(path).read_text()
    spec = re.search(r"^SPEC = (.*?)  # the program", text, re.M)
    sig = re.search(r'^"""Fuzz finding \w+: (.*)$', text, re.M)
    if not spec or not sig:
        raise ValueError(f"{path}: not a fuzz finding script (no SPEC line or header)")
    return Prog.from_json(ast.literal_eval(spec.group(1))), sig.group(1).strip()
