"""One training step of a model under an AC policy, eager or compiled, single-process or as one rank of a
distributed program (FSDP2, DDP, tensor parallel), with the figures the distributed and policy cells check:
loss, every parameter gradient gathered to a full tensor under its clean name, saved bytes of the compiled
backward graphs, and Dynamo's graph/graph-break counts.

Compiled steps go through the pipeline's recording backend (``pipeline.Recorder``) and come back as a
``pipeline.Run``, so the saved bytes come from harness/core/analysis.py and the invariants of harness/core/invariants.py judge
each step (per rank, against the same rank's no-AC step) exactly as they judge a case cell.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter

import torch
import torch.nn as nn

from harness.core import analysis, baselines, checks, figures, invariants, pipeline, policies
from harness.rows import models
from harness.core.case import Axes, Case, Cell, CompileSpec
from harness.rows.scenarios import Scenario

RECORD_AXES = Axes(partitioner="min_cut", backend="aot_eager")
# (rtol, atol) per dtype.  fp32: torch's default (harness/core/checks.py), as every case cell.  bf16: torch's rtol with
# atol 1e-2: the bf16 program (autocast, or FSDP2's bf16 parameters) is compared with a reference that rounds at
# other points (autocast alone, the full batch on one rank), so gradients near zero differ by bf16 rounding steps.
TOLERANCES = {"float32": checks.TOLERANCES["float32"], "bfloat16": (checks.TOLERANCES["bfloat16"][0], 1e-2)}


def recorder(partition: str = "min_cut") -> pipeline.Recorder:
    """The pipeline's recording backend (aot_eager, ``partition``): every joint, forward and backward graph kept."""
    return pipeline.Recorder(CompileSpec(), dataclasses.replace(RECORD_AXES, partitioner=partition))


def recorded(rec: pipeline.Recorder, name: str, no_ac: pipeline.Run | None = None) -> pipeline.Run:
    """What ``rec`` recorded, as a pipeline Run of a stand-in cell named ``name`` (area "training"), so the analysis,
    the invariants and the summary golden read it as they read a case cell.  ``no_ac``: the same step recorded
    without AC, the baseline the comparing invariants use (the pipeline cannot rebuild a training step)."""
    case = Case.stand_in(name, "training", "a training step is recorded by harness.tools.training, not rebuilt from a case")
    run = pipeline.Run(Cell(case, rec.axes), no_ac=no_ac)
    return rec.into(run)


def activation_bytes(run: pipeline.Run) -> int | None:
    """Saved activations produced inside the compiled graphs (harness.core.analysis provenance "activation")."""
    a = analysis.of(run)
    return a.intermediate_bytes if a is not None else None


def saved_producers(run: pipeline.Run) -> dict[str, int]:
    """Count of the forward ops whose outputs are saved activations; a collective's result, read through
    ``wait_tensor``, counts as the collective (``_c10d_functional.reduce_scatter_tensor.default``)."""
    a = analysis.of(run)
    names = {s.name for s in (a.saved if a is not None else []) if s.kind == "activation"}
    out: Counter = Counter()
    for fw in run.graphs.get("fw", []):
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


def verdicts(run: pipeline.Run) -> dict:
    """The invariants of a recorded step (checks made, failures, those that did not run and why) and its summary
    golden text (None: nothing analysable was recorded)."""
    found = invariants.violations(run)
    a = analysis.of(run)
    return {"invariant_checks": found.checks, "invariant_failures": found.failed, "invariant_not_run": found.not_run,
            "summary": figures.summary_text(a) if a is not None else None}


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
    """One sentence per gradient that differs (harness.core.checks' comparison): within the dtype's tolerance, or bitwise."""
    rtol, atol = (0.0, 0.0) if exact else TOLERANCES[dtype]
    problems = []
    if set(seen) != set(expected):
        problems.append(f"expected gradients of {sorted(expected)}; seen {sorted(seen)}")
    for name in sorted(set(seen) & set(expected)):
        problems.append(checks.mismatch(f"grad {name}", seen[name], expected[name], rtol, atol))
    return [p for p in problems if p]


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
    """The model under ``policy``, one step; returns loss, grads, the recorded run (backend "record"), its saved
    activation bytes and Dynamo's graph count."""
    model = build(kind, cfg, n_layers)
    x = inputs(kind) if x is None else x
    policy.apply(model, via=via)
    rec = recorder()
    torch._dynamo.reset()
    m = compile_model(model, compile_mode, rec if backend == "record" else backend)
    loss = step(m, x, x.numel(), policy, autocast)
    run = recorded(rec, f"{kind}-{policy.id}-{compile_mode}")
    return {"loss": loss, "grads": grads(model), "run": run, "saved_activation_bytes": activation_bytes(run),
            "dynamo_graphs": run.counters["graphs"]}


