"""The runners: one per :class:`~harness.core.case.Runner` member, each taking a cell's program through torch its own
way and recording a :class:`~harness.core.pipeline.Run`.  :func:`record` dispatches on ``case.runner``; a row says
*what* it is (its runner, its ``Trace`` spec, its variants, its ambient state), never *how*.

* ``STANDARD``: eager without and with AC, then the compiled program through the recording backend
  (harness/core/pipeline.py), per variant when the case has some;
* ``EXPORT``: the program, wrapped in a module, exported to torch IR (``torch.export._trace._export_to_torch_ir``:
  the checkpoint is a ``tag_activation_checkpoint`` HOP, a SAC ``context_fn`` rides on the body's meta), then that
  graph compiled like upstream's ``aot_eager_decomp_partition`` (the case's decompositions and the cell's
  partitioner), forward and backward; the program without AC goes the same way (``Run.no_ac``);
* ``EXPORTED_PROGRAM``: ``torch.export.export`` of the program, strict or not (the cell's ``ExportMode``), and the
  exported program's module run eagerly forward and backward against eager with and without AC; the program without
  AC exported and run the same way (``Run.no_ac``);
* ``TRACE``: ``make_fx`` of a program that computes its own gradients, under the non-strict tracing context
  (``Case.trace``), the traced graph run on the inputs against the eager program with and without AC;
* ``REMAT``: one forward-loss-backward graph (``trace_autograd_ops``) compiled with
  ``remat_using_tags_for_fwd_loss_bwd_graph`` on ("with_remat") and off ("without_remat");
* ``JOINT_PASSES``: that graph before and after inductor's joint-graph passes;
* ``EAGER``: the program's eager call, no compile (errors raised in eager code);
* ``MEMORY``: each variant compiled (aot_eager) and, after a warm-up step, the device allocator's requested bytes
  across one forward, less its output (CUDA);
* ``CONTRACT``: a checkpoint-contract clause's own program, which runs torch itself and compiles through
  ``ctx.compile`` (the cell's backend and partitioner, nothing recorded); its observations are the run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import time

import torch
import torch.fx as fx
import torch.nn as nn

from harness.core import oracles
from harness.core.case import DTYPES, Axes, Backend, BuildContext, Case, Cell, ExportMode, Runner
from harness.core.normalize import graphs_text
from harness.core.pipeline import (BUILD_SEED, RUN_SEED, Outcome, Recorder, Run, compile_and_record, config_patches,
                                   cotangent_loss, eager_pair, execute, flat_tensors, fresh_state, partition_fn)


def record(cell: Cell) -> Run:
    """The cell's run, recorded by its case's runner (no baselines: harness/core/run.py adds what verdicts need)."""
    fresh_state()
    start = time.perf_counter()
    run = RUNNERS[cell.case.runner](cell)
    if cell.case.runner is not Runner.STANDARD:  # the standard runner splits its time into eager, compile, run
        run.timings["runner"] = time.perf_counter() - start
    return run


def _context(cell: Cell, ac: bool = True, variant: str = "") -> BuildContext:
    return BuildContext(device=cell.axes.device, dtype=DTYPES[cell.axes.dtype], ac=ac, variant=variant)


def _build(cell: Cell, ac: bool = True, variant: str = ""):
    torch.manual_seed(BUILD_SEED)
    return cell.case.build(_context(cell, ac, variant))


def _set_texts(run: Run, graphs: dict) -> Run:
    """``run.graphs`` and their canonical texts (the Dynamo graph unannotated, the others with their policies)."""
    start = time.perf_counter()
    for kind, value in graphs.items():
        run.graphs[kind] = list(value)
        run.texts[kind] = graphs_text(value, annotate=kind != "dynamo")
    run.timings["normalize"] = time.perf_counter() - start
    return run


def _fresh(inputs: tuple) -> tuple:
    return tuple(t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
                 for t in inputs)


# --- STANDARD -------------------------------------------------------------------------------------------------------

def _standard_one(cell: Cell, variant: str = "") -> Run:
    case, axes = cell.case, cell.axes
    run = Run(cell)
    if case.expect.raises is None:
        start = time.perf_counter()
        run.reference, run.eager = eager_pair(case, axes.device, axes.dtype, variant, axes.composition, axes.ambient)
        run.timings["eager"] = time.perf_counter() - start  # ~0 when another axis of the case computed it
    probe = oracles.probe if oracles.judged_at_run_time(axes) and not variant else None
    return compile_and_record(case, axes, ac=True, run=run, variant=variant, probe=probe)


def standard(cell: Cell) -> Run:
    """Eager without and with AC, then torch.compile through the recording backend; a case with variants gets one
    such run per variant, its graphs and texts under ``<kind>_<variant>``."""
    if not cell.case.variants:
        return _standard_one(cell)
    run = Run(cell)
    for variant in cell.case.variants:
        fresh_state()
        part = run.parts[variant] = _standard_one(cell, variant)
        run.graphs.update({f"{kind}_{variant}": gms for kind, gms in part.graphs.items()})
        run.texts.update({f"{kind}_{variant}": text for kind, text in part.texts.items()})
        run.compile_seconds += part.compile_seconds
    return run


# --- EXPORT ---------------------------------------------------------------------------------------------------------

def export_to_torch_ir(fn, args) -> fx.GraphModule:
    """Upstream's export compiler, first half: ``fn`` wrapped in a module and traced to torch IR."""
    from torch.export import _trace

    class WrapAsModule(nn.Module):
        def forward(self, *a):
            return fn(*a)

    return _trace._export_to_torch_ir(
        f=WrapAsModule(), args=_fresh(args), kwargs={}, dynamic_shapes=None, preserve_module_call_signature=(),
        restore_fqn=False, prefer_deferred_runtime_asserts_over_guards=False, _log_export_usage=False)


