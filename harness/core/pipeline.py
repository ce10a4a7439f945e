"""The pipeline: one program through eager and torch.compile, recording every graph.

The standard runner (harness/core/runners.py) runs a cell's program
  (a) eager without checkpointing (the builder's program with ``ctx.checkpoint`` a pass-through),
  (b) eager with checkpointing,
  (c) ``torch.compile`` with checkpointing through a recording backend that keeps the Dynamo graph(s), the AOT
      joint graph as the partitioner received it (with each node's ``recompute`` policy and ``ac_graph_id``),
      and the partitioned forward and backward graphs,
into a :class:`Run` holding the outcomes, the graphs, their canonical texts and the compile counters; the same
:func:`compile_and_record` makes the baselines verdicts compare with (:func:`baseline`, :func:`repartition`).
Each compile is isolated: Dynamo is reset, counters cleared, config patches are context managers, seeds are fixed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from harness.core.case import DTYPES, AmbientState, Axes, BuildContext, Case, Cell, CompileSpec, Composition
from harness.core.normalize import graph_text, graphs_text

BUILD_SEED = 0
RUN_SEED = 1
COTANGENT_SEED = 1234


def partition_fn(name: str) -> Callable[..., Any]:
    from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition

    return {"min_cut": min_cut_rematerialization_partition, "default": default_partition}[name]


@dataclasses.dataclass
class Outcome:
    """What one execution produced: flattened outputs and named gradients."""

    outputs: list[torch.Tensor]
    grads: dict[str, torch.Tensor | None]
    raw: Any = None
    seconds: float = 0.0
    state: Any = None  # Program.state() after the run (None: the program declares none)
    # The program module's state (buffers, plain attributes: :func:`module_state`) as built and after the run's
    # steps, {"before": ..., "after": ...}; None without a module.
    module_state: dict[str, dict[str, Any]] | None = None
    # What a probe measured after the run (``execute(probe=...)``: harness/core/oracles.py's run-time evidence).
    evidence: Any = None


NOT_ANALYSED = object()  # Run.analysis before harness.core.analysis.of(run) computed it


@dataclasses.dataclass
class Run:
    cell: Cell
    reference: Outcome | None = None  # eager, no AC
    eager: Outcome | None = None  # eager, with AC
    compiled: Outcome | None = None  # torch.compile, with AC
    graphs: dict[str, list[fx.GraphModule]] = dataclasses.field(default_factory=dict)
    texts: dict[str, str] = dataclasses.field(default_factory=dict)  # canonical text per graph kind
    counters: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Further tensor pairs a runner compares besides the outcomes: (name, actual, expected) or
    # (name, actual, expected, (rtol, atol)) (export: with AC against the same path without AC; remat: on against off)
    comparisons: list[tuple] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    compile_seconds: float = 0.0
    # Where the cell's time went (seconds): eager, compile, run, record, normalize (check_cell adds check, golden).
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    cache: dict[str, int] = dataclasses.field(default_factory=dict)  # inductor FX graph cache hits/misses of the compile
    analysis: Any = NOT_ANALYSED  # harness.core.analysis.of(run) fills it once
    # Per joint graph (graphs["joint"]): the (joint inputs, keyword arguments) the partitioner was called with, or
    # None where the joint could not be kept as received; what repartition() calls the partitioner with again.
    partition_args: list[tuple | None] = dataclasses.field(default_factory=list)
    # The same program recorded without AC where the runner makes it itself (export) or the pipeline cannot rebuild
    # it (a distributed rank's own no-AC step, harness/tools/training.py); None: run_cell compiles the no-AC baseline
    # when a verdict needs it (harness/core/run.py).
    no_ac: Run | None = None
    # Case.variants: each variant's own run (this run holds their graphs and texts as <kind>_<variant>).
    parts: dict[str, Run] = dataclasses.field(default_factory=dict)
    # What verdicts read besides the recording (case.Needs), produced by harness/core/run.py: the figures of the
    # program compiled without AC, the cell's figures along the budget sweep, whole runs at other budgets and of
    # related cases; and, per need that could not be produced, why.
    no_ac_figures: Any = None
    sweep: dict[float, Any] = dataclasses.field(default_factory=dict)
    at_budget: dict[float, Run] = dataclasses.field(default_factory=dict)
    related: dict[str, Run] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str | Exception] = dataclasses.field(default_factory=dict)
    # Run-time evidence (harness/core/oracles.py RuntimeEvidence) by run: "compiled" (this run's, probed by its
    # runner), "eager", "eager_no_ac", "compiled_no_ac" (Needs.evidence).
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def config_patches(case: Case, axes: Axes):
    """Apply the case's config patches (and the budget axis) for the duration of the cell, and enter the emulation
    the case declares on the cell's device (``AxesSpec.emulation_on``: eager references and baselines too)."""
    import torch._dynamo.config
    import torch._functorch.config
    import torch._inductor.config

    modules = {"dynamo": torch._dynamo.config, "functorch": torch._functorch.config, "inductor": torch._inductor.config}
    with contextlib.ExitStack() as stack:
        for ns, patch in case.compile.config.items():  # namespaces checked by CompileSpec
            stack.enter_context(modules[ns].patch(**dict(patch)))
        if axes.budget is not None:
            stack.enter_context(torch._functorch.config.patch(activation_memory_budget=axes.budget))
        stack.enter_context(case.axes.emulation_on(axes.device).context())
        yield