def no_ac_step(kind: str, compile_mode: str, n_layers: int = 2, dynamo_config: tuple = ()) -> dict:
    """:func:`single_process` without AC, as a baseline: loss, grads, saved activation bytes, Dynamo's graph count, and
    ``figures`` (what the comparing invariants read; None: nothing analysable, and then ``run`` itself).  A compiled
    step that ran before under the same torch, harness, environment, thread count and CPU capability comes from the
    baseline cache (``cached``), as a distributed rank's step without AC does (:func:`rank_program`)."""
    path = (baselines.step_path("single_process", kind, compile_mode, f"n_layers={n_layers}", repr(dynamo_config))
            if compile_mode != "none" else None)
    hit = baselines.load_step(path)
    if hit is not None:
        return {**hit["result"], "figures": baselines.figures_of_doc(hit["figures"]), "cached": True}
    with torch._dynamo.config.patch(**dict(dynamo_config)):
        r = single_process(kind, policies.NoAC(), compile_mode=compile_mode, n_layers=n_layers)
    a = analysis.of(r["run"])
    out = {k: r[k] for k in ("loss", "grads", "saved_activation_bytes", "dynamo_graphs")}
    fig = figures.Figures.of(a) if a is not None else None
    if fig is not None:
        baselines.store_step(path, {"result": out, "figures": baselines.figures_doc(fig)})
    return {**out, "figures": fig, "cached": False, "run": r["run"]}


# ---------------------------------------------------------------------------------------------------------------
# Distributed rank programs (tasks of a harness.tools.distributed.RankPool)


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


def rank_program(rank: int, world: int, scenario: Scenario, key: str = "scenario", with_reference: bool = True) -> dict:
    """One step of the distributed program without AC, then with AC (fresh compile each); a recorded scenario also
    returns, per rank, the AC step's invariants (against this rank's no-AC step) and summary golden text.  Rank 0
    also computes the single-process no-AC eager reference on the full batch.

    The step without AC is a baseline: a rank that ran it before under the same torch, harness, scenario, world size,
    environment, thread count and CPU capability takes its gradients, counts and figures from the baseline cache
    (harness/core/baselines.py ``step_path``; ``AC_BASELINE_CACHE=off`` disables it) and says so
    (``no_ac_cached``).  The step with AC always runs, and its gradients are still compared bitwise with the no-AC
    ones: a CPU step of the same program, inputs and thread count gives the same bits in every process."""
    import time

    sc = scenario
    x = inputs(sc.model, sc.batch, sc.seq, models.LlamaConfig().dim)
    result: dict = {"rank": rank, "seconds": {}}
    runs: dict[str, pipeline.Run] = {}
    cache = baselines.step_path("distributed", key, repr(sc), f"rank={rank}", f"world={world}")
    cached = baselines.load_step(cache)
    result["no_ac_cached"] = cached is not None
    for label, pol in (("no_ac", policies.NoAC()), ("ac", sc.get_policy())):
        if label == "no_ac" and cached is not None:
            result["no_ac"], result["seconds"]["no_ac"] = cached["result"], 0.0
            continue
        t0 = time.perf_counter()
        model = build(sc.model, n_layers=sc.n_layers)
        rec = recorder()
        torch._dynamo.reset()
        m = _parallelize(sc, model, rank, world, pol, rec if sc.backend == "record" else sc.backend)
        xl = _local_input(sc, x, rank, world)
        with torch._dynamo.config.patch(**dict(sc.dynamo_config)):
            loss = step(m, xl, _numel_for_loss(sc, x, world), pol, sc.autocast)
        run = runs[label] = recorded(rec, f"{key}-rank{rank}-{label}", no_ac=runs.get("no_ac"))
        if label == "ac" and cached is not None and cached["figures"] is not None:
            run.no_ac_figures = baselines.figures_of_doc(cached["figures"])
        result[label] = {"loss": loss.item(), "grads": grads(model), "dynamo_graphs": run.counters["graphs"],
                         "bw_graphs": len(run.graphs.get("bw", [])),
                         "saved_activation_bytes": activation_bytes(run) if sc.recorded else None,
                         "saved_producers": saved_producers(run) if sc.recorded else None}
        result["seconds"][label] = time.perf_counter() - t0
        if label == "no_ac":
            a = analysis.of(run)
            if a is not None or not sc.recorded:  # a step with nothing analysable is run again (its check fails)
                doc = baselines.figures_doc(figures.Figures.of(a)) if a is not None else None
                baselines.store_step(cache, {"result": result["no_ac"], "figures": doc})
    if sc.recorded:
        result["verdicts"] = verdicts(runs["ac"])
    if with_reference and rank == 0:
        ref = build(sc.model, n_layers=sc.n_layers)
        step(ref, x, x.numel(), None, sc.autocast if sc.autocast or sc.fsdp_mp else None)
        result["reference"] = {"grads": grads(ref)}
    return result