def _call(fn, inputs: tuple, backward: bool = True) -> Outcome:
    """``fn`` on fresh copies of ``inputs``, forward and (``backward``) the cotangent loss backward."""
    inputs = _fresh(inputs)
    torch.manual_seed(RUN_SEED)
    outputs = flat_tensors(fn(*inputs))
    grads = {}
    if backward:
        loss = cotangent_loss(outputs)
        if loss is None:
            raise AssertionError("no differentiable output to backpropagate")
        loss.backward()
        grads = {f"input[{i}]": t.grad for i, t in enumerate(flat_tensors(inputs)) if t.requires_grad}
    return Outcome([o.detach() for o in outputs], grads)


@functools.lru_cache(maxsize=64)
def _exported(case: Case, device: str, dtype: str, ac: bool):
    """The case's program and its torch-IR export, once per case: the export comes before any partitioner, so the
    cells of a case (one per partitioner) share it and compile it each with their own (``--dist loadgroup`` keeps a
    case's cells on one worker).  The program's inputs are cloned for every run, never consumed."""
    prog = _build(Cell(case, Axes(device=device, dtype=dtype)), ac)
    fresh_state()
    return prog, export_to_torch_ir(prog.fn, prog.inputs)


def _export_run(cell: Cell, ac: bool) -> Run:
    """The program (with or without AC) exported, then compiled through the recording backend and run."""
    case, axes = cell.case, cell.axes
    prog, gm = _exported(case, axes.device, axes.dtype, ac)
    fresh_state()
    recorder = Recorder(case.compile, axes)  # the case's decompositions + the cell's partitioner, graphs recorded
    start = time.perf_counter()
    compiled = _call(torch.compile(gm, backend=recorder, fullgraph=False), prog.inputs)
    run = Run(Cell(case, axes), compiled=compiled, compile_seconds=time.perf_counter() - start)
    if ac and not any(n.target is torch.ops.higher_order.tag_activation_checkpoint for n in gm.graph.nodes):
        raise AssertionError(f"{cell.id}: expected a tag_activation_checkpoint node in the exported graph, "
                             f"saw:\n{gm.code}")
    return _set_texts(run, {"export": [gm], **{k: v for k, v in recorder.graphs.items() if k in ("joint", "fw", "bw")}})


def export(cell: Cell) -> Run:
    """Export + compile with AC against the same path without AC (upstream's fact: equal outputs and input
    gradients) and against eager without AC; the path without AC is the run's no-AC baseline."""
    with config_patches(cell.case, cell.axes):
        plain = _export_run(cell, ac=False)
        run = _export_run(cell, ac=True)
        program, _ = _exported(cell.case, cell.axes.device, cell.axes.dtype, False)
        run.reference = _call(program.fn, program.inputs)
    run.no_ac = plain
    run.comparisons = [(f"export+compile with AC vs without AC: {name}", a, e)
                       for name, a, e in _pairs(run.compiled, plain.compiled)]
    return run


