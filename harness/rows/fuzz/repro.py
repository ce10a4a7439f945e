"""Standalone repro scripts for findings: need only torch, print what is wrong, exit 1 when it reproduces.

A numerics or crash finding's script runs the program eagerly with and without AC and compiled, and compares them
(a crash exits 1 by its exception); an invariant finding's script compiles it (at each budget of the sweep, and
without AC, where the invariant compares) and checks that invariant with torch alone: harness/rows/fuzz/standalone.py,
embedded verbatim."""

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
CHECK = {check!r}  # what this script checks: the numerics, or one invariant of harness/core/invariants.py
SWEEP = {sweep!r}  # the budgets budget_monotone compares, in the order the budget decreases
SWEEP_POINTS = {sweep_points!r}  # the budgets budget_knapsack_monotone compares
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
    """A Dynamo backend that keeps the joint graph each partition receives and the forward and backward graphs."""
    def keep_joint(joint):
        kept = copy.deepcopy(joint)
        kept.ac_activation_inputs = frozenset()  # every graph input is a leaf tensor or a parameter (fullgraph)
        GRAPHS.setdefault("joint", []).append(kept)

    def keep(kind):
        def compiler(gm, example_inputs):
            GRAPHS.setdefault(kind, []).append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    if BACKEND == "inductor":
        import torch._inductor.compile_fx as cfx

        def inductor(gm, example_inputs):
            def inner(g, ex, *args, **kwargs):
                GRAPHS.setdefault("bw" if kwargs.get("is_backward") else "fw", []).append(copy.deepcopy(g))
                return cfx.compile_fx_inner(g, ex, *args, **kwargs)

            real = cfx.min_cut_rematerialization_partition

            def spy(joint, joint_inputs, **kwargs):
                keep_joint(joint)
                return real(joint, joint_inputs, **kwargs)

            cfx.min_cut_rematerialization_partition = spy
            try:
                return cfx.compile_fx(gm, example_inputs, inner_compile=inner)
            finally:
                cfx.min_cut_rematerialization_partition = real
        return inductor

    real = min_cut_rematerialization_partition if PARTITIONER == "min_cut" else default_partition

    def partition(joint, joint_inputs, **kwargs):
        keep_joint(joint)
        return real(joint, joint_inputs, **kwargs)

    return aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=partition,
                        keep_inference_input_mutations=True)


def run(ckpt, compiled=False, replay=None, budget=BUDGET):
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
        torch._dynamo.reset()  # a fresh compile (at this budget), not Dynamo's cached one
        GRAPHS.clear()
        fn = torch.compile(fn, backend=recording_backend(), fullgraph=True)
    torch.manual_seed(1)
    with torch._functorch.config.patch(activation_memory_budget=1.0 if budget is None else budget,
                                       enable_autograd_cache=False):
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


def numerics_problems():
    reference = run(no_checkpoint)
    eager_ac = run(torch.utils.checkpoint.checkpoint)
    compiled = run(torch.utils.checkpoint.checkpoint, compiled=True)
    problems = compare("eager with AC vs eager without AC", eager_ac, reference)
    if N_DRAWS:  # random ops: replay the compiled run's own draws in eager (RNG-independent reference)
        draws = tuple(t.clone() for t in compiled[0][len(compiled[0]) - N_DRAWS:])
        problems += compare("compiled vs eager replaying the compiled draws", compiled, run(no_checkpoint, replay=draws))
    else:
        problems += compare("compiled vs eager without AC", compiled, reference)
    return problems


# ---- the harness's invariants with torch alone: harness/rows/fuzz/standalone.py, verbatim ------------------------
{standalone}
# ---- end of harness/rows/fuzz/standalone.py -----------------------------------------------------------------------


def compiled_graphs(ckpt, budget):
    run(ckpt, compiled=True, budget=budget)
    return analyse(dict(GRAPHS), cse=PARTITIONER == "min_cut")


