"""One training step of a model under an AC policy, eager or compiled, single-process or as one rank of a
distributed program (FSDP2, DDP, tensor parallel), with the figures the distributed and policy cells check:
loss, every parameter gradient gathered to a full tensor under its clean name, saved bytes of the compiled
backward graphs, and Dynamo's graph/graph-break counts.

Everything here depends on torch directly (and on ``harness.analysis.saved_tensors`` for saved bytes).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools

import torch
import torch.nn as nn

from harness import models, policies

# (rtol, atol) per dtype, as harness/checks.py: a gradient g matches the reference r when
# |g - r| <= atol + rtol * |r| elementwise.
TOLERANCES = {"float32": (1e-5, 1e-5), "bfloat16": (1.6e-2, 1e-2)}


@dataclasses.dataclass
class Recorder:
    """A recording aot_eager backend: keeps every backward graph the partitioner produced."""

    partition: str = "min_cut"
    bw_graphs: list = dataclasses.field(default_factory=list)
    fw_graphs: list = dataclasses.field(default_factory=list)
    dynamo_graphs: int = 0

    def backend(self):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd
        from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition

        def fw(gm, _):
            self.fw_graphs.append(gm)
            return make_boxed_func(gm.forward)

        def bw(gm, _):
            self.bw_graphs.append(gm)
            return make_boxed_func(gm.forward)

        aot = aot_autograd(fw_compiler=fw, bw_compiler=bw, partition_fn=min_cut_rematerialization_partition
                           if self.partition == "min_cut" else default_partition)

        def backend(gm, example_inputs):
            self.dynamo_graphs += 1
            return aot(gm, example_inputs)

        return backend

    def saved(self):
        from harness.analysis import saved_tensors

        return [s for bw in self.bw_graphs for s in saved_tensors(bw)]

    def saved_producers(self) -> dict[str, int]:
        """Count of the forward ops whose outputs are saved activations; a collective's result, read through
        ``wait_tensor``, counts as the collective (``_c10d_functional.reduce_scatter_tensor.default``)."""
        from collections import Counter

        names = {s.name for s in self.saved() if s.kind == "activation"}
        out: Counter = Counter()
        for fw in self.fw_graphs:
            for n in fw.graph.nodes:
                if n.name not in names or n.op != "call_function":
                    continue
                src = n
                while src.op == "call_function" and "wait_tensor" in str(src.target) and src.args:
                    src = src.args[0]
                if src.op == "call_function" and "getitem" in str(src.target) and src.args:
                    src = src.args[0]
                out[str(src.target)] += 1
        return dict(out)

    def saved_bytes(self, *kinds) -> int | None:
        sizes = [s.bytes for s in self.saved() if not kinds or s.kind in kinds]
        return None if None in sizes else sum(sizes)


def loss_of(out: torch.Tensor, numel_total: int) -> torch.Tensor:
    """Sum of squares over the global number of elements: splits over batch or sequence shards by addition."""
    return out.float().pow(2).sum() / numel_total


def build(kind: str, cfg=None, n_layers: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "llama":
        return models.llama(cfg or models.LlamaConfig(), n_layers)
    if kind == "moe":
        return models.llama(cfg or models.LlamaConfig(), n_layers, moe=True)
    if kind == "gpt":
        return models.Stack(lambda: models.GPTBlock(cfg or models.GPTConfig()), n_layers)
    raise ValueError(f"unknown model kind {kind!r}")


def inputs(kind: str, batch: int = 4, seq: int = 16, dim: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (seq, batch, dim) if kind == "gpt" else (batch, seq, dim)
    return torch.randn(shape, generator=g)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient as a full (gathered) fp32 CPU tensor, under its clean name."""
    out = {}
    for name, p in model.named_parameters():
        g = p.grad
        if g is None:
            continue
        if hasattr(g, "full_tensor"):
            g = g.full_tensor()
        out[policies.clean_name(name)] = g.detach().float().cpu().clone()
    return out


def mismatches(seen: dict, expected: dict, dtype: str = "float32", exact: bool = False) -> list[str]:
    """One sentence per gradient that differs: name, max abs error, tolerance (or 'not bitwise equal')."""
    rtol, atol = TOLERANCES[dtype]
    problems = []
    if set(seen) != set(expected):
        problems.append(f"expected gradients of {sorted(expected)}; seen {sorted(seen)}")
    for name in sorted(set(seen) & set(expected)):
        a, e = seen[name], expected[name]
        if a.shape != e.shape:
            problems.append(f"grad {name}: expected shape {tuple(e.shape)}; seen {tuple(a.shape)}")
            continue
        diff = (a - e).abs()
        if exact:
            if not torch.equal(a, e):
                problems.append(f"grad {name}: expected bitwise equal; seen max abs diff {diff.max().item():.3g} "
                                f"({int((diff != 0).sum())} of {diff.numel()} elements differ)")
        else:
            bad = diff > atol + rtol * e.abs()
            if bad.any():
                problems.append(f"grad {name}: expected |seen-expected| <= {atol:g} + {rtol:g}*|expected|; seen max abs "
                                f"diff {diff.max().item():.3g} at {int(bad.sum())} of {bad.numel()} elements "
                                f"(max |expected| {e.abs().max().item():.3g})")
    return problems