def _pairs(actual: Outcome, expected: Outcome) -> list[tuple]:
    if len(actual.outputs) != len(expected.outputs) or set(actual.grads) != set(expected.grads):
        raise AssertionError(f"outputs {len(actual.outputs)} vs {len(expected.outputs)}, gradients {sorted(actual.grads)} "
                             f"vs {sorted(expected.grads)}: the two runs do not correspond")
    return ([(f"output[{i}]", a, e) for i, (a, e) in enumerate(zip(actual.outputs, expected.outputs))]
            + [(f"grad of {n}", actual.grads[n], expected.grads[n]) for n in sorted(expected.grads)])


# --- EXPORTED_PROGRAM -----------------------------------------------------------------------------------------------

def export_program(prog, mode: ExportMode):
    """``torch.export.export`` of a built program (``mode``: strict or not) on copies of its inputs: its ``fn`` is the
    forward of a module that holds the program's module as ``program``, so the parameters are the exported program's
    (lifted, named ``program.<name>``, the same tensors: ``ep.module()`` accumulates their gradients where eager
    does)."""
    fn = prog.fn

    class Exported(nn.Module):
        def __init__(self):
            super().__init__()
            if prog.module is not None:
                self.program = prog.module
            self.call_module = fn is prog.module  # called as self.program: parameters named by the module path

        def forward(self, *args, **kwargs):
            return self.program(*args, **kwargs) if self.call_module else fn(*args, **kwargs)

    return torch.export.export(Exported(), _fresh(prog.inputs), dict(prog.kwargs), strict=mode is ExportMode.STRICT)


def exported_program(cell: Cell) -> Run:
    """The program exported (``torch.export.export``, the cell's ExportMode) with AC, and the exported program's module
    run eagerly forward and backward (``run.compiled``: outputs, input and parameter gradients) against eager with
    and without AC; the program without AC goes the same way (``run.no_ac``), so a failure it shares is attributed to
    export, not AC (harness/core/attribution.py).  The exported graph with AC is recorded as "exported".  Rule: the
    exported graph represents "the Tensor computation of the function" (torch/export/__init__.py ``export``) and
    ``ep.module()`` is that graph as a self-contained module (torch/export/exported_program.py), so it computes, and
    autograd differentiates, what the program does."""
    case, axes = cell.case, cell.axes
    mode = ExportMode(axes.export)
    programs: dict[bool, fx.GraphModule] = {}

    def exporter(ac: bool):
        def call_as(prog):
            fresh_state()
            ep = export_program(prog, mode)
            programs[ac] = ep.graph_module
            return ep.module()

        return call_as

    run = Run(cell)
    with config_patches(case, axes):
        start = time.perf_counter()
        run.reference, run.eager = eager_pair(case, axes.device, axes.dtype)
        run.timings["eager"] = time.perf_counter() - start
        start = time.perf_counter()
        try:
            plain = execute(case, axes, ac=False, call_as=exporter(False), probe=oracles.probe)
        except Exception as e:
            raise RuntimeError(f"{mode} export of the program without AC fails too (an export defect, not AC's): "
                               f"{type(e).__name__}: {e}") from e
        try:
            run.compiled = execute(case, axes, ac=True, call_as=exporter(True), probe=oracles.probe)
        except Exception as e:
            raise RuntimeError(f"{mode} export with AC: {type(e).__name__}: {e} (the program without AC exports and "
                               "runs)") from e
        run.compile_seconds = time.perf_counter() - start
    run.no_ac = Run(cell, compiled=plain)
    run.evidence.update(compiled=run.compiled.evidence, compiled_no_ac=plain.evidence)  # oracles.exported_checkpoints_like_eager
    run.info.update(compiled_as="exported", attribution=f"the same program {mode}-exported without AC")
    return _set_texts(run, {"exported": [programs[True]]})


# --- TRACE ----------------------------------------------------------------------------------------------------------