def fresh_state() -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


class Recorder:
    """A Dynamo backend that records every graph on its way through AOTAutograd and the partitioner."""

    def __init__(self, spec: CompileSpec, axes: Axes, codegen: bool = True):
        self.spec, self.axes = spec, axes
        # codegen=False (inductor): record the graphs inductor's partitioner produced, then run them eagerly instead
        # of generating and compiling kernels -- for a baseline, whose figures are read off those graphs and whose
        # numerics nobody checks.  The recorded graphs are the same either way: they are taken before inner compile.
        self.codegen = codegen
        self.graphs: dict[str, list[fx.GraphModule]] = defaultdict(list)
        self.joint_texts: list[str] = []
        self.partition_args: list[tuple | None] = []  # per kept joint, see Run.partition_args
        self.compile_ids: list[tuple[int, int]] = []  # (frame_id, frame_compile_id) per Dynamo graph
        # Primals of the graph being compiled that are activations (non-leaf tensors requiring grad), for the analysis.
        self.activation_inputs: frozenset[str] = frozenset()
        self.seconds = 0.0  # time spent recording (copying and printing graphs) inside the compile

    @contextlib.contextmanager
    def _timed(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def _keep(self, kind: str):
        from functorch.compile import make_boxed_func

        def compiler(gm: fx.GraphModule, example_inputs):
            self.graphs[kind].append(gm)
            return make_boxed_func(gm.forward)

        return compiler

    def _keep_joint(self, joint: fx.GraphModule, joint_inputs, kwargs: dict) -> None:
        # The partitioner mutates the joint graph (tag cleanup, RNG functionalization): keep it as received.
        with self._timed():
            self.joint_texts.append(graph_text(joint, annotate=True))
            try:
                kept = copy.deepcopy(joint)
            except Exception:  # a graph holding something un-copyable: keep the live one
                kept = joint
            kept.ac_activation_inputs = self.activation_inputs  # read by harness.core.analysis.activation_inputs
            self.graphs["joint"].append(kept)
            self.partition_args.append((joint_inputs, dict(kwargs)) if kept is not joint else None)

    def _partition(self, joint: fx.GraphModule, joint_inputs, **kwargs):
        self._keep_joint(joint, joint_inputs, kwargs)
        return partition_fn(self.axes.partitioner)(joint, joint_inputs, **kwargs)

    def __call__(self, gm: fx.GraphModule, example_inputs):
        self.graphs["dynamo"].append(gm)
        # AOTAutograd's primals are the Dynamo graph's inputs in order (primals_1 is example_inputs[0]).
        self.activation_inputs = frozenset(f"primals_{i + 1}" for i, t in enumerate(example_inputs)
                                           if isinstance(t, torch.Tensor) and t.requires_grad and not t.is_leaf)
        cid = torch._guards.CompileContext.current_compile_id()
        if cid is not None:
            self.compile_ids.append((cid.frame_id, cid.frame_compile_id))
        if self.axes.backend == "eager":  # Dynamo only: the captured graph runs as it is
            return gm.forward
        if self.axes.backend == "aot_eager_decomp_partition":
            return self._decomp_partition(gm, example_inputs)
        if self.axes.backend == "aot_eager":
            from torch._dynamo.backends.common import aot_autograd

            kwargs = dict(
                fw_compiler=self._keep("fw"),
                bw_compiler=self._keep("bw"),
                inference_compiler=self._keep("inference"),
                partition_fn=self._partition,
                keep_inference_input_mutations=True,
            )
            spec = self.spec
            if spec.decompositions is not None:
                kwargs["decompositions"] = spec.decompositions.table()
            if spec.disable_functionalization:
                kwargs["disable_functionalization"] = True
            return aot_autograd(**kwargs)(gm, example_inputs)
        if self.axes.backend == "inductor":
            return self._inductor(gm, example_inputs)
        raise ValueError(f"unknown backend {self.axes.backend!r}")

    def _decomp_partition(self, gm, example_inputs):
        """Upstream's ``aot_eager_decomp_partition`` (torch/_dynamo/backends/debugging.py), recording: inductor's
        decompositions, min-cut with ``compiler="inductor"``, forward and backward run as traced, effect tokens
        unlifted."""
        from torch._dynamo.backends.common import aot_autograd
        from torch._functorch.partitioners import min_cut_rematerialization_partition
        from torch._inductor.decomposition import select_decomp_table

        def partition(joint, joint_inputs, **kwargs):
            self._keep_joint(joint, joint_inputs, kwargs)
            return min_cut_rematerialization_partition(joint, joint_inputs, **{"compiler": "inductor", **kwargs})

        with torch._functorch.config.patch(unlift_effect_tokens=True):
            return aot_autograd(fw_compiler=self._keep("fw"), bw_compiler=self._keep("bw"),
                                inference_compiler=self._keep("inference"), partition_fn=partition,
                                decompositions=select_decomp_table())(gm, example_inputs)

    def _inductor(self, gm, example_inputs):
        import torch._inductor.compile_fx as cfx

        def inner(g, ex, *args, **kwargs):
            kind = "bw" if kwargs.get("is_backward") else "fw"
            with self._timed():
                self.graphs[kind].append(copy.deepcopy(g))
            if not self.codegen:
                return _eager_output_code(g)
            return cfx.compile_fx_inner(g, ex, *args, **kwargs)

        # Inductor calls the min-cut partitioner by its module-level name: wrap it to see the joint graph.
        real = cfx.min_cut_rematerialization_partition

        def spy(joint, joint_inputs, **kwargs):
            self._keep_joint(joint, joint_inputs, kwargs)
            return real(joint, joint_inputs, **kwargs)

        # An AOTAutograd cache hit would skip the partitioner and inner compile, leaving nothing recorded;
        # inductor's FX graph cache (inside compile_fx_inner) still makes repeated compiles cheap.  Keep the autograd
        # cache off: its key leaves out activation_memory_budget_solver / _runtime_estimator
        # (findings/autograd_cache_ignores_budget_solver.py), so a cache hit would hand a budget_solvers cell the
        # partition another solver or estimator chose.
        cfx.min_cut_rematerialization_partition = spy
        try:
            with torch._functorch.config.patch(enable_autograd_cache=False):
                return cfx.compile_fx(gm, example_inputs, inner_compile=inner)
        finally:
            cfx.min_cut_rematerialization_partition = real

    def into(self, run: Run) -> Run:
        """Hand what was recorded to ``run``: graphs, their canonical texts (timed as "normalize") and counters."""
        start = time.perf_counter()
        run.graphs = dict(self.graphs)
        run.partition_args = list(self.partition_args)
        run.texts = self.texts()
        run.timings["normalize"] = time.perf_counter() - start
        run.counters = compile_counters(self)
        return run

    def texts(self) -> dict[str, str]:
        out = {}
        for kind in ("dynamo", "joint", "fw", "bw", "inference"):
            if kind == "joint" and self.joint_texts:
                out[kind] = graphs_text_from(self.joint_texts)
            elif self.graphs.get(kind):
                out[kind] = graphs_text(self.graphs[kind], annotate=kind != "dynamo")
        return out


def _eager_output_code(gm: fx.GraphModule):
    """What inductor's inner compile returns (an ``OutputCode``, called boxed), running ``gm`` eagerly."""
    from torch._inductor.output_code import OutputCode

    class EagerOutputCode(OutputCode):
        def __init__(self):
            self._boxed_call = True  # an instance attribute: wrappers copy __dict__ (functools.wraps), not the class

        def __call__(self, inputs):
            return gm(*inputs)

        def post_compile(self, *args, **kwargs) -> None:
            pass

        def prepare_for_serialization(self) -> None:
            pass

        def set_triton_bundle(self, triton_bundle) -> None:
            pass

    return EagerOutputCode()


def graphs_text_from(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0] + "\n"
    return "".join(f"## graph {i}\n{t}\n" for i, t in enumerate(texts))


def flat_tensors(tree) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


def cotangent_loss(outputs: list[torch.Tensor]) -> torch.Tensor | None:
    """A fixed random weighting of every differentiable output: stronger than ``.sum()``, same for every run."""
    g = torch.Generator().manual_seed(COTANGENT_SEED)
    terms = []
    for out in outputs:
        if not out.is_floating_point():
            continue
        # Drawn for every floating output, so an output that requires grad in one run and not in another
        # (a reentrant checkpoint's outputs all require grad) does not shift the weights of the others.
        w = torch.randn(out.shape, generator=g, dtype=torch.float32)
        if not out.requires_grad:
            continue
        w = w.to(device=out.device, dtype=out.dtype)
        terms.append((out * w).sum())
    return functools.reduce(torch.add, terms) if terms else None


def composition_of(case: Case, axes: Axes) -> Composition:
    """Where compile sits relative to checkpoint in the cell: the program's own (``CompileSpec.composition``, a program
    that compiles its parts) or the cell's composition axis."""
    own = case.compile.composition
    return own if own is not Composition.COMPILE_OUTSIDE else Composition(axes.composition)


def execute(case: Case, axes: Axes, *, ac: bool, backend=None, variant: str = "", probe=None,
            call_as=None) -> Outcome:
    """Build the program (seeded), optionally compile it, run forward and (if the case has one) backward, once per
    call (``Program.calls``), under the case's ambient state and, where it asks, compiled autograd.  The cell's
    composition decides what is compiled: ``fn`` (compile outside), or the program's parts (``ctx.compile`` /
    ``ctx.checkpoint``'s compiled blocks).  ``call_as(program)``, when given, is what runs instead of ``fn`` (the
    exported program's module: Runner.EXPORTED_PROGRAM), on the same inputs and parameters.  ``probe(fn, program,
    backend, call_context)``, when given, runs after the steps on the same (compiled) function; what it returns is
    ``Outcome.evidence``."""
    spec = case.compile
    composition = composition_of(case, axes)
    outside = composition.compiles_outside
    fullgraph = spec.fullgraph and composition is not Composition.COMPILED_MODEL_EAGER_BLOCKS  # a break per block
    ambient = AmbientState(axes.ambient)
    ctx = BuildContext(device=axes.device, dtype=DTYPES[axes.dtype], ac=ac, variant=variant,
                       compiler=backend if not outside else None, fullgraph=fullgraph, composition=composition,
                       ambient=ambient)
    with case.ambient.context(axes.device), ambient.context(axes.device), \
            _compiled_autograd(spec, axes, backend is not None):
        torch.manual_seed(BUILD_SEED)
        prog = case.build(ctx)
        before = module_state(prog.module)
        fn = prog.fn if call_as is None else call_as(prog)
        if backend is not None and outside:
            fn = torch.compile(fn, backend=backend, fullgraph=fullgraph)
        start = time.perf_counter()
        outputs: list[torch.Tensor] = []
        grads: dict[str, torch.Tensor | None] = {}
        raw = None
        for call, inputs in enumerate((prog.inputs, *prog.calls)):
            torch.manual_seed(RUN_SEED)
            with ambient.call_context():  # grad mode around the call (no backward follows where it disables grad)
                out = fn(*inputs, **prog.kwargs)
            raw = out if call == 0 else raw
            flat = flat_tensors(out)
            outputs += flat
            if spec.backward:
                loss = cotangent_loss(flat)
                if loss is not None:
                    loss.backward()
                label = f"call{call} " if call else ""
                for i, t in enumerate(flat_tensors(inputs)):
                    if t.requires_grad:
                        grads[f"{label}input[{i}]"] = t.grad
        if spec.backward:
            for name, p in prog.named_params().items():
                grads[f"param {name}"] = p.grad
        state = prog.state() if prog.state is not None else None
        after = module_state(prog.module)
        seconds = time.perf_counter() - start
        evidence = probe(fn, prog, backend, ambient.call_context) if probe is not None else None
    return Outcome([o.detach() for o in outputs], grads, raw, seconds, state,
                   {"before": before, "after": after} if prog.module is not None else None, evidence)


def module_state(module: torch.nn.Module | None) -> dict[str, Any]:
    """What a module's forward can change besides its outputs: every buffer (a copy) and every plain attribute (bool,
    int, float, str) of it and its submodules, by name; ``training`` and private (``_``) attributes aside."""
    if module is None:
        return {}
    out: dict[str, Any] = {f"buffer {_unwrapped(n)}": b.detach().clone() for n, b in module.named_buffers()}
    for prefix, m in module.named_modules():
        for k, v in vars(m).items():
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str)):
                out[f"attribute {_unwrapped(prefix + '.' if prefix else '')}{k}"] = v
    return out


