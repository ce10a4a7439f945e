"""A generated program: a straight-line DAG of ops on (N, D) tensors, with checkpoint regions and SAC policies.

A program is a frozen value (:class:`Prog` of :class:`Step` and :class:`Region`) in the case database's vocabulary:
its regions checkpoint as a :class:`~harness.core.case.Checkpoint`, its SAC policy says torch's own
:class:`~torch.utils.checkpoint.CheckpointPolicy`, it compiles with a :class:`~harness.core.case.Partitioner` and a
:class:`~harness.core.case.Backend`.  It renders to Python source (:meth:`Prog.source`); that source is both what
the harness executes (through a :class:`harness.core.case.Case`) and the body of a standalone repro script, whose
``SPEC`` line is the program as JSON (:meth:`Prog.to_json`, read back by :meth:`Prog.from_json`).
Every value is an (N, D) float tensor; random ops also produce a *draw* (the random tensor or mask), which the
program returns so that an RNG-independent reference can replay it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping

from torch.utils.checkpoint import CheckpointPolicy

from harness.core.case import Backend, Checkpoint, Partitioner

# (rtol, atol) of generated programs run under bf16 autocast (the oracles and the rendered repro scripts use the same):
# looser than a one-op program's harness.core.checks.AUTOCAST_TOLERANCE, as a chain of up to 7 bf16 ops compounds
# the rounding of each.
DEEP_AUTOCAST_TOLERANCE = (5e-2, 5e-2)


@dataclasses.dataclass(frozen=True)
class Op:
    """One op of the vocabulary.  Template fields: {a} {b} args, {o} / {o0} {o1} outputs, {W} (D, D) weight, {B} (D,)
    bias, {t} unique temp prefix, {n} {d} {h} sizes (h = D // 2); a random op's {r} is its draw, replayed from R[{k}]
    when a replay R is given."""

    arity: int  # values it reads
    outputs: int  # values it produces
    template: tuple[str, ...]  # source lines
    aten: tuple[str, ...]  # the aten ops it dispatches to: the keys of a SAC policy ("mm.default")
    random: bool = False

    @property
    def uses_weights(self) -> bool:
        return any(f in line for line in self.template for f in ("{W}", "{B}"))


U, BI = 1, 2
VOCAB: dict[str, Op] = {
    # matmuls
    "mm": Op(U, 1, ("{o} = torch.mm({a}, {W})",), ("mm.default",)),
    "addmm": Op(U, 1, ("{o} = torch.addmm({B}, {a}, {W})",), ("addmm.default",)),
    "linear": Op(U, 1, ("{o} = F.linear({a}, {W}, {B})",), ("addmm.default", "t.default")),
    "bmm": Op(U, 1, ("{o} = torch.bmm({a}.unsqueeze(0), {W}.unsqueeze(0)).squeeze(0)",), ("bmm.default",)),
    "matmul2": Op(BI, 1, ("{o} = torch.matmul({a}, {b}.t()) @ {a} / {d}",), ("mm.default",)),
    # pointwise unary / activations
    "sin": Op(U, 1, ("{o} = torch.sin({a})",), ("sin.default",)),
    "cos": Op(U, 1, ("{o} = torch.cos({a})",), ("cos.default",)),
    "tanh": Op(U, 1, ("{o} = torch.tanh({a})",), ("tanh.default",)),
    "sigmoid": Op(U, 1, ("{o} = torch.sigmoid({a})",), ("sigmoid.default",)),
    "relu": Op(U, 1, ("{o} = F.relu({a})",), ("relu.default",)),
    "gelu": Op(U, 1, ("{o} = F.gelu({a})",), ("gelu.default",)),
    "silu": Op(U, 1, ("{o} = F.silu({a})",), ("silu.default",)),
    "erf": Op(U, 1, ("{o} = torch.erf({a})",), ("erf.default",)),
    "exp_tanh": Op(U, 1, ("{o} = torch.exp(torch.tanh({a}))",), ("exp.default",)),
    "log1p_abs": Op(U, 1, ("{o} = torch.log1p({a}.abs())",), ("log1p.default", "abs.default")),
    "square": Op(U, 1, ("{o} = {a} * {a}",), ("mul.Tensor",)),
    "clamp": Op(U, 1, ("{o} = {a}.clamp(-1.0, 1.0)",), ("clamp.default",)),
    # binary
    "add": Op(BI, 1, ("{o} = {a} + {b}",), ("add.Tensor",)),
    "sub": Op(BI, 1, ("{o} = {a} - {b}",), ("sub.Tensor",)),
    "mul": Op(BI, 1, ("{o} = {a} * {b}",), ("mul.Tensor",)),
    "div_safe": Op(BI, 1, ("{o} = {a} / ({b}.abs() + 1.0)",), ("div.Tensor",)),
    "maximum": Op(BI, 1, ("{o} = torch.maximum({a}, {b})",), ("maximum.default",)),
    "where": Op(BI, 1, ("{o} = torch.where({a} > {b}, {a}, {b} * 0.5)",), ("where.self", "gt.Tensor")),
    "lerp": Op(BI, 1, ("{o} = torch.lerp({a}, {b}, 0.3)",), ("lerp.Scalar",)),
    # reductions (broadcast back to (N, D))
    "center": Op(U, 1, ("{o} = {a} - {a}.mean(-1, keepdim=True)",), ("mean.dim",)),
    "amax": Op(U, 1, ("{o} = {a} - {a}.amax(-1, keepdim=True)",), ("amax.default",)),
    "sum_all": Op(U, 1, ("{o} = {a} * torch.tanh({a}.sum())",), ("sum.default",)),
    "logsumexp": Op(U, 1, ("{o} = {a} - torch.logsumexp({a}, -1, keepdim=True)",), ("logsumexp.default",)),
    "cumsum": Op(U, 1, ("{o} = torch.cumsum({a}, 0) * 0.5",), ("cumsum.default",)),
    # views / permutes / reshapes
    "permute3d": Op(U, 1, ("{o} = {a}.reshape({n}, {h}, 2).permute(0, 2, 1).reshape({n}, {d})",),
                    ("permute.default", "view.default")),
    "flip_flat": Op(U, 1, ("{o} = {a}.reshape(-1).flip(0).reshape({n}, {d})",), ("flip.default",)),
    "expand_sum": Op(U, 1, ("{o} = {a}.unsqueeze(0).expand(3, {n}, {d}).sum(0)",), ("expand.default", "sum.dim_IntList")),
    "slice_repeat": Op(U, 1, ("{o} = {a}[:, ::2].repeat(1, 2)",), ("slice.Tensor", "repeat.default")),
    "transpose_mm": Op(U, 1, ("{o} = ({a}.t() @ {a}).matmul({W}.t())[:1].expand({n}, {d}) * {a}",),
                       ("t.default", "mm.default")),
    # cat / split
    "chunk_swap": Op(U, 1, ("{t}p, {t}q = {a}.chunk(2, -1)", "{o} = torch.cat([{t}q, {t}p * 2.0], -1)"),
                     ("split.Tensor", "cat.default")),
    "stack_sum": Op(BI, 1, ("{o} = torch.stack([{a}, {b}], 0).sum(0)",), ("stack.default", "sum.dim_IntList")),
    "cat_slice": Op(BI, 1, ("{o} = torch.cat([{a}, {b}], 0)[{n} // 2:{n} // 2 + {n}]",), ("cat.default", "slice.Tensor")),
    # normalisation
    "softmax": Op(U, 1, ("{o} = torch.softmax({a}, -1)",), ("_softmax.default",)),
    "log_softmax": Op(U, 1, ("{o} = torch.log_softmax({a}, -1)",), ("_log_softmax.default",)),
    "layer_norm": Op(U, 1, ("{o} = F.layer_norm({a}, ({d},), {B})",), ("native_layer_norm.default",)),
    # in-place ops (on a fresh intermediate)
    "add_": Op(BI, 1, ("{o} = {a}.clone()", "{o}.add_({b})"), ("add_.Tensor", "clone.default")),
    "mul_": Op(BI, 1, ("{o} = {a} * 1.0", "{o}.mul_({b})"), ("mul_.Tensor",)),
    "relu_": Op(U, 1, ("{o} = {a} + 0.0", "F.relu({o}, inplace=True)"), ("relu_.default",)),
    "sigmoid_": Op(U, 1, ("{o} = {a}.clone()", "{o}.sigmoid_()"), ("sigmoid_.default",)),
    "slice_copy_": Op(BI, 1, ("{o} = {a}.clone()", "{o}[:, :{h}] = {b}[:, {h}:]"), ("copy_.default",)),
    "view_mul_": Op(U, 1, ("{o} = {a}.clone()", "{o}.view(-1)[::2].mul_(2.0)"), ("mul_.Tensor",)),
    # multi-output ops (two values)
    "sort": Op(BI, 2, ("{o0}, {t}i = {a}.sort(-1)", "{o1} = {b}.gather(-1, {t}i)"), ("sort.default", "gather.default")),
    "var_mean": Op(U, 2, ("{t}v, {t}m = torch.var_mean({a}, -1, keepdim=True)", "{o0} = {a} - {t}m", "{o1} = {a} * {t}v"),
                   ("var_mean.correction",)),
    "max_dim": Op(BI, 2, ("{t}m, {t}i = {a}.max(-1, keepdim=True)", "{o0} = {a} - {t}m",
                          "{o1} = {b}.scatter(-1, {t}i, {t}m)"), ("max.dim", "scatter.src")),
    "chunk2": Op(U, 2, ("{t}p, {t}q = {a}.chunk(2, -1)", "{o0} = torch.cat([{t}q, {t}p], -1)",
                        "{o1} = torch.cat([{t}p * {t}q, {t}q], -1)"), ("split.Tensor", "cat.default")),
    # random ops: {r} is the draw; with a replay R it comes from the recorded draws instead
    "dropout": Op(U, 1, ("{o}, {r} = torch.ops.aten.native_dropout({a}, 0.5, True) if R is None else ({a} * R[{k}] * 2.0, R[{k}])",),
                  ("native_dropout.default",), random=True),
    "rand_mask": Op(U, 1, ("{r} = torch.rand_like({a}) if R is None else R[{k}]", "{o} = {a} * ({r} < 0.5)"),
                    ("rand_like.default", "lt.Scalar"), random=True),
    "randn_noise": Op(U, 1, ("{r} = torch.randn_like({a}) if R is None else R[{k}]", "{o} = {a} + 0.5 * {r}"),
                      ("randn_like.default",), random=True),
    "bernoulli": Op(U, 1, ("{r} = torch.bernoulli(torch.full_like({a}, 0.5)) if R is None else R[{k}]", "{o} = {a} * {r}"),
                    ("bernoulli.default",), random=True),
}
# The policies a SAC region's policy function returns (the CPU-offload ones are not drawn: CPU programs).
POLICIES = (CheckpointPolicy.MUST_SAVE, CheckpointPolicy.PREFER_SAVE, CheckpointPolicy.PREFER_RECOMPUTE,
            CheckpointPolicy.MUST_RECOMPUTE)
REGION_CHECKPOINTS = (Checkpoint.NON_REENTRANT, Checkpoint.REENTRANT, Checkpoint.SAC)


def _policy(p) -> CheckpointPolicy:
    return p if isinstance(p, CheckpointPolicy) else CheckpointPolicy[p]


@dataclasses.dataclass(frozen=True)
class Step:
    op: str  # a key of VOCAB
    args: tuple[int, ...]  # value indices
    w: int = 0  # weight index (ops using {W})
    b: int = 0  # bias index (ops using {B})

    def __post_init__(self):
        if self.op not in VOCAB:
            raise ValueError(f"unknown op {self.op!r}; the vocabulary has {sorted(VOCAB)}")
        object.__setattr__(self, "args", tuple(self.args))


@dataclasses.dataclass(frozen=True)
class Region:
    """Steps ``start`` to ``end`` (exclusive) run inside one ``checkpoint`` call: non-reentrant, reentrant, or
    non-reentrant with ``context_fn`` = selective checkpointing under the program's policy (SAC)."""

    start: int
    end: int
    checkpoint: Checkpoint = Checkpoint.NON_REENTRANT

    def __post_init__(self):
        object.__setattr__(self, "checkpoint", Checkpoint(self.checkpoint))
        if self.checkpoint not in REGION_CHECKPOINTS:
            raise ValueError(f"a region checkpoints as one of {[str(c) for c in REGION_CHECKPOINTS]}, not {self.checkpoint}")

    @property
    def reentrant(self) -> bool:
        return self.checkpoint is Checkpoint.REENTRANT

    @property
    def sac(self) -> bool:
        return self.checkpoint is Checkpoint.SAC


@dataclasses.dataclass(frozen=True)
class Prog:
    n: int = 2
    d: int = 4
    input_grads: tuple[bool, ...] = (True,)
    n_weights: int = 1
    n_biases: int = 1
    weights_are_params: bool = True  # weights/biases as module parameters, or as (requires_grad) inputs
    steps: tuple[Step, ...] = ()
    regions: tuple[Region, ...] = ()
    # SAC regions' policy: (aten op, e.g. "mm.default", its policy) sorted by op; a mapping is accepted
    policy: tuple[tuple[str, CheckpointPolicy], ...] = ()
    default_policy: CheckpointPolicy = CheckpointPolicy.PREFER_RECOMPUTE
    partitioner: Partitioner = Partitioner.MIN_CUT
    backend: Backend = Backend.AOT_EAGER
    budget: float | None = None
    autocast: bool = False  # run under torch.autocast("cpu", torch.bfloat16)

    def __post_init__(self):
        policy = self.policy.items() if isinstance(self.policy, Mapping) else self.policy
        for name, value in (("input_grads", tuple(self.input_grads)), ("steps", tuple(self.steps)),
                            ("regions", tuple(self.regions)),
                            ("policy", tuple(sorted((op, _policy(p)) for op, p in policy))),
                            ("default_policy", _policy(self.default_policy)),
                            ("partitioner", Partitioner(self.partitioner)), ("backend", Backend(self.backend))):
            object.__setattr__(self, name, value)

    # ---- structure -------------------------------------------------------------------------------------
    def value_layout(self) -> tuple[list[int], list[list[int]], list[int | None]]:
        """(value index of each input, value indices produced by each step, draw index of each step)."""
        inputs = list(range(len(self.input_grads)))
        produced, draws, nv, nd = [], [], len(inputs), 0
        for s in self.steps:
            op = VOCAB[s.op]
            produced.append(list(range(nv, nv + op.outputs)))
            nv += op.outputs
            draws.append(nd if op.random else None)
            nd += op.random
        return inputs, produced, draws

    def n_values(self) -> int:
        return len(self.input_grads) + sum(VOCAB[s.op].outputs for s in self.steps)

    def n_draws(self) -> int:
        """Random draws the program returns after its outputs (one per random op)."""
        return sum(VOCAB[s.op].random for s in self.steps)

    def outputs(self) -> list[int]:
        """Values no step consumes (so nothing is dead code)."""
        used = {a for s in self.steps for a in s.args}
        return [v for v in range(self.n_values()) if v not in used] or [self.n_values() - 1]

    def grad_values(self) -> set[int]:
        """Values that require grad (statically: from grad inputs, weights, and ops of those)."""
        inputs, produced, _ = self.value_layout()
        g = {v for v in inputs if self.input_grads[v]}
        for s, outs in zip(self.steps, produced):
            if VOCAB[s.op].uses_weights or any(a in g for a in s.args):
                g.update(outs)
        return g

    def has_random(self) -> bool:
        return self.n_draws() > 0

    def ops(self) -> list[str]:
        return [s.op for s in self.steps]

    def to_json(self) -> str:
        """The program as the ``SPEC`` line of a finding script holds it (and :meth:`digest` hashes it)."""
        spec = dict(dataclasses.asdict(self), partitioner=str(self.partitioner), backend=str(self.backend),
                    policy={op: p.name for op, p in self.policy}, default_policy=self.default_policy.name,
                    regions=[{"start": r.start, "end": r.end, "reentrant": r.reentrant, "sac": r.sac}
                             for r in self.regions])
        return json.dumps(spec, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Prog:
        raw = json.loads(text)
        regions = [Region(r["start"], r["end"], Checkpoint.REENTRANT if r["reentrant"]
                          else Checkpoint.SAC if r["sac"] else Checkpoint.NON_REENTRANT) for r in raw["regions"]]
        return Prog(**dict(raw, steps=[Step(**s) for s in raw["steps"]], regions=regions))

    def digest(self) -> str:
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    def no_ac_digest(self) -> str:
        """The digest of the program without AC: its regions, policies and budget do not exist once the checkpoint
        passes through (the regions' bodies run inline, in the same order)."""
        return dataclasses.replace(self, regions=(), policy=(), default_policy=Prog.default_policy, budget=None).digest()

    # ---- rendering ---------------------------------------------------------------------------------------
    def source(self) -> str:
        """``def program(ckpt, R, x0.., w0.., b0..)``: returns (outputs..., draws...); R replays draws when given."""
        _, produced, draws = self.value_layout()
        outs = self.outputs()
        xs = [f"x{i}" for i in range(len(self.input_grads))]
        ws = [f"w{i}" for i in range(self.n_weights)] + [f"b{i}" for i in range(self.n_biases)]
        lines = [f"def program(ckpt, R, {', '.join(xs + ws)}):"]
        body = [f"v{i} = x{i}" for i in range(len(xs))]
        body += self._block(0, len(self.steps), None, produced, draws, outs)
        ret = [f"v{v}" for v in outs] + [f"r{k}" for k in range(self.n_draws())]
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
            inner = [j for j, r in enumerate(self.regions) if r.start == i and j != region and r.end <= end]
            if inner:
                j = max(inner, key=lambda j: self.regions[j].end)
                out += self._region(j, produced, draws, outs)
                i = self.regions[j].end
                continue
            out += self._step(i, produced[i], draws[i])
            i += 1
        return out

    def _region(self, idx: int, produced, draws, outs) -> list[str]:
        r = self.regions[idx]
        inside = set(range(r.start, r.end))
        defined = {v for i in inside for v in produced[i]}
        used_in = sorted({a for i in inside for a in self.steps[i].args} - defined)
        used_after = {a for j, s in enumerate(self.steps) if j >= r.end for a in s.args} | set(outs)
        rets = [f"v{v}" for v in sorted(defined & used_after)] + [f"r{draws[i]}" for i in sorted(inside) if draws[i] is not None]
        params = ", ".join(f"v{v}" for v in used_in)
        lines = [f"def region{idx}({params}):"]
        lines += ["    " + ln for ln in self._block(r.start, r.end, idx, produced, draws, outs)]
        lines.append(f"    return ({', '.join(rets)},)")
        kw = f"use_reentrant={r.reentrant}"
        if r.sac:
            kw += ", context_fn=functools.partial(create_selective_checkpoint_contexts, policy_fn)"
        call = f"ckpt(region{idx}, {params}, {kw})" if params else f"ckpt(region{idx}, {kw})"
        lines.append(f"{', '.join(rets)}, = {call}" if rets else call)
        return lines

    def _step(self, i, outs_v, draw) -> list[str]:
        s = self.steps[i]
        fields = dict(n=self.n, d=self.d, h=self.d // 2, W=f"w{s.w}", B=f"b{s.b}", t=f"_s{i}", k=draw, r=f"r{draw}")
        fields.update({k: f"v{a}" for k, a in zip("ab", s.args)})
        fields.update({"o": f"v{outs_v[0]}", "o0": f"v{outs_v[0]}", "o1": f"v{outs_v[-1]}"})
        return [t.format(**fields) for t in VOCAB[s.op].template]

    def policy_source(self) -> str:
        entries = "".join(f"    torch.ops.aten.{op}: CheckpointPolicy.{p.name},\n" for op, p in self.policy)
        return (f"POLICY = {{\n{entries}}}\n\n\ndef policy_fn(ctx, op, *args, **kwargs):\n"
                f"    return POLICY.get(op, CheckpointPolicy.{self.default_policy.name})\n")

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
