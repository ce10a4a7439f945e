"""Oracles that read no graph: what autograd and Dynamo did at run time, and the state a step leaves behind.

Where checkpointing runs in eager autograd (a composition that checkpoints around or between compiled code, or the
Dynamo-only ``eager`` backend, whose ``tag_activation_checkpoint`` runs ``torch.utils.checkpoint`` itself) no
partitioner sees a checkpointed region and the graph invariants cannot judge; these oracles can, in every composition:

* :func:`recompute_evidence`: a dispatch-mode count of the ops executed during backward
  (:func:`~harness.core.attribution.ops_executed`): a checkpointed region re-executes its forward, so the backward
  with AC runs more ops than the same program without AC;
* :func:`saved_evidence`: what autograd packs for backward outside checkpointed regions, through saved-tensor hooks
  (:func:`~harness.core.attribution.saved_for_backward`): a region saves nothing there, so less than without AC;
* :func:`no_recompile`: Dynamo's compiles counted over further calls: an identical call, and a call with other values
  of the same shapes, must not compile again;
* :func:`grad_disabled_saves_nothing`: with grad disabled around the call (no_grad, inference_mode), nothing is
  saved and no output requires grad, with AC as without;
* :func:`assert_state` (issue 31): the module state after the step (buffers, plain attributes) of eager without AC,
  eager with AC and compiled with AC, with the gradients' tolerance; numerics, RNG (dropout masks) and Python side
  effects are compared with eager checkpointing by ``assert_numerics`` and the case's own checks.

The evidence is measured by :func:`probe` (run by ``pipeline.execute`` on the very function a run compiled, after its
steps) and by :func:`evidence` for the references; ``run_cell`` puts it into ``Run.evidence`` (``Needs.evidence``), so
the oracles are pure functions of the run.  Cells that run them: :func:`judged_at_run_time`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
import torch.utils._pytree as pytree

from harness.core.attribution import _OpCounter
from harness.core.case import AmbientState, Axes, Backend, Case, Composition, Needs
from harness.core.checks import TOLERANCES, NamedChecks, NotRun, mismatch, tolerance
from harness.core.pipeline import (RUN_SEED, Recorder, config_patches, cotangent_loss, execute, flat_tensors,
                                   fresh_state)

STATE_STAGE = "state"
# Why eager checkpointing changes the state a step leaves: the region's forward runs again in backward.
RECOMPUTE_RULE = ("checkpoint re-invokes the region's forward in backward, so its buffer updates and attribute "
                  "changes happen again (torch/utils/checkpoint.py: \"the unsaved tensors are recomputed by re-invoking "
                  ":attr:`function` in the backward pass\"; non-reentrant stops once the tensors it needs are "
                  "recomputed, early_stop=True)")


@dataclasses.dataclass(frozen=True)
class RuntimeEvidence:
    """What further calls of a run's function showed: tensors (and bytes) packed for backward outside checkpointed
    regions and the ops dispatched during backward (one instrumented call); compiles made by an identical call and by a
    call with other values of the same shapes (None: nothing compiled)."""

    saved: int
    saved_bytes: int  # activations only: a saved leaf that requires grad (a parameter, an input) costs nothing extra
    backward_ops: int
    recompiles_identical: int | None = None
    recompiles_new_values: int | None = None
    outputs_requiring_grad: int = 0  # of the instrumented call's outputs (0 with grad disabled: no backward exists)


def judged_at_run_time(axes: Axes) -> bool:
    """Cells the run-time oracles judge: those on issue 27's axes (a composition, compiled autograd, an ambient state,
    a backend other than aot_eager and inductor); today's cells are judged by the graph invariants, which read the same facts off the
    graphs."""
    return (axes.composition != Composition.COMPILE_OUTSIDE or axes.compiled_autograd or bool(axes.ambient)
            or axes.backend not in (Backend.AOT_EAGER, Backend.INDUCTOR))


def _compiles(backend) -> int | None:
    graphs = getattr(backend, "graphs", None)
    return None if graphs is None else len(graphs.get("dynamo", []))


def _step(fn, prog, inputs, call_context=contextlib.nullcontext) -> None:
    torch.manual_seed(RUN_SEED)
    with call_context():
        out = fn(*inputs, **prog.kwargs)
    loss = cotangent_loss(flat_tensors(out))
    if loss is not None:
        loss.backward()


def _copies(inputs: tuple, new_values: bool = False) -> tuple:
    """Fresh copies of every tensor in the inputs, nested ones included (a dataclass or a list of tensors): a probe's
    backward must not accumulate into the gradients the run recorded."""
    def copy(t: torch.Tensor) -> torch.Tensor:
        c = torch.randn_like(t) if new_values and t.is_floating_point() else t.detach().clone()
        return c.requires_grad_(t.requires_grad)

    return tuple(pytree.tree_map_only(torch.Tensor, copy, tuple(inputs)))


class _CompiledCodeCounter(_OpCounter):
    """:func:`~harness.core.attribution.ops_executed`'s counter, made transparent to torch.compile: under a mode that
    does not ignore compile internals, Dynamo runs compiled functions eagerly instead (torch/utils/_python_dispatch.py
    ``ignore_compile_internals``: "torch.compile will just fallback to eager-mode PyTorch"), so a checkpoint of a
    compiled function would recompute eagerly what the forward computed compiled (and fail checkpoint's metadata
    check).  With it on, compiled artifacts run as compiled and the mode sees the ops they dispatch (aot_eager's
    graphs: every aten op; inductor's kernels: none)."""

    supports_higher_order_operators = True  # a HOP the compiled graphs call (run_with_rng_state) counts as one op

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        return True


@contextlib.contextmanager
def _activations_saved():
    """[tensors, activation bytes] packed for backward while the block runs, outside checkpointed regions (see
    :func:`~harness.core.attribution.saved_for_backward`); leaves that require grad (parameters, inputs) are counted
    as tensors but cost no bytes, as in the graph analysis's provenance accounting."""
    seen = [0, 0]

    def pack(t):
        seen[0] += 1
        if not (t.is_leaf and t.requires_grad):
            seen[1] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def probe(fn, prog, backend, call_context=contextlib.nullcontext) -> RuntimeEvidence:
    """After a run's steps, on the same function: an identical call and a call with other values (compiles counted),
    then one call with its forward under :func:`saved_for_backward` and its backward under :func:`ops_executed`; each
    call under ``call_context`` (the cell's grad mode, AmbientState.call_context).  The module's parameter gradients are released first (the run's are already recorded) and whatever the recorder
    captured during these calls is dropped, so the recorded run is the run's alone."""
    if prog.module is not None:
        for p in prog.module.parameters():
            p.grad = None
    kept = ({k: len(v) for k, v in backend.graphs.items()}, len(backend.joint_texts), len(backend.partition_args),
            len(backend.compile_ids)) if isinstance(backend, Recorder) else None
    start = _compiles(backend)
    _step(fn, prog, _copies(prog.inputs), call_context)
    identical = _compiles(backend)
    _step(fn, prog, _copies(prog.inputs, new_values=True), call_context)
    new_values = _compiles(backend)
    inputs = _copies(prog.inputs)
    torch.manual_seed(RUN_SEED)
    with call_context(), _activations_saved() as saved:
        out = fn(*inputs, **prog.kwargs)
    loss = cotangent_loss(flat_tensors(out))
    with _CompiledCodeCounter() as ops:
        if loss is not None:
            loss.backward()
    if kept is not None:
        lengths, joints, args, ids = kept
        for k, v in backend.graphs.items():
            del v[lengths.get(k, 0):]
        del backend.joint_texts[joints:], backend.partition_args[args:], backend.compile_ids[ids:]
    return RuntimeEvidence(saved[0], saved[1], ops.count,
                           None if start is None else identical - start,
                           None if start is None else new_values - identical,
                           sum(t.requires_grad for t in flat_tensors(out)))


def evidence(case: Case, axes: Axes, ac: bool, compiled: bool) -> RuntimeEvidence:
    """The case's program on ``axes`` (its composition), eager or compiled through a recorder, with or without AC,
    probed."""
    fresh_state()
    with config_patches(case, axes):
        backend = Recorder(case.compile, axes) if compiled else None
        return execute(case, axes, ac=ac, backend=backend, probe=probe).evidence


def _evidence(run, *names: str) -> list[RuntimeEvidence]:
    missing = [n for n in names if n not in run.evidence]
    if missing:
        why = run.unavailable.get("evidence", f"the run carries no run-time evidence {missing} (Needs.evidence)")
        if isinstance(why, Exception):
            raise AssertionError(f"{run.cell.id}: the run-time evidence could not be measured: "
                                 f"{type(why).__name__}: {why}")
        raise NotRun(str(why))
    return [run.evidence[n] for n in names]


def _figures(label: str, with_ac: RuntimeEvidence, without: RuntimeEvidence, field: str) -> str:
    return f"{label}: {getattr(with_ac, field)} with AC vs {getattr(without, field)} without"


def recompute_evidence(run) -> int:
    """Where checkpointing runs eagerly, a checkpointed region re-executes its forward in backward: more ops are
    dispatched during the backward with AC than during the same composition's backward without AC.

    Rule: checkpoint's docstring: "the unsaved tensors are recomputed by re-invoking :attr:`function` in the backward
    pass".  Measured by a dispatch mode around ``loss.backward()`` (the engine carries it into the backward,
    ``at::ThreadLocalState``).  Judged only where eager checkpointing recomputes something in the program, where
    checkpointing runs eagerly (``Axes.eager_checkpoint``: a partitioner may recompute cheap ops with or without AC
    and SAC may save what min-cut would recompute, so op counts say nothing there; ``ac_backward_does_no_less_work``
    judges FLOPs on the graphs), and not under inductor, whose kernels dispatch no aten op a mode could count."""
    __tracebackhide__ = True
    if not run.cell.axes.eager_checkpoint:
        raise NotRun("a partitioner places the recompute in the compiled backward (min-cut recomputes cheap ops with "
                     "or without AC): ac_backward_does_no_less_work judges it on the graphs")
    if run.cell.axes.backend == Backend.INDUCTOR:
        raise NotRun("inductor's generated kernels dispatch no aten op, so a dispatch mode cannot count what its "
                     "backward recomputes")
    eager_ac, eager_plain, with_ac, without = _evidence(run, "eager", "eager_no_ac", "compiled", "compiled_no_ac")
    if eager_ac.saved_bytes >= eager_plain.saved_bytes:
        raise NotRun("eager checkpointing drops no activation in this program (what its regions save are parameters "
                     f"and inputs: {_figures('activation bytes saved', eager_ac, eager_plain, 'saved_bytes')}), so "
                     "recomputing is no promise here")
    if eager_ac.backward_ops <= eager_plain.backward_ops:
        raise NotRun("eager checkpointing recomputes nothing in this program "
                     f"({_figures('backward ops', eager_ac, eager_plain, 'backward_ops')})")
    if with_ac.backward_ops <= without.backward_ops:
        raise AssertionError(
            f"{run.cell.id}: expected the backward with AC to dispatch more ops than without AC (checkpointing runs "
            f"eagerly here: the region re-executes its forward), saw "
            f"{_figures('compiled backward ops', with_ac, without, 'backward_ops')} (eager: {eager_ac.backward_ops} "
            f"with AC vs {eager_plain.backward_ops} without): the region was not recomputed")
    return 1


def saved_evidence(run) -> int:
    """Where checkpointing runs eagerly, autograd keeps less outside checkpointed regions with AC than without.

    Rule: checkpoint's docstring: "tensors produced in the passed :attr:`function` are not kept alive until the
    backward pass"; a non-reentrant checkpoint packs its region's saves with saved-tensor hooks of its own (hooks are
    a stack, the innermost pair packs: torch/autograd/graph.py ``saved_tensors_hooks``) and a reentrant one runs the
    region under no_grad, so hooks around the whole call see only what is saved outside the regions.  Where a
    partitioner decides what compiled code saves, ``ac_saves_within_eager_bound`` judges on the graphs."""
    __tracebackhide__ = True
    eager_ac, eager_plain, with_ac, without = _evidence(run, "eager", "eager_no_ac", "compiled", "compiled_no_ac")
    if eager_ac.saved_bytes >= eager_plain.saved_bytes:
        raise NotRun(f"eager checkpointing saves no less in this program ({_figures('bytes saved', eager_ac, eager_plain, 'saved_bytes')})")
    if not run.cell.axes.eager_checkpoint:
        raise NotRun("a partitioner decides what the compiled code saves (its saves are the compiled function's, "
                     "region inputs included): ac_saves_within_eager_bound judges it on the graphs")
    if with_ac.saved_bytes >= without.saved_bytes:
        raise AssertionError(
            f"{run.cell.id}: expected less to be saved for backward outside checkpointed regions with AC than without "
            f"(checkpointing runs eagerly here), saw {_figures('bytes', with_ac, without, 'saved_bytes')} "
            f"({_figures('tensors', with_ac, without, 'saved')}; eager: {eager_ac.saved_bytes} B with AC vs "
            f"{eager_plain.saved_bytes} B without): the region's activations were kept")
    return 1


def no_recompile(run) -> int:
    """A second identical call compiles nothing; nor does a call with other values of the same shapes.

    Rule: Dynamo reuses a frame's compiled code while its guards pass and recompiles when one fails
    (torch/_dynamo/guards.py; the torch.compile programming model, "Guards and recompilations"); a tensor's guards
    check its dtype, device, shape, strides, requires_grad and dispatch keys, not its values (``TENSOR_MATCH``,
    torch/csrc/dynamo/guards.cpp ``TensorCheck``).  Counted as graphs the recording backend received.  Not judged
    where the forward changes a module's plain attributes or Python state of its own (``Program.state``, a closure
    counter): Dynamo guards Python constants by value (``CONSTANT_MATCH``), so the next call is another program
    state."""
    __tracebackhide__ = True
    (with_ac,) = _evidence(run, "compiled")
    if run.compiled is not None and run.compiled.state is not None:
        raise NotRun(f"the program mutates Python state outside its tensors (Program.state, {run.compiled.state!r} "
                     "after the run), which compiled code reads and Dynamo guards by value (CONSTANT_MATCH): the next "
                     "call is not identical")
    changed = [n for n in mutated_state(run) if n.startswith("attribute ")]
    if changed:
        raise NotRun(f"the forward changes module attributes ({', '.join(changed[:3])}), which Dynamo guards by "
                     "value: the next call is not identical")
    if with_ac.recompiles_identical is None:
        raise NotRun("nothing was compiled through the recording backend")
    if with_ac.recompiles_identical or with_ac.recompiles_new_values:
        raise AssertionError(
            f"{run.cell.id}: expected no compile on a second identical call and none on a call with other values of "
            f"the same shapes (guards check tensor metadata, not values), saw {with_ac.recompiles_identical} and "
            f"{with_ac.recompiles_new_values} new graphs (TORCH_LOGS=recompiles names the failing guard)")
    return 2


def grad_disabled_saves_nothing(run) -> int:
    """With grad disabled around the call (``AmbientState.NO_GRAD``, ``INFERENCE_MODE``) checkpointing neither saves
    nor recomputes: with AC, eager and compiled alike, nothing is packed for backward and no output requires grad (no
    backward exists to recompute in), as without AC; numerics compare the outputs with eager as everywhere.

    Rule: torch/utils/checkpoint.py: a non-reentrant checkpoint with grad disabled runs its function plainly and
    installs no saved-tensor hooks (``_checkpoint_without_reentrant_generator``: ``if not torch.is_grad_enabled():
    yield; return``); the reentrant one runs the function under no_grad in any case (its docstring) and, grad being
    disabled, ``CheckpointFunction.apply`` records no node; inference mode disables grad too (``torch.inference_mode``,
    "analogous to no_grad").  Saves counted with saved-tensor hooks around the call, as for :func:`saved_evidence`."""
    __tracebackhide__ = True
    ambient = AmbientState(run.cell.axes.ambient)
    if not ambient.grad_disabled:
        raise NotRun("grad is enabled around the call: recompute_evidence and saved_evidence judge")
    eager_ac, eager_plain, with_ac, without = _evidence(run, "eager", "eager_no_ac", "compiled", "compiled_no_ac")

    def seen(e: RuntimeEvidence) -> str:
        return f"{e.saved} tensors ({e.saved_bytes} B) saved, {e.outputs_requiring_grad} outputs requiring grad"

    bad = [f"{label}: {seen(e)}" for label, e in (("compiled with AC", with_ac), ("eager with AC", eager_ac))
           if e.saved or e.outputs_requiring_grad]
    if bad:
        plain = any(e.saved or e.outputs_requiring_grad for e in (without, eager_plain))
        raise AssertionError(
            f"{run.cell.id}: expected nothing saved for backward and no output requiring grad under {ambient} (a "
            f"checkpoint with grad disabled runs its function plainly), saw {'; '.join(bad)} (without AC: compiled "
            f"{seen(without)}, eager {seen(eager_plain)}{'; also without AC: not an AC defect' if plain else ''})")
    return 1


def exported_checkpoints_like_eager(run) -> int:
    """A strictly exported program checkpoints as eager does: the module of ``torch.export.export(..., strict=True)``
    dispatches the same ops during backward and packs the same activation bytes for it as the eager program with AC.

    Rule: strict export keeps a checkpointed region as the ``tag_activation_checkpoint`` higher-order op, and its
    pre-dispatch trace copies the region's selective policy onto the re-traced body (torch/_higher_order_ops/wrap.py
    ``proxy_mode_key``: ``gmod_aten.meta["_checkpoint_context_fn"] = gmod.meta["_checkpoint_context_fn"]``); running
    ``ep.module()`` runs that op's implementation, which is ``torch.utils.checkpoint.checkpoint`` of the body with that
    ``context_fn`` (``tag_activation_checkpoint_impl``): what is saved and what is recomputed are eager
    checkpointing's.  Non-strict export traces through the checkpoint (the exported graph holds no region: nothing is
    recomputed), which no documented rule forbids, so it is not judged."""
    __tracebackhide__ = True
    from harness.core.case import ExportMode

    if run.cell.axes.export != ExportMode.STRICT:
        raise NotRun("non-strict export traces through torch.utils.checkpoint (the exported graph holds no "
                     "checkpointed region and recomputes nothing), which no documented rule forbids")
    eager_ac, exported = _evidence(run, "eager", "compiled")
    if (exported.backward_ops, exported.saved_bytes) != (eager_ac.backward_ops, eager_ac.saved_bytes):
        raise AssertionError(
            f"{run.cell.id}: expected the strictly exported program's backward to dispatch {eager_ac.backward_ops} ops "
            f"and its forward to keep {eager_ac.saved_bytes} activation bytes, as the eager program with AC does (the "
            f"exported region runs torch.utils.checkpoint with the region's own policy), saw {exported.backward_ops} "
            f"ops and {exported.saved_bytes} bytes: the exported region checkpoints differently (a selective policy "
            "lost on the way through export recomputes what it should save)")
    return 1



RUNTIME_ORACLES = (recompute_evidence, saved_evidence, no_recompile, grad_disabled_saves_nothing)
EXPORT_ORACLES = (exported_checkpoints_like_eager,)  # the cells of Runner.EXPORTED_PROGRAM
NEEDS = Needs(evidence=True)  # what they read besides the run (run_cell produces it for the cells they judge)


# ------------------------------------------------------------------------------------------- state after the step

def mutated_state(run) -> list[str]:
    """The module-state entries (``pipeline.module_state``) some run of the cell changed, in order: what the forward
    mutates.  Empty when the program has no module or its forward changes nothing."""
    outcomes = [o for o in (run.reference, run.eager, run.compiled) if o is not None and o.module_state is not None]
    names: dict[str, None] = {}
    for o in outcomes:
        before, after = o.module_state["before"], o.module_state["after"]
        for k in (*before, *after):
            if k not in before or k not in after or not _same(before[k], after[k]):
                names[k] = None
    return list(names)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return type(a) is type(b) and a == b


def _differ(name: str, a: Any, e: Any, rtol: float, atol: float) -> str | None:
    if a is None or e is None:
        return None if a is e else f"{name}: present in one run only"
    if isinstance(a, torch.Tensor) and isinstance(e, torch.Tensor):
        if not a.is_floating_point():  # counters (num_batches_tracked): exact
            return None if torch.equal(a, e) else f"{name}: {a.tolist()} vs {e.tolist()}"
        return mismatch(name, a, e, rtol, atol)
    return None if a == e else f"{name}: {a!r} vs {e!r}"


def assert_state(run) -> NamedChecks:
    """The state a step leaves in the program's module (every buffer and plain attribute its forward changes) after
    eager without AC, eager with AC and compiled with AC; floating buffers with the gradients' tolerance
    (``checks.tolerance``; eager with AC against without at the dtype's default, as numerics does), counters and
    attributes exactly.  Two verdicts (``state:<part>``), so a known failure pins one and the other still judges:

    * ``state:eager_ac``: eager with AC leaves the state eager without AC leaves.  Where it does not, the message
      gives the rule that makes it inevitable (:data:`RECOMPUTE_RULE`: the recompute re-invokes the region's forward);
      the user learns their AC changes the step (issue 31), the suites pin it as documented (known_failures.toml).
    * ``state:compiled``: compiled with AC leaves the state eager with AC leaves (compiled checkpointing behaves like
      eager checkpointing), and, per entry where eager with AC matches eager without AC, compiled with AC matches that
      too.  A failure here is a disagreement of the two AC pipelines: a finding to reduce.

    Rule: AC trades compute for memory and leaves the computation's results alone (checkpoint's docstring), and the
    state after the step is one of them (issue 31)."""
    __tracebackhide__ = True
    names = mutated_state(run)
    if not names:
        raise NotRun("the forward mutates no module state")
    if run.reference is None or run.eager is None or run.compiled is None:
        raise NotRun("the run lacks one of eager without AC, eager with AC, compiled with AC")
    rtol, atol = tolerance(run)
    exact = TOLERANCES[run.cell.axes.dtype]
    after = {label: o.module_state["after"] for label, o in (("noac", run.reference), ("eager", run.eager),
                                                             ("compiled", run.compiled))}
    eager_lines, compiled_lines = [], []
    for name in names:
        got = {label: state.get(name) for label, state in after.items()}
        by_eager = _differ(name, got["eager"], got["noac"], *exact)
        if by_eager:
            eager_lines.append(by_eager)
        bad = _differ(name, got["compiled"], got["eager"], rtol, atol)
        if bad:
            compiled_lines.append(f"compiled with AC vs eager with AC: {bad}")
        elif not by_eager and (bad := _differ(name, got["compiled"], got["noac"], rtol, atol)):
            compiled_lines.append(f"compiled with AC vs eager without AC: {bad}")
    head = f"{run.cell.id}: module state after the step"
    failed = []
    if eager_lines:
        failed.append(("eager_ac", f"{head}: eager with AC vs eager without AC differ (eager checkpointing changes "
                       f"the state, as documented: {RECOMPUTE_RULE}):\n  " + "\n  ".join(eager_lines)))
    if compiled_lines:
        failed.append(("compiled", f"{head}: compiled and eager checkpointing disagree:\n  "
                       + "\n  ".join(compiled_lines)))
    passed = tuple(part for part in ("eager_ac", "compiled") if part not in dict(failed))
    return NamedChecks(passed, tuple(failed))