def graph_breaks_of(fn, *args) -> tuple[int, int, list[str]]:
    """(graphs, graph breaks, reasons) Dynamo reports for ``fn(*args)`` (torch._dynamo.explain)."""
    ex = torch._dynamo.explain(fn)(*args)
    return ex.graph_count, ex.graph_break_count, [str(b.reason).splitlines()[0] for b in ex.break_reasons]


def compile_model(model: nn.Module, mode: str, backend):
    """mode "none", "per_block" (each block of model.layers, torchtitan's apply_compile) or "whole"."""
    if mode == "none":
        return model
    if mode == "per_block":
        layers = policies.blocks_of(model)
        for i in range(len(layers)):
            layers[i] = torch.compile(layers[i], backend=backend)
        return model
    if mode == "whole":
        return torch.compile(model, backend=backend)
    raise ValueError(f"compile mode must be none, per_block or whole; seen {mode!r}")


def step(model: nn.Module, x: torch.Tensor, numel_total: int, policy: policies.Policy | None = None,
         autocast: str | None = None) -> torch.Tensor:
    """Forward + backward once; the policy's config patch covers the first (compiling) call."""
    ctx = policy.context() if policy is not None else contextlib.nullcontext()
    ac = torch.autocast("cpu", dtype=getattr(torch, autocast)) if autocast else contextlib.nullcontext()
    with ctx:
        with ac:
            out = model(x)
        loss = loss_of(out, numel_total)
        loss.backward()
    return loss.detach()


def single_process(kind: str, policy: policies.Policy, compile_mode: str = "none", via: str = "wrapper",
                   autocast: str | None = None, n_layers: int = 2, cfg=None, x: torch.Tensor | None = None,
                   backend: str = "record") -> dict:
    """The model under ``policy``, one step; returns loss, grads, saved bytes and Dynamo's counts."""
    model = build(kind, cfg, n_layers)
    x = inputs(kind) if x is None else x
    policy.apply(model, via=via)
    rec = Recorder()
    be = rec.backend() if backend == "record" else backend
    torch._dynamo.reset()
    m = compile_model(model, compile_mode, be)
    loss = step(m, x, x.numel(), policy, autocast)
    return {"loss": loss, "grads": grads(model), "saved_activation_bytes": rec.saved_bytes("activation"),
            "saved": [(s.name, s.type, s.bytes, s.kind) for s in rec.saved()], "dynamo_graphs": rec.dynamo_graphs}


# ---------------------------------------------------------------------------------------------------------------
# Distributed rank programs (run by harness.distributed.launch)


@dataclasses.dataclass(frozen=True)
class Scenario:
    parallel: str  # fsdp2 | ddp | tp | tp_sp
    model: str = "llama"  # llama | moe
    policy: str = "full"  # a harness.policies name
    policy_params: tuple = ()  # ((key, value), ...)
    via: str = "wrapper"  # wrapper | function | apply_ac
    compile: str = "per_block"  # none | per_block | whole
    backend: str = "record"  # record (aot_eager recording saved bytes) | inductor | aot_eager
    autocast: str | None = None  # "bfloat16": the step under torch.autocast
    fsdp_mp: bool = False  # FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)
    n_layers: int = 2
    batch: int = 4
    seq: int = 16
    bucket_cap_mb: float = 0.02  # DDP: small buckets, so DDPOptimizer splits the graph inside the blocks
    # DDPOptimizer sizes its first bucket with dist._DEFAULT_FIRST_BUCKET_BYTES (1 MiB) while DDP itself uses
    # bucket_cap_mb for it when that is given, and asserts first <= cap: bucket_cap_mb < 1 fails to compile
    # (findings/ddp_compile_small_bucket_cap_asserts.py).  The workaround aligns the constant with the cap.
    ddp_first_bucket_workaround: bool = True
    # Dynamo config for the step; MoE scenarios set capture_dynamic_output_shape_ops (see moe_scenario): without it
    # the nonzero breaks the graph and a checkpointed MoE block is not compiled at all
    dynamo_config: tuple = ()

    @property
    def dtype(self) -> str:
        return "bfloat16" if self.autocast or self.fsdp_mp else "float32"

    def get_policy(self) -> policies.Policy:
        return policies.get(self.policy, **dict(self.policy_params))


_FIRST_BUCKET_BYTES = torch.distributed._DEFAULT_FIRST_BUCKET_BYTES if torch.distributed.is_available() else None