def invariant_problems(name):
    checkpointed = compiled_graphs(torch.utils.checkpoint.checkpoint, BUDGET)
    if name in ("ac_backward_does_no_less_work", "ac_saves_within_eager_bound"):
        return globals()[name](checkpointed, compiled_graphs(no_checkpoint, None))
    if name == "budget_monotone":
        if PARTITIONER != "min_cut" or BUDGET not in SWEEP:
            return []
        return budget_monotone([(b, checkpointed if b == BUDGET else compiled_graphs(torch.utils.checkpoint.checkpoint, b))
                                for b in SWEEP])
    if name == "budget_knapsack_monotone":
        if PARTITIONER != "min_cut" or BUDGET not in SWEEP:
            return []
        return budget_knapsack_monotone([(b, knapsacks_at(b)) for b in SWEEP_POINTS],
                                        torch._functorch.config.activation_memory_budget_solver)
    return globals()[name](checkpointed)


def knapsacks_at(budget):
    """The knapsacks the partitioner poses compiling the checkpointed program at ``budget``: (memory, runtimes,
    max_memory, objective, saved items) per call of partitioners._optimize_runtime_with_given_memory."""
    from torch._functorch import partitioners

    calls, real = [], partitioners._optimize_runtime_with_given_memory

    def spy(joint_graph, memory, runtimes, max_memory, *rest, **kwargs):
        objective, saved, recomputed = real(joint_graph, memory, runtimes, max_memory, *rest, **kwargs)
        calls.append((tuple(memory), tuple(runtimes), max_memory, float(objective), tuple(saved)))
        return objective, saved, recomputed

    partitioners._optimize_runtime_with_given_memory = spy
    try:
        compiled_graphs(torch.utils.checkpoint.checkpoint, budget)
    finally:
        partitioners._optimize_runtime_with_given_memory = real
    return calls


if __name__ == "__main__":
    if CHECK.startswith("invariant:"):
        name = CHECK.partition(":")[2]
        problems = [f"invariant {{name}}: {{p}}" for p in invariant_problems(name)]
        print("\\n".join(problems) or f"OK: invariant {{name}} holds")
    else:
        problems = numerics_problems()
        print("\\n".join(problems) or "OK: compiled matches eager")
    sys.exit(1 if problems else 0)
'''


def _standalone_source() -> str:
    """harness/rows/fuzz/standalone.py without its docstring (the script's section header says where it is from)."""
    from harness.rows.fuzz import standalone

    text = Path(standalone.__file__).read_text()
    doc = ast.get_docstring(ast.parse(text), clean=False)
    return text.split(f'"""{doc}"""', 1)[1].strip() + "\n" if doc else text


def render(prog: Prog, signature: str, message: str, path: str) -> str:
    from harness.core.case import BUDGET_SWEEP, SWEEP_POINTS

    rtol, atol = DEEP_AUTOCAST_TOLERANCE if prog.autocast else (1e-5, 1e-5)
    msg = "\n".join("    " + ln for ln in message.replace('"""', "'''").splitlines()[:12])
    check = "invariant:" + signature.split(":")[1] if signature.startswith("invariant:") else "numerics"
    return TEMPLATE.format(
        digest=prog.digest(), signature=signature, torch=torch.__version__, describe=prog.describe(), path=path,
        message=msg, spec=prog.to_json(), module=prog.module_source(), n=prog.n, d=prog.d, input_grads=list(prog.input_grads),
        n_weights=prog.n_weights, n_biases=prog.n_biases, params=prog.weights_are_params,
        partitioner=str(prog.partitioner), backend=str(prog.backend), budget=prog.budget, n_draws=prog.n_draws(),
        rtol=rtol, atol=atol, check=check, sweep=BUDGET_SWEEP, sweep_points=SWEEP_POINTS, standalone=_standalone_source())


def read_spec(path: Path) -> tuple[Prog, str]:
    """The program and signature recorded in a finding script."""
    text = Path(path).read_text()
    spec = re.search(r"^SPEC = (.*?)  # the program", text, re.M)
    sig = re.search(r'^"""Fuzz finding \w+: (.*)$', text, re.M)
    if not spec or not sig:
        raise ValueError(f"{path}: not a fuzz finding script (no SPEC line or header)")
    return Prog.from_json(ast.literal_eval(spec.group(1))), sig.group(1).strip()


def read_message(path: Path) -> str:
    """The first lines of the failure a finding script records in its docstring (what the fuzzer saw)."""
    text = Path(path).read_text()
    block = re.search(r"^First lines of the failure as the fuzzer saw it:\n(.*?)^\"\"\"", text, re.M | re.S)
    return "\n".join(ln[4:] for ln in block.group(1).splitlines()) if block else ""
