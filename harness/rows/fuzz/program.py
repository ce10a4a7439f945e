"""A generated program: a straight-line DAG of ops on (N, D) tensors, with checkpoint regions and SAC policies.

One JSON-serialisable spec (:class:`Prog`) renders to Python source (:meth:`Prog.source`); that source is both what
the harness executes (through a :class:`harness.core.case.Case`) and the body of a standalone repro script.
Every value is an (N, D) float tensor; random ops also produce a *draw* (the random tensor or mask), which the
program returns so that an RNG-independent reference can replay it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

# (rtol, atol) of generated programs run under bf16 autocast (the oracles and the rendered repro scripts use the same):
# looser than a one-op program's harness.core.checks.AUTOCAST_TOLERANCE, as a chain of up to 7 bf16 ops compounds
# the rounding of each.
DEEP_AUTOCAST_TOLERANCE = (5e-2, 5e-2)

# name -> (arity, number of values produced, template lines, aten ops it dispatches to (SAC policy keys), random?)
# Template fields: {a} {b} args, {o} / {o0} {o1} outputs, {W} (D, D) weight, {B} (D,) bias, {t} unique temp prefix,
# {n} {d} {h} sizes (h = D // 2).
U, BI = 1, 2
VOCAB: dict[str, tuple[int, int, tuple[str, ...], tuple[str, ...], bool]] = {
    # matmuls
    "mm": (U, 1, ("{o} = torch.mm({a}, {W})",), ("mm.default",), False),
    "addmm": (U, 1, ("{o} = torch.addmm({B}, {a}, {W})",), ("addmm.default",), False),
    "linear": (U, 1, ("{o} = F.linear({a}, {W}, {B})",), ("addmm.default", "t.default"), False),
    "bmm": (U, 1, ("{o} = torch.bmm({a}.unsqueeze(0), {W}.unsqueeze(0)).squeeze(0)",), ("bmm.default",), False),
    "matmul2": (BI, 1, ("{o} = torch.matmul({a}, {b}.t()) @ {a} / {d}",), ("mm.default",), False),
    # pointwise unary / activations
    "sin": (U, 1, ("{o} = torch.sin({a})",), ("sin.default",), False),
    "cos": (U, 1, ("{o} = torch.cos({a})",), ("cos.default",), False),
    "tanh": (U, 1, ("{o} = torch.tanh({a})",), ("tanh.default",), False),
    "sigmoid": (U, 1, ("{o} = torch.sigmoid({a})",), ("sigmoid.default",), False),
    "relu": (U, 1, ("{o} = F.relu({a})",), ("relu.default",), False),
    "gelu": (U, 1, ("{o} = F.gelu({a})",), ("gelu.default",), False),
    "silu": (U, 1, ("{o} = F.silu({a})",), ("silu.default",), False),
    "erf": (U, 1, ("{o} = torch.erf({a})",), ("erf.default",), False),
    "exp_tanh": (U, 1, ("{o} = torch.exp(torch.tanh({a}))",), ("exp.default",), False),
    "log1p_abs": (U, 1, ("{o} = torch.log1p({a}.abs())",), ("log1p.default", "abs.default"), False),
    "square": (U, 1, ("{o} = {a} * {a}",), ("mul.Tensor",), False),
    "clamp": (U, 1, ("{o} = {a}.clamp(-1.0, 1.0)",), ("clamp.default",), False),
    # binary
    "add": (BI, 1, ("{o} = {a} + {b}",), ("add.Tensor",), False),
    "sub": (BI, 1, ("{o} = {a} - {b}",), ("sub.Tensor",), False),
    "mul": (BI, 1, ("{o} = {a} * {b}",), ("mul.Tensor",), False),
    "div_safe": (BI, 1, ("{o} = {a} / ({b}.abs() + 1.0)",), ("div.Tensor",), False),
    "maximum": (BI, 1, ("{o} = torch.maximum({a}, {b})",), ("maximum.default",), False),
    "where": (BI, 1, ("{o} = torch.where({a} > {b}, {a}, {b} * 0.5)",), ("where.self", "gt.Tensor"), False),
    "lerp": (BI, 1, ("{o} = torch.lerp({a}, {b}, 0.3)",), ("lerp.Scalar",), False),
    # reductions (broadcast back to (N, D))
    "center": (U, 1, ("{o} = {a} - {a}.mean(-1, keepdim=True)",), ("mean.dim",), False),
    "amax": (U, 1, ("{o} = {a} - {a}.amax(-1, keepdim=True)",), ("amax.default",), False),
    "sum_all": (U, 1, ("{o} = {a} * torch.tanh({a}.sum())",), ("sum.default",), False),
    "logsumexp": (U, 1, ("{o} = {a} - torch.logsumexp({a}, -1, keepdim=True)",), ("logsumexp.default",), False),
    "cumsum": (U, 1, ("{o} = torch.cumsum({a}, 0) * 0.5",), ("cumsum.default",), False),
    # views / permutes / reshapes
    "permute3d": (U, 1, ("{o} = {a}.reshape({n}, {h}, 2).permute(0, 2, 1).reshape({n}, {d})",),
                  ("permute.default", "view.default"), False),
    "flip_flat": (U, 1, ("{o} = {a}.reshape(-1).flip(0).reshape({n}, {d})",), ("flip.default",), False),
    "expand_sum": (U, 1, ("{o} = {a}.unsqueeze(0).expand(3, {n}, {d}).sum(0)",), ("expand.default", "sum.dim_IntList"), False),
    "slice_repeat": (U, 1, ("{o} = {a}[:, ::2].repeat(1, 2)",), ("slice.Tensor", "repeat.default"), False),
    "transpose_mm": (U, 1, ("{o} = ({a}.t() @ {a}).matmul({W}.t())[:1].expand({n}, {d}) * {a}",),
                     ("t.default", "mm.default"), False),
    # cat / split
    "chunk_swap": (U, 1, ("{t}p, {t}q = {a}.chunk(2, -1)", "{o} = torch.cat([{t}q, {t}p * 2.0], -1)"),
                   ("split.Tensor", "cat.default"), False),
    "stack_sum": (BI, 1, ("{o} = torch.stack([{a}, {b}], 0).sum(0)",), ("stack.default", "sum.dim_IntList"), False),
    "cat_slice": (BI, 1, ("{o} = torch.cat([{a}, {b}], 0)[{n} // 2:{n} // 2 + {n}]",), ("cat.default", "slice.Tensor"), False),
    # normalisation
    "softmax": (U, 1, ("{o} = torch.softmax({a}, -1)",), ("_softmax.default",), False),
    "log_softmax": (U, 1, ("{o} = torch.log_softmax({a}, -1)",), ("_log_softmax.default",), False),
    "layer_norm": (U, 1, ("{o} = F.layer_norm({a}, ({d},), {B})",), ("native_layer_norm.default",), False),
    # in-place ops (on a fresh intermediate)
    "add_": (BI, 1, ("{o} = {a}.clone()", "{o}.add_({b})"), ("add_.Tensor", "clone.default"), False),
    "mul_": (BI, 1, ("{o} = {a} * 1.0", "{o}.mul_({b})"), ("mul_.Tensor",), False),
    "relu_": (U, 1, ("{o} = {a} + 0.0", "F.relu({o}, inplace=True)"), ("relu_.default",), False),
    "sigmoid_": (U, 1, ("{o} = {a}.clone()", "{o}.sigmoid_()"), ("sigmoid_.default",), False),
    "slice_copy_": (BI, 1, ("{o} = {a}.clone()", "{o}[:, :{h}] = {b}[:, {h}:]"), ("copy_.default",), False),
    "view_mul_": (U, 1, ("{o} = {a}.clone()", "{o}.view(-1)[::2].mul_(2.0)"), ("mul_.Tensor",), False),
    # multi-output ops (two values)
    "sort": (BI, 2, ("{o0}, {t}i = {a}.sort(-1)", "{o1} = {b}.gather(-1, {t}i)"), ("sort.default", "gather.default"), False),
    "var_mean": (U, 2, ("{t}v, {t}m = torch.var_mean({a}, -1, keepdim=True)", "{o0} = {a} - {t}m", "{o1} = {a} * {t}v"),
                 ("var_mean.correction",), False),
    "max_dim": (BI, 2, ("{t}m, {t}i = {a}.max(-1, keepdim=True)", "{o0} = {a} - {t}m",
                        "{o1} = {b}.scatter(-1, {t}i, {t}m)"), ("max.dim", "scatter.src"), False),
    "chunk2": (U, 2, ("{t}p, {t}q = {a}.chunk(2, -1)", "{o0} = torch.cat([{t}q, {t}p], -1)",
                      "{o1} = torch.cat([{t}p * {t}q, {t}q], -1)"), ("split.Tensor", "cat.default"), False),
    # random ops: {r} is the draw; with a replay R it comes from the recorded draws instead
    "dropout": (U, 1, ("{o}, {r} = torch.ops.aten.native_dropout({a}, 0.5, True) if R is None else ({a} * R[{k}] * 2.0, R[{k}])",),
                ("native_dropout.default",), True),
    "rand_mask": (U, 1, ("{r} = torch.rand_like({a}) if R is None else R[{k}]", "{o} = {a} * ({r} < 0.5)"),
                  ("rand_like.default", "lt.Scalar"), True),
    "randn_noise": (U, 1, ("{r} = torch.randn_like({a}) if R is None else R[{k}]", "{o} = {a} + 0.5 * {r}"),
                    ("randn_like.default",), True),
    "bernoulli": (U, 1, ("{r} = torch.bernoulli(torch.full_like({a}, 0.5)) if R is None else R[{k}]", "{o} = {a} * {r}"),
                  ("bernoulli.default",), True),
}
POLICIES = ("MUST_SAVE", "PREFER_SAVE", "PREFER_RECOMPUTE", "MUST_RECOMPUTE")


@dataclasses.dataclass
class Step:
    op: str
    args: list[int]  # value indices
    w: int = 0  # weight index (ops using {W})
    b: int = 0  # bias index (ops using {B})


@dataclasses.dataclass
class Region:
    start: int  # first step index
    end: int  # one past the last step index
    reentrant: bool = False
    sac: bool = False  # non-reentrant only: context_fn = selective checkpoint with POLICY


@dataclasses.dataclass
class Prog:
    n: int = 2
    d: int = 4
    input_grads: list[bool] = dataclasses.field(default_factory=lambda: [True])
    n_weights: int = 1
    n_biases: int = 1
    weights_are_params: bool = True  # weights/biases as module parameters, or as (requires_grad) inputs
    steps: list[Step] = dataclasses.field(default_factory=list)
    regions: list[Region] = dataclasses.field(default_factory=list)
    policy: dict[str, str] = dataclasses.field(default_factory=dict)  # aten op (e.g. "mm.default") -> policy
    default_policy: str = "PREFER_RECOMPUTE"
    partitioner: str = "min_cut"
    backend: str = "aot_eager"
    budget: float | None = None
    autocast: bool = False  # run under torch.autocast("cpu", torch.bfloat16)

    # ---- structure -------------------------------------------------------------------------------------
    def value_layout(self) -> tuple[list[int], list[list[int]], list[int | None]]:
        """(value index of each input, value indices produced by each step, draw index of each step)."""
        inputs = list(range(len(self.input_grads)))
        produced, draws, nv, nd = [], [], len(inputs), 0
        for s in self.steps:
            k = VOCAB[s.op][1]
            produced.append(list(range(nv, nv + k)))
            nv += k
            draws.append(nd if VOCAB[s.op][4] else None)
            nd += VOCAB[s.op][4]
        return inputs, produced, draws

    def n_values(self) -> int:
        return len(self.input_grads) + sum(VOCAB[s.op][1] for s in self.steps)

    def outputs(self) -> list[int]:
        """Values no step consumes (so nothing is dead code)."""
        used = {a for s in self.steps for a in s.args}
        return [v for v in range(self.n_values()) if v not in used] or [self.n_values() - 1]

    def grad_values(self) -> set[int]:
        """Values that require grad (statically: from grad inputs, weights, and ops of those)."""
        inputs, produced, _ = self.value_layout()
        g = {v for v in inputs if self.input_grads[v]}
        for s, outs in zip(self.steps, produced):
            uses_weight = any(f in t for t in VOCAB[s.op][2] for f in ("{W}", "{B}"))
            if uses_weight or any(a in g for a in s.args):
                g.update(outs)
        return g

    def has_random(self) -> bool:
        return any(VOCAB[s.op][4] for s in self.steps)

    def ops(self) -> list[str]:
        return [s.op for s in self.steps]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Prog:
        raw = json.loads(text)
        raw["steps"] = [Step(**s) for s in raw["steps"]]
        raw["regions"] = [Region(**r) for r in raw["regions"]]
        return Prog(**raw)

    def digest(self) -> str:
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    def no_ac_digest(self) -> str:
        """The digest of the program without AC: its regions, policies and budget do not exist once the checkpoint
        passes through (the regions' bodies run inline, in the same order)."""
        return dataclasses.replace(self, regions=[], policy={}, default_policy=Prog.default_policy, budget=None).digest()

    # ---- rendering ---------------------------------------------------------------------------------------
    def source(self) -> str:
        """``def program(ckpt, R, x0.., w0.., b0..)``: returns (outputs..., draws...); R replays draws when given."""
        _, produced, draws = self.value_layout()
        n_draws = sum(d is not None for d in draws)
        outs = self.outputs()
        xs = [f"x{i}" for i in range(len(self.input_grads))]
        ws = [f"w{i}" for i in range(self.n_weights)] + [f"b{i}" for i in range(self.n_biases)]
        lines = [f"def program(ckpt, R, {', '.join(xs + ws)}):"]
        body = [f"v{i} = x{i}" for i in range(len(xs))]
        body += self._block(0, len(self.steps), None, produced, draws, outs)
        ret = [f"v{v}" for v in outs] + [f"r{k}" for k in range(n_draws)]
        body.append(f"return ({', '.join(ret)},)")
        if self.autocast:
            lines.append('    with torch.autocast("cpu", dtype=torch.bfloat16):')
            lines += ["        " + ln for ln in body]
        else:
            lines += ["    " + ln for ln in body]
        return "\n".join(lines) + "\n"

    def _block(self, start, end, region, produced, draws, outs) -> list[str]:
        out: list[str] = []
        i = start
        while i < end:
            inner = [r for r in self.regions if r.start == i and r is not region and r.end <= end]
            if inner:
                r = max(inner, key=lambda r: r.end)
                out += self._region(r, produced, draws, outs)
                i = r.end
                continue
            out += self._step(i, produced[i], draws[i])
            i += 1
        return out

    def _region(self, r: Region, produced, draws, outs) -> list[str]:
        idx = self.regions.index(r)
        inside = set(range(r.start, r.end))
        defined = {v for i in inside for v in produced[i]}
        used_in = sorted({a for i in inside for a in self.steps[i].args} - defined)
        used_after = {a for j, s in enumerate(self.steps) if j >= r.end for a in s.args} | set(outs)
        rets = [f"v{v}" for v in sorted(defined & used_after)] + [f"r{draws[i]}" for i in sorted(inside) if draws[i] is not None]
        params = ", ".join(f"v{v}" for v in used_in)
        lines = [f"def region{idx}({params}):"]
        lines += ["    " + ln for ln in self._block(r.start, r.end, r, produced, draws, outs)]
        lines.append(f"    return ({', '.join(rets)},)")
        kw = f"use_reentrant={r.reentrant}"
        if r.sac and not r.reentrant:
            kw += ", context_fn=functools.partial(create_selective_checkpoint_contexts, policy_fn)"
        call = f"ckpt(region{idx}, {params}, {kw})" if params else f"ckpt(region{idx}, {kw})"
        lines.append(f"{', '.join(rets)}, = {call}" if rets else call)
        return lines

    def _step(self, i, outs_v, draw) -> list[str]:
        s = self.steps[i]
        fields = dict(n=self.n, d=self.d, h=self.d // 2, W=f"w{s.w}", B=f"b{s.b}", t=f"_s{i}", k=draw, r=f"r{draw}")
        fields.update({k: f"v{a}" for k, a in zip("ab", s.args)})
        fields.update({"o": f"v{outs_v[0]}", "o0": f"v{outs_v[0]}", "o1": f"v{outs_v[-1]}"})
        return [t.format(**fields) for t in VOCAB[s.op][2]]

    def policy_source(self) -> str:
        entries = "".join(f"    torch.ops.aten.{op}: CheckpointPolicy.{p},\n" for op, p in sorted(self.policy.items()))
        return (f"POLICY = {{\n{entries}}}\n\n\ndef policy_fn(ctx, op, *args, **kwargs):\n"
                f"    return POLICY.get(op, CheckpointPolicy.{self.default_policy})\n")

    def module_source(self) -> str:
        """Imports, policy and program: enough to ``exec`` (needs only torch)."""
        return ("import functools\n\nimport torch\nimport torch.nn.functional as F\n"
                "from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts\n\n"
                f"{self.policy_source()}\n\n{self.source()}")

    def namespace(self) -> dict:
        ns: dict = {}
        exec(compile(self.module_source(), f"<fuzz program {self.digest()}>", "exec"), ns)
        return ns

    def tensors(self, device="cpu", dtype=None):
        """Seeded inputs and weights: (inputs, weights); weights scaled so values stay O(1)."""
        import torch

        dtype = dtype or torch.float32
        g = torch.Generator().manual_seed(0)
        xs = [torch.randn(self.n, self.d, generator=g, dtype=dtype).to(device).requires_grad_(rg) for rg in self.input_grads]
        ws = [(torch.randn(self.d, self.d, generator=g, dtype=dtype) / self.d ** 0.5).to(device) for _ in range(self.n_weights)]
        bs = [torch.randn(self.d, generator=g, dtype=dtype).to(device) for _ in range(self.n_biases)]
        return xs, [t.requires_grad_() for t in ws + bs]

    def describe(self) -> str:
        regs = ", ".join(f"[{r.start}:{r.end}]{'R' if r.reentrant else 'N'}{'+sac' if r.sac else ''}" for r in self.regions)
        return (f"{len(self.steps)} ops ({' '.join(self.ops())}), regions {regs or 'none'}, {self.partitioner}/{self.backend}"
                f"{'' if self.budget is None else f'/budget {self.budget:g}'}{'/autocast-bf16' if self.autocast else ''}")