def _parallelize(sc: Scenario, model: nn.Module, rank: int, world: int, policy: policies.Policy, backend):
    """torchtitan's order: TP -> AC -> compile -> FSDP (per block, then the root); DDP wraps the AC'd model and is
    compiled whole (DDPOptimizer splits at bucket boundaries)."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    if sc.parallel in ("tp", "tp_sp"):
        from torch.distributed.tensor.parallel import parallelize_module

        for block in model.layers:
            parallelize_module(block, mesh, models.llama_tp_plan(sequence_parallel=sc.parallel == "tp_sp"))
    policy.apply(model, via=sc.via)
    if sc.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        import torch.distributed as dist

        dist._DEFAULT_FIRST_BUCKET_BYTES = (int(sc.bucket_cap_mb * 2**20) if sc.ddp_first_bucket_workaround
                                            else _FIRST_BUCKET_BYTES)
        ddp = DDP(model, bucket_cap_mb=sc.bucket_cap_mb)
        return compile_model(ddp, "whole", backend) if sc.compile != "none" else ddp
    if sc.compile == "per_block":
        compile_model(model, "per_block", backend)
    if sc.parallel == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if sc.fsdp_mp else MixedPrecisionPolicy()
        for block in model.layers:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
    if sc.compile == "whole":
        return compile_model(model, "whole", backend)
    return model


def _local_input(sc: Scenario, x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    if sc.parallel in ("fsdp2", "ddp"):  # data parallel: a batch shard
        return x.chunk(world, dim=0)[rank]
    if sc.parallel == "tp_sp":  # sequence parallel: a sequence shard (torchtitan's embedding output)
        return x.chunk(world, dim=1)[rank]
    return x  # tensor parallel: the same input on every rank


def _numel_for_loss(sc: Scenario, x: torch.Tensor, world: int) -> int:
    # DP ranks average their gradients: each rank's loss is its own mean; SP/TP ranks sum to the global loss.
    return x.numel() // world if sc.parallel in ("fsdp2", "ddp") else x.numel()


def rank_program(rank: int, world: int, scenario: Scenario, with_reference: bool = True) -> dict:
    """One step of the distributed program with AC and the same program without AC (fresh compile each);
    rank 0 also computes the single-process no-AC eager reference on the full batch."""
    sc = scenario
    x = inputs(sc.model, sc.batch, sc.seq, models.LlamaConfig().dim)
    import time

    result: dict = {"rank": rank, "seconds": {}}
    for label, pol in (("ac", sc.get_policy()), ("no_ac", policies.NoAC())):
        t0 = time.perf_counter()
        model = build(sc.model, n_layers=sc.n_layers)
        rec = Recorder()
        be = rec.backend() if sc.backend == "record" else sc.backend
        torch._dynamo.reset()
        m = _parallelize(sc, model, rank, world, pol, be)
        xl = _local_input(sc, x, rank, world)
        with torch._dynamo.config.patch(**dict(sc.dynamo_config)):
            loss = step(m, xl, _numel_for_loss(sc, x, world), pol, sc.autocast)
        result[label] = {"loss": loss.item(), "grads": grads(model),
                         "saved_activation_bytes": rec.saved_bytes("activation") if sc.backend == "record" else None,
                         "bw_graphs": len(rec.bw_graphs), "dynamo_graphs": rec.dynamo_graphs,
                         "saved_producers": rec.saved_producers() if sc.backend == "record" else None}
        result["seconds"][label] = time.perf_counter() - t0
    if with_reference and rank == 0:
        ref = build(sc.model, n_layers=sc.n_layers)
        step(ref, x, x.numel(), None, sc.autocast if sc.autocast or sc.fsdp_mp else None)
        result["reference"] = {"grads": grads(ref)}
    return result


def rank_batch(rank: int, world: int, scenarios: dict, limit: float = 300.0) -> dict:
    """Several scenarios in one process group (one start-up and compile warm-up for all of them).

    A scenario's exception is caught and returned as its result (``{"error": traceback}``); the rank then stops
    (the peer may be waiting in a collective of that scenario, so later collectives could pair up wrongly) and the
    remaining scenarios are returned as ``{"error": "not run: ..."}``.  A scenario still running after ``limit``
    seconds makes faulthandler dump every thread's stack (naming the scenario's frames) and exit the rank; the
    launcher then fails every cell of the batch with that stack."""
    import faulthandler
    import sys
    import traceback

    out = {}
    failed = None
    for key, sc in scenarios.items():
        if failed:
            out[key] = {"error": f"not run: rank {rank} stopped after scenario {failed} failed"}
            continue
        print(f"[rank {rank}] scenario {key}", file=sys.stderr, flush=True)
        faulthandler.dump_traceback_later(limit, exit=True, file=sys.stderr)
        try:
            out[key] = rank_program(rank, world, sc)
        except Exception:
            out[key] = {"error": traceback.format_exc()}
            failed = key
        finally:
            faulthandler.cancel_dump_traceback_later()
    return out