def _tracing(spec, inputs: tuple, stack: contextlib.ExitStack) -> tuple:
    """Enter the tracing contexts of ``spec`` (a :class:`~harness.core.case.Trace`) on ``stack``; the inputs to
    trace with (fake tensors when ``spec.fake``)."""
    from torch.fx.traceback import preserve_node_meta

    if spec.fake:
        from torch._guards import TracingContext
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        mode = FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv())
        stack.enter_context(mode)
        stack.enter_context(torch._guards.tracing(TracingContext(mode)))
        inputs = tuple(mode.from_tensor(t.detach(), static_shapes=True).requires_grad_(t.requires_grad)
                       if isinstance(t, torch.Tensor) else t for t in inputs)
    else:
        inputs = _fresh(inputs)
    stack.enter_context(torch.compiler._non_strict_tracing_context())
    if spec.patch == "grad":
        stack.enter_context(torch.compiler._patch_autograd_grad())
    elif spec.patch == "engine":
        stack.enter_context(torch.compiler._patch_engine_backward())
    if spec.node_meta:
        stack.enter_context(preserve_node_meta())
    return inputs


def trace(cell: Cell) -> Run:
    """``make_fx`` of the program (it computes its own gradients) under the non-strict tracing context; then, unless
    the case compares no numerics, the traced graph on the inputs against the eager program with and without AC."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from harness.core.case import NumericsMode

    case = cell.case
    run = Run(cell)
    with config_patches(case, cell.axes):
        prog = _build(cell)
        if case.trace.seed is not None:
            torch.manual_seed(case.trace.seed)
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            gm = make_fx(prog.fn)(*_tracing(case.trace, prog.inputs, stack))
        run.compile_seconds = time.perf_counter() - start
        if case.numerics.mode is not NumericsMode.NONE:
            run.compiled = _call(gm, prog.inputs, backward=False)
            run.eager = _call(prog.fn, prog.inputs, backward=False)
            plain = _build(cell, ac=False)
            run.reference = _call(plain.fn, plain.inputs, backward=False)
    return _set_texts(run, {"traced": [gm]})


# --- REMAT and JOINT_PASSES -----------------------------------------------------------------------------------------

def _capturing_backend(graphs: list[fx.GraphModule], joint_graph_passes: bool):
    """``aot_autograd`` whose forward compiler keeps the graph (bw_compiler and partition_fn left to defaults): the
    program computes its own gradients, so the forward graph holds the backward.  With ``joint_graph_passes`` it keeps
    a deep copy as received, then runs inductor's joint-graph passes on the graph in place and keeps that too."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def fw_compiler(gm: fx.GraphModule, example_inputs):
        if joint_graph_passes:
            from torch._inductor.fx_passes.joint_graph import joint_graph_passes as passes

            graphs.append(copy.deepcopy(gm))
            passes(gm)
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=fw_compiler, bw_compiler=None, partition_fn=None)


def _self_differentiating(cell: Cell, ac: bool = True, *, remat: bool | None = None,
                          joint_graph_passes: bool = False) -> tuple[Outcome, list[fx.GraphModule]]:
    """Build (seeded) and run a program that computes its own gradients, compiled when ``remat`` is not None
    (True/False: the remat flag) or ``joint_graph_passes``: (its outputs and the gradients it left, the captured
    graphs)."""
    prog = _build(cell, ac)
    fn = prog.fn
    graphs: list[fx.GraphModule] = []
    patches = []
    if remat is not None or joint_graph_passes:
        fn = torch.compile(fn, backend=_capturing_backend(graphs, joint_graph_passes), fullgraph=True)
        patches.append(torch._dynamo.config.patch(trace_autograd_ops=True))
        if not joint_graph_passes:
            patches.append(torch._functorch.config.patch(remat_using_tags_for_fwd_loss_bwd_graph=remat))
    torch._dynamo.reset()
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        torch.manual_seed(RUN_SEED)
        raw = fn(*prog.inputs)
    grads = {f"input[{i}]": t.grad for i, t in enumerate(flat_tensors(prog.inputs)) if t.grad is not None}
    grads.update({f"param {name}": p.grad for name, p in prog.named_params().items()})
    return Outcome([t.detach() for t in flat_tensors(raw)], grads), graphs


def remat(cell: Cell) -> Run:
    """The program compiled with the remat pass on ("with_remat", the compiled outcome) and off ("without_remat"),
    each against eager with and without AC, and the two compiled runs against each other.  A case that must raise
    is only compiled with the pass on."""
    run = Run(cell)
    with config_patches(cell.case, cell.axes):
        if cell.case.expect.raises is not None:
            _self_differentiating(cell, remat=True)
            return run
        run.eager, _ = _self_differentiating(cell)
        run.reference, _ = _self_differentiating(cell, ac=False)
        run.compiled, with_remat = _self_differentiating(cell, remat=True)
        off, without_remat = _self_differentiating(cell, remat=False)
    run.comparisons = ([(f"remat on vs remat off: {n}", a, e) for n, a, e in _pairs(run.compiled, off)]
                       + [(f"remat off vs eager with AC: {n}", a, e) for n, a, e in _pairs(off, run.eager)])
    return _set_texts(run, {"with_remat": with_remat, "without_remat": without_remat})