# What wrappers put into a submodule's name: checkpoint_wrapper (torch.distributed.algorithms._checkpoint.
# checkpoint_wrapper._CHECKPOINT_PREFIX) and torch.compile's OptimizedModule; a state's name is the model's own.
_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")


def _unwrapped(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


@contextlib.contextmanager
def _compiled_autograd(spec: CompileSpec, axes: Axes, compiled: bool):
    """Compiled autograd around a compiled run whose case asks for it (``CompileSpec.compiled_autograd``): the
    backward graph is compiled by Dynamo with the cell's backend, fullgraph."""
    if not (compiled and (spec.compiled_autograd or axes.compiled_autograd)):
        yield
        return
    compiler = functools.partial(torch.compile, fullgraph=True, backend=str(axes.backend))
    with torch._dynamo.compiled_autograd._enable(compiler):
        yield


def input_tensors(cell: Cell) -> list[torch.Tensor]:
    """The program inputs a cell's runs started from (rebuilt with the same seed)."""
    torch.manual_seed(BUILD_SEED)
    prog = cell.case.build(BuildContext(device=cell.axes.device, dtype=DTYPES[cell.axes.dtype], ac=True))
    return flat_tensors(prog.inputs)


@functools.lru_cache(maxsize=128)
def eager(case: Case, device: str, dtype: str, ac: bool, variant: str = "",
          composition: str = Composition.COMPILE_OUTSIDE, ambient: str = "") -> Outcome:
    """Eager with or without AC does not depend on partitioner, backend or budget: computed once per case (and
    composition: its checkpoint, nothing compiled; and ambient state)."""
    axes = Axes(device=device, dtype=dtype, composition=composition, ambient=ambient)
    with config_patches(case, axes):
        return execute(case, axes, ac=ac, variant=variant)


def eager_pair(case: Case, device: str, dtype: str, variant: str = "",
               composition: str = Composition.COMPILE_OUTSIDE, ambient: str = "") -> tuple[Outcome, Outcome]:
    """(eager without AC, eager with AC), each computed once per case, composition and ambient state."""
    return (eager(case, device, dtype, False, variant, composition, ambient),
            eager(case, device, dtype, True, variant, composition, ambient))


def compile_and_record(case: Case, axes: Axes, *, ac: bool, run: Run | None = None, codegen: bool = True,
                       variant: str = "", probe=None) -> Run:
    """Compile the case's program (with or without AC) through the recording backend, run it forward and backward,
    and return the run with its graphs, texts, counters and timings.  Every compile of the standard runner goes
    through here: the cell's own and the baselines its verdicts compare with (:func:`baseline`; ``codegen``: see
    Recorder)."""
    run = run if run is not None else Run(Cell(case, axes))
    recorder = Recorder(case.compile, axes, codegen=codegen)
    fresh_state()
    with config_patches(case, axes), knapsack_spy() as instances:
        start = time.perf_counter()
        outcome = execute(case, axes, ac=ac, backend=recorder, variant=variant, probe=probe)
        run.compile_seconds = time.perf_counter() - start
    if ac:
        run.compiled = outcome
    if probe is not None:
        run.evidence["compiled" if ac else "compiled_no_ac"] = outcome.evidence
    run.timings.update(_split_compile(run.compile_seconds, recorder.seconds))
    inductor = torch._dynamo.utils.counters["inductor"]
    run.cache = {k: inductor[k] for k in ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass") if inductor[k]}
    recorder.into(run)
    if instances:
        run.info["knapsack"] = instances
    return run


@dataclasses.dataclass(frozen=True)
class KnapsackCall:
    """One call of the partitioner's ``_optimize_runtime_with_given_memory`` (activation_memory_budget in (0, 1)):
    the instance it posed and the solver's answer (harness/core/knapsack.py explains the instance)."""

    memory: tuple[float, ...]
    runtimes: tuple[float, ...]
    max_memory: float
    objective: float
    saved: tuple[int, ...]
    recomputed: tuple[int, ...]


@contextlib.contextmanager
def knapsack_spy():
    """Record every knapsack the partitioner solves during the block (a list of :class:`KnapsackCall`).  The
    partitioner calls the function by its module-level name, so wrapping the attribute sees every solver."""
    from torch._functorch import partitioners

    calls: list[KnapsackCall] = []
    real = partitioners._optimize_runtime_with_given_memory

    def spy(joint_graph, memory, runtimes, max_memory, *rest, **kwargs):
        objective, saved, recomputed = real(joint_graph, memory, runtimes, max_memory, *rest, **kwargs)
        calls.append(KnapsackCall(tuple(float(m) for m in memory), tuple(float(r) for r in runtimes),
                                  float(max_memory), float(objective), tuple(int(i) for i in saved),
                                  tuple(int(i) for i in recomputed)))
        return objective, saved, recomputed

    partitioners._optimize_runtime_with_given_memory = spy
    try:
        yield calls
    finally:
        partitioners._optimize_runtime_with_given_memory = real


@functools.lru_cache(maxsize=256)
def baseline(case: Case, axes: Axes, ac: bool) -> Run:
    """``case`` compiled under ``axes`` with or without AC, once per process: what the invariants compare a cell with
    (the same program without AC; the other budgets of a sweep) and what the memory report tabulates.  Only its
    graphs are read, so inductor generates no kernels for it (``codegen=False``; tests/test_baselines.py shows the
    figures equal those of a full compile)."""
    return compile_and_record(case, axes, ac=ac, codegen=False)


def repartition(run: Run, budget: float | None, joints: list[fx.GraphModule], partitioner: str | None = None
                ) -> Run | None:
    """What ``run``'s cell records at ``activation_memory_budget=budget`` (and with ``partitioner``, default: the
    cell's), made by partitioning its kept joint graphs ``joints`` again instead of tracing the program again.  Sound
    because the budget and the partitioner are read by the partitioner alone (torch/_functorch/partitioners.py reads
    ``config.activation_memory_budget``; AOTAutograd calls ``partition_fn`` only once the joint is traced; Dynamo's and
    AOTAutograd's tracing and inductor's joint passes, which come before, read neither) and the joints are kept as the
    partitioner received them, with the arguments it was called with.  None where a joint was not kept whole, holds a
    random op, whose RNG the partitioner functionalizes inside the compile's own tracing context, or holds a subgraph
    (an ``invoke_subgraph`` body: AOTAutograd partitions those inside the compile with the compile's partitioner,
    torch/_functorch/_aot_autograd/graph_compile.py ``_get_partition_fn``, so they would keep their old partition); the
    caller compiles instead.  Of 450 partitions of the database's budget cells, the 378 without random ops equalled
    compiles; the 72 with them differed in the saved RNG state's size, concrete instead of symbolic."""
    kept = run.graphs.get("joint", [])
    args = [run.partition_args[kept.index(j)] if j in kept and len(run.partition_args) == len(kept) else None
            for j in joints]
    if not joints or None in args:
        return None
    if any(is_seeded_random(n) for j in joints for n in j.graph.nodes):
        return None
    if any(isinstance(m, fx.GraphModule) for j in joints for m in j.modules() if m is not j):
        return None
    axes = dataclasses.replace(run.cell.axes, budget=budget, partitioner=partitioner or run.cell.axes.partitioner)
    out = Run(Cell(run.cell.case, axes))
    fws, bws = [], []
    with config_patches(run.cell.case, axes), knapsack_spy() as instances:
        for joint, (joint_inputs, kwargs) in zip(joints, args):
            fw, bw = partition_fn(axes.partitioner)(copy.deepcopy(joint), joint_inputs, **kwargs)
            fws.append(fw)
            bws.append(bw)
    out.graphs = {"joint": list(joints), "fw": fws, "bw": bws}
    if instances:
        out.info["knapsack"] = instances
    return out


def is_seeded_random(node: fx.Node) -> bool:
    """A call of an op torch tags ``nondeterministic_seeded`` (it draws from the generator)."""
    return (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and torch.Tag.nondeterministic_seeded in node.target.tags)


def _split_compile(total: float, recording: float) -> dict[str, float]:
    """Split a compiled execution's wall time into compile (Dynamo + AOT + backend, forward and lazy backward,
    as Dynamo's own timers saw it, less our recording inside it), recording, and run (the rest)."""
    metrics = getattr(torch._dynamo.utils, "compilation_time_metrics", {})
    compiled = sum(sum(metrics.get(k, ())) for k in ("_compile.compile_inner", "backward._backward_impl"))
    compile_s = min(max(compiled - recording, 0.0), total)
    return {"compile": compile_s, "record": recording, "run": max(total - compile_s - recording, 0.0)}


def compile_counters(recorder: Recorder) -> dict[str, Any]:
    c = torch._dynamo.utils.counters
    ids = recorder.compile_ids
    return {
        "graphs": len(recorder.graphs.get("dynamo", [])),
        "graph_breaks": sum(c["graph_break"].values()),
        "frames": len({frame for frame, _ in ids}),  # distinct frames that produced a graph
        "recompiles": sum(1 for _, attempt in ids if attempt > 0),  # frame_compile_id > 0: compiled again
        "unique_graphs": c["stats"]["unique_graphs"],
        "frames_ok": c["frames"]["ok"],  # Dynamo's own counter (not bumped on the fullgraph path)
    }


def compiled_without_ac(case: Case, axes: Axes) -> Outcome:
    """The case's program compiled *without* AC under ``axes``, code generated (unlike :func:`baseline`, whose
    inductor graphs run eagerly): what harness/core/attribution.py compares with eager without AC when a numerics
    check failed, to tell a backend difference from an AC defect."""
    recorder = Recorder(case.compile, axes)
    fresh_state()
    with config_patches(case, axes):
        return execute(case, axes, ac=False, backend=recorder)