def joint_passes(cell: Cell) -> Run:
    """The captured graph before ("before_passes") and after ("after_passes") inductor's joint-graph passes; the
    compiled result against eager with and without AC."""
    run = Run(cell)
    with config_patches(cell.case, cell.axes):
        run.compiled, graphs = _self_differentiating(cell, joint_graph_passes=True)
        run.eager, _ = _self_differentiating(cell)
        run.reference, _ = _self_differentiating(cell, ac=False)
    if len(graphs) != 2:
        raise AssertionError(f"expected one captured graph before and one after the joint-graph passes, saw "
                             f"{len(graphs)} graphs")
    return _set_texts(run, {"before_passes": [graphs[0]], "after_passes": [graphs[1]]})


# --- EAGER and MEMORY -----------------------------------------------------------------------------------------------

def eager_call(cell: Cell) -> Run:
    """The program's eager call with AC, nothing compiled (an error raised in eager code is the cell's outcome)."""
    with config_patches(cell.case, cell.axes):
        prog = _build(cell)
        out = prog.fn(*prog.inputs, **prog.kwargs)
    return Run(cell, eager=Outcome([o.detach() for o in flat_tensors(out)], {}, out))


def memory(cell: Cell) -> Run:
    """Per variant: the program compiled (aot_eager, Dynamo reset before each), a warm-up forward+backward, then the
    allocator's requested bytes across one forward less the forward's own output -- what it keeps for the backward
    (``run.info["activation_memory"]``, by variant)."""
    measured = {}
    with config_patches(cell.case, cell.axes):
        for variant in cell.case.variants:
            torch._dynamo.reset()
            torch.manual_seed(0)
            prog = cell.case.build(_context(cell, variant=variant))
            fn = torch.compile(prog.fn, backend="aot_eager", fullgraph=False)
            fn(*prog.inputs).backward()  # warm-up: compile and allocate everything once
            torch.cuda.synchronize()
            before = torch.cuda.memory_stats()["requested_bytes.all.current"]
            out = fn(*prog.inputs)
            torch.cuda.synchronize()
            # requested_bytes counts the bytes asked of the caching allocator (4 for a float32 scalar loss)
            measured[variant] = (torch.cuda.memory_stats()["requested_bytes.all.current"] - before
                                 - out.untyped_storage().nbytes())
            out.backward()
            del out
    return Run(cell, info={"activation_memory": measured})


def contract_backend(axes: Axes):
    """What a contract cell compiles with: inductor, or AOTAutograd with the cell's partitioner and the partitioned
    graphs run as traced (nothing recorded: the clause's oracle observes behaviour, not graphs)."""
    if axes.backend == Backend.INDUCTOR:
        return "inductor"
    from torch._dynamo.backends.common import aot_autograd

    return aot_autograd(fw_compiler=lambda gm, _: gm, bw_compiler=lambda gm, _: gm,
                        partition_fn=partition_fn(axes.partitioner))


def contract(cell: Cell) -> Run:
    """A checkpoint-contract clause's program under the case's config patches, ``ctx.compile`` the cell's backend
    (fullgraph); its observations, ``(check, failure message or None)`` in the order made, in
    ``run.info["observations"]`` for the row's check."""
    start = time.perf_counter()
    run = Run(cell)
    try:
        with config_patches(cell.case, cell.axes):
            ctx = dataclasses.replace(_context(cell), compiler=contract_backend(cell.axes), fullgraph=True)
            run.info["observations"] = list(cell.case.build(ctx))
    finally:
        torch._dynamo.reset()
    run.timings["contract"] = time.perf_counter() - start
    return run


RUNNERS = {Runner.STANDARD: standard, Runner.EXPORT: export, Runner.EXPORTED_PROGRAM: exported_program,
           Runner.TRACE: trace, Runner.REMAT: remat,
           Runner.JOINT_PASSES: joint_passes, Runner.EAGER: eager_call, Runner.MEMORY: memory,
           Runner.CONTRACT: contract}
