"""Probes: tiny standalone programs, each stating one documented behaviour of activation checkpointing.  A probe
returns None when the behaviour holds and raises (an AssertionError saying what was expected and what was seen) when
it does not.  Every fault of the catalogue names the probe that shows its effect: the probe passes on torch as
installed and fails with the fault applied (tests/test_faults.py).

:func:`no_ac_fingerprint` is the other half of that test: a program *without* checkpointing, run eagerly and through
the compile stages a fault could touch, reduced to its outputs, gradients and graph texts; a fault must leave it
byte-identical.

The probes import nothing of the harness: they are torch programs, so that what they show is about torch.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch
import torch._dynamo
import torch._functorch.config
import torch._inductor.config
import torch.fx as fx
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

aten = torch.ops.aten
PROBES: dict[str, Callable[[], None]] = {}


def probe(fn: Callable[[], None]) -> Callable[[], None]:
    PROBES[fn.__name__] = fn
    return fn


# --- helpers -----------------------------------------------------------------------------------------------------

def _x(*shape, seed=0, grad=True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(grad)


def _leaves(*tensors) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]


def _run(fn, inputs, loss_weight_seed=1):
    """Outputs and input gradients of ``fn`` under a fixed random cotangent."""
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    g = torch.Generator().manual_seed(loss_weight_seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], [t.grad for t in inputs]


def _close(label: str, actual, expected, atol=1e-5, rtol=1e-5) -> None:
    for i, (a, e) in enumerate(zip(actual, expected)):
        if (a is None) != (e is None):
            raise AssertionError(f"{label}[{i}]: expected {'None' if e is None else 'a tensor'}, saw "
                                 f"{'None' if a is None else 'a tensor'}")
        if a is not None and not torch.allclose(a.float(), e.float(), atol=atol, rtol=rtol):
            raise AssertionError(f"{label}[{i}]: expected {e.flatten()[:4].tolist()}..., saw {a.flatten()[:4].tolist()}"
                                 f"... (max abs error {(a.float() - e.float()).abs().max().item():.3g})")


def _expect_error(label: str, run: Callable[[], object], error: type, needle: str) -> None:
    """``run()`` must raise ``error`` with ``needle`` in its message."""
    try:
        run()
    except error as e:
        if needle in str(e):
            return
        raise AssertionError(f"{label}: expected {error.__name__} saying {needle!r}, saw {e}") from e
    raise AssertionError(f"{label}: expected {error.__name__} saying {needle!r}, it succeeded")


def _count(gm: fx.GraphModule, op) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in (op, getattr(op, "default", op)))


class _Graphs:
    def __init__(self):
        self.joint: list[fx.GraphModule] = []
        self.fw: list[fx.GraphModule] = []
        self.bw: list[fx.GraphModule] = []


def _partition_fn(name: str):
    from torch._functorch import partitioners

    return {"min_cut": partitioners.min_cut_rematerialization_partition, "default": partitioners.default_partition}[name]


def compiled(fn, *, partitioner: str = "min_cut", dynamic: bool = False, fullgraph: bool = True):
    """``fn`` under torch.compile with aot_eager and ``partitioner``; returns (compiled fn, the graphs it records)."""
    import copy

    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = _Graphs()

    def keep(kind):
        def compiler(gm, example_inputs):
            getattr(graphs, kind).append(gm)
            return make_boxed_func(gm.forward)

        return compiler

    def partition(joint, joint_inputs, **kwargs):
        graphs.joint.append(copy.deepcopy(joint))
        return _partition_fn(partitioner)(joint, joint_inputs, **kwargs)

    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=partition)
    torch._dynamo.reset()
    return torch.compile(fn, backend=backend, fullgraph=fullgraph, dynamic=dynamic), graphs


def inductor_compiled(fn):
    """``fn`` under torch.compile with inductor up to its partitioner and inner compile, the fw/bw graphs it produced
    then run eagerly (no kernels are generated: the graphs are what inductor would lower)."""
    import torch._inductor.compile_fx as cfx
    from torch._inductor.output_code import OutputCode

    graphs = _Graphs()

    class Eager(OutputCode):
        def __init__(self, gm):
            self._boxed_call = True
            self.gm = gm

        def __call__(self, inputs):
            return self.gm(*inputs)

        def post_compile(self, *args, **kwargs):
            pass

        def prepare_for_serialization(self):
            pass

        def set_triton_bundle(self, triton_bundle):
            pass

    def inner(gm, example_inputs, *args, **kwargs):
        (graphs.bw if kwargs.get("is_backward") else graphs.fw).append(gm)
        return Eager(gm)

    def backend(gm, example_inputs):
        with torch._functorch.config.patch(enable_autograd_cache=False), \
                torch._inductor.config.patch(fx_graph_cache=False):
            return cfx.compile_fx(gm, example_inputs, inner_compile=inner)

    torch._dynamo.reset()
    return torch.compile(fn, backend=backend, fullgraph=True), graphs


def _dispatch_counter():
    """A dispatch mode counting the aten ops that run under it (by overload packet name)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.counts[func._overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    return Count()


def _policy(save=(), prefer_save=()):
    def policy(ctx, op, *args, **kwargs):
        if op in save:
            return CheckpointPolicy.MUST_SAVE
        if op in prefer_save:
            return CheckpointPolicy.PREFER_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def _sac(save=(), prefer_save=()):
    return functools.partial(create_selective_checkpoint_contexts, _policy(save, prefer_save))


def _dropout_grad_consistent(label: str, fn, x, p=0.5, scale=1.0) -> None:
    """``fn(x) = scale * dropout(sin(x))``: the gradient must use the forward's mask, i.e. equal
    ``out / sin(x) * cos(x) * w`` for the cotangent ``w`` (recomputing the dropout must replay its randomness)."""
    (out,), (grad,) = _run(fn, [x])
    g = torch.Generator().manual_seed(1)
    w = torch.randn(out.shape, generator=g)
    expected = out / torch.sin(x.detach()) * torch.cos(x.detach()) * w
    kept = (out != 0).float().mean().item()
    if not 0.05 < kept < 0.95:
        raise AssertionError(f"{label}: expected dropout to zero about half the outputs, kept {kept:.2f}")
    _close(f"{label}: gradient vs the forward's dropout mask", [grad], [expected], atol=1e-4)


# --- eager checkpoint --------------------------------------------------------------------------------------------

def _dropout_region(x):
    return torch.nn.functional.dropout(torch.sin(x), p=0.5, training=True)


@probe
def eager_rng_replay():
    """Non-reentrant checkpoint: the recomputation replays the forward's RNG state (preserve_rng_state=True)."""
    torch.manual_seed(0)
    _dropout_grad_consistent("non-reentrant checkpoint", lambda x: checkpoint(_dropout_region, x, use_reentrant=False),
                             _x(64))


@probe
def reentrant_rng_replay():
    """Reentrant checkpoint: the recomputation replays the forward's RNG state (preserve_rng_state=True)."""
    torch.manual_seed(0)
    _dropout_grad_consistent("reentrant checkpoint", lambda x: checkpoint(_dropout_region, x, use_reentrant=True), _x(64))


@probe
def eager_rng_stream_untouched_by_backward():
    """The recomputation runs under ``torch.random.fork_rng``: backward leaves the global RNG stream where it was."""
    torch.manual_seed(0)
    x = _x(64)
    out = checkpoint(_dropout_region, x, use_reentrant=False)
    torch.rand(8)  # the stream moves on after the forward
    state = torch.get_rng_state()
    out.sum().backward()
    after = torch.rand(8)
    torch.set_rng_state(state)
    expected = torch.rand(8)
    _close("torch.rand after backward (the RNG stream must not move during the recomputation)", [after], [expected])


def _autocast_probe(reentrant: bool) -> None:
    def region(x, w):
        return torch.sin(torch.mm(x, w))

    def run(fn):  # the forward under autocast, the backward (and so the recomputation) outside it
        inputs = _leaves(_x(8, 8), _x(8, 8, seed=1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*inputs)
        out.float().sum().backward()
        return [out.detach()], [t.grad for t in inputs]

    ref = run(region)
    got = run(lambda a, b: checkpoint(region, a, b, use_reentrant=reentrant))
    _close("output under autocast, checkpointed vs not", got[0], ref[0], atol=0, rtol=0)
    _close("gradients under autocast, checkpointed vs not (the recomputation must run under the forward's autocast "
           "state)", got[1], ref[1], atol=0, rtol=0)


@probe
def eager_autocast_replay():
    """Non-reentrant checkpoint recomputes under the forward's autocast state: same results as without checkpointing."""
    _autocast_probe(reentrant=False)


@probe
def reentrant_autocast_replay():
    """Reentrant checkpoint recomputes under the forward's autocast state: same results as without checkpointing."""
    _autocast_probe(reentrant=True)


@probe
def eager_early_stop():
    """Non-reentrant checkpoint stops the recomputation once every saved tensor is recomputed (early_stop=True)."""
    calls = []

    def region(x):
        y = torch.sin(x).cos()
        calls.append("tail")  # after the last op whose input is saved: the early-stopped recomputation never gets here
        return y * 1.0

    x = _x(8)
    checkpoint(region, x, use_reentrant=False).sum().backward()
    if len(calls) != 1:
        raise AssertionError(f"expected the region's tail to run once (forward only: early stop), saw {len(calls)} runs")


@probe
def eager_determinism_check():
    """The default determinism check raises CheckpointError when a recomputed tensor's metadata differs."""
    from torch.utils.checkpoint import CheckpointError

    for what, change in (("shape", lambda x: x[:4]), ("dtype", lambda x: x.double())):
        state = {"forward": True}

        def region(x, change=change, state=state):
            y = x if state["forward"] else change(x)
            return torch.sin(y).sum()

        out = checkpoint(region, _x(8), use_reentrant=False)
        state["forward"] = False
        _expect_error(f"recomputation with another {what}", out.backward, CheckpointError, "different metadata")


@probe
def eager_unpack_once():
    """A saved tensor of a checkpointed region can be unpacked once per backward (a second unpack raises)."""
    from torch.utils.checkpoint import CheckpointError

    class Twice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            x, = ctx.saved_tensors
            return g * 2

    out = checkpoint(lambda t: Twice.apply(t.sin()), _x(4), use_reentrant=False)
    _expect_error("a saved tensor unpacked twice", out.sum().backward, CheckpointError, "already unpacked once")


@probe
def eager_retain_graph_twice():
    """Non-reentrant checkpoint supports a second backward with retain_graph=True (a new graph task recomputes)."""
    x = _x(8)
    out = checkpoint(lambda t: torch.sin(t).exp(), x, use_reentrant=False).sum()
    out.backward(retain_graph=True)
    first = x.grad.clone()
    out.backward()
    _close("gradient after two backwards (twice the first)", [x.grad], [2 * first])


@probe
def eager_kwargs_in_recompute():
    """Non-reentrant checkpoint passes keyword arguments to the function in the forward and in the recomputation."""
    def region(x, *, scale=1.0):
        return torch.sin(x * scale).exp()

    x = _x(8)
    ref = _run(lambda t: region(t, scale=3.0), _leaves(x))
    got = _run(lambda t: checkpoint(region, t, use_reentrant=False, scale=3.0), _leaves(x))
    _close("gradient with a keyword argument, checkpointed vs not", got[1], ref[1])


@probe
def reentrant_grads():
    """Reentrant checkpoint gives the same input gradients as no checkpointing."""
    x, w = _x(4, 4), _x(4, 4, seed=1)
    region = lambda a, b: torch.sin(a @ b).exp()  # noqa: E731
    ref = _run(region, _leaves(x, w))
    got = _run(lambda a, b: checkpoint(region, a, b, use_reentrant=True), _leaves(x, w))
    _close("reentrant checkpoint gradients", got[1], ref[1])


# --- selective checkpointing, eager --------------------------------------------------------------------------------

def _sac_region(x):
    return torch.sin(x).exp()  # backward needs exp's output (recomputed from the saved sin) and cos(x), never sin


@probe
def sac_eager_saved_ops_not_recomputed():
    """Eager SAC: an op whose policy is MUST_SAVE or PREFER_SAVE is not run again in backward; PREFER_RECOMPUTE is."""
    for label, policy in (("MUST_SAVE sin", _sac(save=(aten.sin.default,))),
                          ("PREFER_SAVE sin", _sac(prefer_save=(aten.sin.default,)))):
        x = _x(8)
        out = checkpoint(_sac_region, x, use_reentrant=False, context_fn=policy)
        with _dispatch_counter() as counter:
            out.sum().backward()
        if counter.counts["sin"] != 0 or counter.counts["exp"] < 1:
            raise AssertionError(f"{label}: expected backward to run no sin (saved) and exp again (recomputed), saw "
                                 f"{dict(counter.counts)}")


@probe
def sac_eager_bool_policy():
    """Eager SAC: a policy returning a bool means True = save (MUST_SAVE), False = recompute (PREFER_RECOMPUTE)."""
    def policy(ctx, op, *args, **kwargs):
        return op is aten.sin.default

    x = _x(8)
    out = checkpoint(_sac_region, x, use_reentrant=False,
                     context_fn=functools.partial(create_selective_checkpoint_contexts, policy))
    with _dispatch_counter() as counter:
        out.sum().backward()
    if counter.counts["sin"] != 0 or counter.counts["exp"] < 1:
        raise AssertionError(f"policy True for sin: expected backward to run no sin and exp again, saw {dict(counter.counts)}")


@probe
def sac_eager_numerics():
    """Eager SAC gives the gradients of the program without checkpointing."""
    x, w = _x(4, 4), _x(4, 4, seed=1)
    region = lambda a, b: torch.sin(a @ b).t().contiguous().exp() @ b  # noqa: E731
    ref = _run(region, _leaves(x, w))
    got = _run(lambda a, b: checkpoint(region, a, b, use_reentrant=False, context_fn=_sac(save=(aten.mm.default,))),
               _leaves(x, w))
    _close("SAC gradients", got[1], ref[1])


@probe
def sac_eager_cache_mutation_detected():
    """Eager SAC: a cached (saved) output mutated after the forward raises in backward (allow_cache_entry_mutation=False)."""
    def region(x):
        y = torch.sin(x)
        z = y.exp()
        y.mul_(2)  # mutates the cached sin output
        return z

    out = checkpoint(region, _x(8), use_reentrant=False, context_fn=_sac(save=(aten.sin.default,)))
    _expect_error("backward after the cached sin was mutated", out.sum().backward, RuntimeError,
                  "Tensor cached during selective activation checkpoint has been mutated")


@probe
def sac_eager_backward_once():
    """Eager SAC: a second backward through a SAC region raises 'Trying to backward an extra time'."""
    x = _x(8)
    out = checkpoint(_sac_region, x, use_reentrant=False, context_fn=_sac(save=(aten.sin.default,))).sum()
    out.backward(retain_graph=True)
    _expect_error("a second backward through a SAC region", out.backward, RuntimeError, "backward an extra time")


# --- compiled: Dynamo's HOP, AOTAutograd's tags, the partitioners ------------------------------------------------

def _mm_region(x, w):
    return torch.relu(torch.mm(x, w)).sin()


def _bw_count(graphs: _Graphs, op) -> int:
    return sum(_count(g, op) for g in graphs.bw)


@probe
def compiled_ac_recomputes():
    """Compiled plain AC (both partitioners): the region's mm is recomputed in the backward graph (3 mm there: 2 for
    the gradients, 1 recomputed), and the gradients equal eager's."""
    x, w = _x(8, 8), _x(8, 8, seed=1)
    ref = _run(_mm_region, _leaves(x, w))
    for partitioner in ("min_cut", "default"):
        fn, graphs = compiled(lambda a, b: checkpoint(_mm_region, a, b, use_reentrant=False), partitioner=partitioner)
        got = _run(fn, _leaves(x, w))
        _close(f"{partitioner}: gradients", got[1], ref[1])
        if _bw_count(graphs, aten.mm) != 3:
            raise AssertionError(f"{partitioner}: expected 3 mm in the backward graph (one recomputed), saw "
                                 f"{_bw_count(graphs, aten.mm)}")


@probe
def compiled_sac_saves():
    """Compiled SAC with a MUST_SAVE sin (policy function) and with an op list (MUST_SAVE): no sin in the backward
    graph, while the PREFER_RECOMPUTE mm is recomputed there; gradients equal eager's."""
    def region(x, w):
        return torch.mm(x, w).sin().exp()  # backward: exp's output (recomputed from sin), cos(mm) (mm recomputed)

    x, w = _x(8, 8), _x(8, 8, seed=1)
    ref = _run(region, _leaves(x, w))
    for label, context_fn in (("policy", _sac(save=(aten.sin.default,))),
                              ("op list", functools.partial(create_selective_checkpoint_contexts, [aten.sin.default]))):
        for partitioner in ("min_cut", "default"):
            fn, graphs = compiled(lambda a, b: checkpoint(region, a, b, use_reentrant=False, context_fn=context_fn),
                                  partitioner=partitioner)
            got = _run(fn, _leaves(x, w))
            _close(f"{label}, {partitioner}: gradients", got[1], ref[1])
            sin, mm = _bw_count(graphs, aten.sin), _bw_count(graphs, aten.mm)
            if sin != 0 or mm != 3:
                raise AssertionError(f"{label}, {partitioner}: expected the saved sin absent from the backward graph "
                                     f"and the mm recomputed there (0 sin, 3 mm), saw {sin} sin, {mm} mm")


@probe
def compiled_kwargs():
    """Compiled checkpoint: the function's own keyword arguments reach it, checkpoint's (preserve_rng_state) do not."""
    def region(x, *, y):
        return torch.sin(x * y).exp()

    x, y = _x(8), _x(8, seed=1)
    ref = _run(lambda a, b: region(a, y=b), _leaves(x, y))
    fn, _ = compiled(lambda a, b: checkpoint(region, a, use_reentrant=False, preserve_rng_state=False, y=b))
    got = _run(fn, _leaves(x, y))
    _close("compiled checkpoint with keyword arguments: outputs", got[0], ref[0])
    _close("compiled checkpoint with keyword arguments: gradients", got[1], ref[1])


@probe
def compiled_context_fn_partial():
    """Compiled SAC accepts a ``functools.partial`` context_fn in one graph (fullgraph=True)."""
    fn, graphs = compiled(lambda a, b: checkpoint(_mm_region, a, b, use_reentrant=False,
                                                  context_fn=_sac(save=(aten.mm.default,))))
    x, w = _x(8, 8), _x(8, 8, seed=1)
    _run(fn, _leaves(x, w))
    if _bw_count(graphs, aten.mm) != 2:
        raise AssertionError(f"expected the saved mm not recomputed (2 mm in backward), saw {_bw_count(graphs, aten.mm)}")


@probe
def compiled_region_boundary_saved():
    """Two consecutive checkpointed regions: the tensor between them is saved, not recomputed (each region has its
    own ac_graph_id and cleanup_recompute_tags in torch/_functorch/partitioners.py saves a region's output used by a
    later region).  The first region is exp(3x), whose output is the boundary: saved, the backward graph has no exp."""
    def first(x):
        return torch.exp(x * 3)  # backward of exp needs only its output (the boundary), of x * 3 nothing

    def second(y):
        return torch.sigmoid(y) * y

    for partitioner in ("min_cut", "default"):
        fn, graphs = compiled(lambda x: checkpoint(second, checkpoint(first, x, use_reentrant=False),
                                                   use_reentrant=False), partitioner=partitioner)
        _run(fn, [_x(8)])
        joint_ids = sorted({n.meta.get("ac_graph_id") for g in graphs.joint for n in g.graph.nodes
                            if n.op == "call_function" and n.meta.get("ac_graph_id") is not None})
        if len(joint_ids) != 2:
            raise AssertionError(f"{partitioner}: expected two ac_graph_ids on the joint graph, saw {joint_ids}")
        if _bw_count(graphs, aten.exp) != 0:
            raise AssertionError(f"{partitioner}: expected the boundary exp(3x) saved (no exp in the backward graph), "
                                 f"saw {_bw_count(graphs, aten.exp)}")


@probe
def compiled_tags_on_joint():
    """Compiled AC: every op of the region carries a recompute policy and an ac_graph_id on the joint graph."""
    fn, graphs = compiled(lambda a, b: checkpoint(_mm_region, a, b, use_reentrant=False))
    _run(fn, [_x(8, 8), _x(8, 8, seed=1)])
    fw_ops = [n for g in graphs.joint for n in g.graph.nodes if n.name in ("mm", "relu", "sin")]  # the forward's
    untagged = [n.name for n in fw_ops if n.meta.get("recompute") is None or n.meta.get("ac_graph_id") is None]
    if len(fw_ops) != 3 or untagged:
        raise AssertionError(f"expected recompute and ac_graph_id tags on the region's ops, untagged: {untagged}")


def _compiled_dropout(partitioner="min_cut", dynamic=False, size=64):
    torch.manual_seed(0)
    fn, graphs = compiled(lambda x: checkpoint(_dropout_region, x, use_reentrant=False), partitioner=partitioner,
                          dynamic=dynamic)
    _dropout_grad_consistent(f"compiled ({partitioner}{', dynamic' if dynamic else ''}) checkpoint of dropout",
                             fn, _x(size))
    return graphs


@probe
def compiled_rng_replay():
    """Compiled AC (aot_eager, both partitioners): a recomputed dropout replays the forward's mask (the partitioner
    functionalizes the RNG of recomputed random ops: run_and_save_rng_state / run_with_rng_state)."""
    for partitioner in ("min_cut", "default"):
        graphs = _compiled_dropout(partitioner)
        if not any("run_with_rng_state" in str(n.target) for g in graphs.bw for n in g.graph.nodes):
            raise AssertionError(f"{partitioner}: expected the recomputed dropout wrapped in run_with_rng_state")


@probe
def compiled_rng_replay_dynamic():
    """Compiled AC under dynamic shapes: a recomputed dropout replays the forward's mask (the RNG states go before
    the saved symbolic sizes among the forward's outputs)."""
    _compiled_dropout("min_cut", dynamic=True, size=64)
    _compiled_dropout("min_cut", dynamic=True, size=48)


@probe
def inductor_rng_replay():
    """Inductor: a recomputed dropout in a checkpointed region uses the forward's seed: inductor replaces random ops
    with seeded ones before the partitioner duplicates them (torch/_higher_order_ops/wrap.py, TagActivationCheckpoint),
    so the backward graph looks the seed up from the seeds the forward saved."""
    torch.manual_seed(0)
    fn, graphs = inductor_compiled(lambda x: checkpoint(_dropout_region, x, use_reentrant=False))
    _run(fn, [_x(64)])  # (the graphs run eagerly here, where inductor's random prims ignore their seed: no numerics)
    bw = [n for g in graphs.bw for n in g.graph.nodes if n.op == "call_function"]
    lookups = [n for n in bw if "lookup_seed" in str(n.target)]
    fresh = [str(n.target) for n in bw if "inductor_seed" in str(n.target) or "rng_state" in str(n.target)]
    if len(lookups) != 1 or lookups[0].args[0].op != "placeholder" or fresh:
        raise AssertionError(f"expected the backward graph to look the recomputed dropout's seed up from the seeds "
                             f"saved by the forward (one lookup_seed of a backward input, no fresh seed), saw "
                             f"{[(n.name, [str(a) for a in n.args]) for n in lookups]}, fresh: {fresh}")


@probe
def default_partition_backward_order():
    """The default partitioner places recomputed ops just before their first use in the backward graph
    (reordering_to_mimic_autograd_engine): the first op of the backward graph is the recomputed mm (by node order,
    the recomputation then the gradient ops of the last forward op first)."""
    fn, graphs = compiled(lambda a, b: checkpoint(_mm_region, a, b, use_reentrant=False), partitioner="default")
    _run(fn, [_x(8, 8), _x(8, 8, seed=1)])
    order = [str(n.target) for n in graphs.bw[0].graph.nodes if n.op == "call_function"]
    expected = ["aten.mm.default", "aten.relu.default", "aten.cos.default"]
    if order[:3] != expected:
        raise AssertionError(f"expected the backward graph to start {expected}, saw {order[:6]}")


@probe
def backward_hook_output_saved():
    """cleanup_recompute_tags saves (MUST_SAVE) a recomputed region output that has a backward hook, to break the
    hook's circular dependency (torch/_functorch/partitioners.py)."""
    from torch._functorch.partitioners import cleanup_recompute_tags

    graph = fx.Graph()
    x = graph.placeholder("x")
    y = graph.call_function(aten.sin.default, (x,))
    z = graph.call_function(aten.cos.default, (y,))
    graph.output(z)
    for n in (y, z):
        n.meta.update(recompute=CheckpointPolicy.PREFER_RECOMPUTE, ac_graph_id=1)
    z.meta["has_backward_hook"] = True
    cleanup_recompute_tags(fx.GraphModule(torch.nn.Module(), graph), is_default_partition=False)
    if z.meta["recompute"] is not CheckpointPolicy.MUST_SAVE or y.meta["recompute"] is not CheckpointPolicy.PREFER_RECOMPUTE:
        raise AssertionError(f"expected the hooked output MUST_SAVE and its input still PREFER_RECOMPUTE, saw "
                             f"{z.meta['recompute']}, {y.meta['recompute']}")


# --- the memory budget -------------------------------------------------------------------------------------------

def _chain(x, w1, w2, w3):
    a = torch.mm(x, w1).relu()
    b = torch.mm(a, w2).sin()
    return torch.mm(b, w3).cos()


def _budget_run(budget, fn=_chain, n=4, estimator=None, solver=None, width=16):
    x = _x(width, width)
    ws = [_x(width, width, seed=i + 1) for i in range(n - 1)]
    patches = {"activation_memory_budget": budget}
    if estimator:
        patches["activation_memory_budget_runtime_estimator"] = estimator
    if solver:
        patches["activation_memory_budget_solver"] = solver
    with torch._functorch.config.patch(**patches):
        cfn, graphs = compiled(fn)
        got = _run(cfn, _leaves(x, *ws))
    saved = sum(len(next(n for n in g.graph.nodes if n.op == "output").args[0]) for g in graphs.fw)
    return got, graphs, saved


@probe
def budget_sweep():
    """activation_memory_budget on a chain of three mm: each lower budget saves fewer forward outputs and recomputes
    one more mm (the knapsack spends the budget on the cheapest recompute), with unchanged gradients.  Figures of
    torch 2.13 (saved outputs, mm in the backward graph): 1.0 (9, 6), 0.9 (8, 6), 0.7 (7, 7), 0.3 (6, 8), 0.1 (5, 9)."""
    x = [_x(16, 16)] + [_x(16, 16, seed=i + 1) for i in range(3)]
    ref = _run(_chain, _leaves(*x))
    seen = {}
    for budget in (1.0, 0.9, 0.7, 0.3, 0.1):
        got, graphs, saved = _budget_run(budget)
        _close(f"budget {budget}: gradients", got[1], ref[1])
        seen[budget] = (saved, _bw_count(graphs, aten.mm))
    expected = {1.0: (9, 6), 0.9: (8, 6), 0.7: (7, 7), 0.3: (6, 8), 0.1: (5, 9)}
    if seen != expected:
        raise AssertionError(f"expected (saved outputs, backward mm) per budget {expected}, saw {seen}")


@probe
def budget_keeps_must_save():
    """activation_memory_budget never recomputes a MUST_SAVE op (SAC policy), whatever the budget."""
    def fn(x, w1, w2, w3):
        return checkpoint(_chain, x, w1, w2, w3, use_reentrant=False, context_fn=_sac(save=(aten.mm.default,)))

    for budget in (0.5, 0.1):
        _, graphs, _ = _budget_run(budget, fn=fn)
        if _bw_count(graphs, aten.mm) != 6:
            raise AssertionError(f"budget {budget}: expected the 3 MUST_SAVE mm not recomputed (6 mm in backward), saw "
                                 f"{_bw_count(graphs, aten.mm)}")


def _three_mm(x, wa, wb, wc):
    a = torch.mm(x, wa).relu()  # one expensive mm (16x256 @ 256x64)
    b = torch.mm(x[:, :4], wb).relu()  # two cheap ones (16x4 @ 4x32)
    c = torch.mm(x[:, 4:8], wc).relu()
    return a.sum(1) + b.sum(1) + c.sum(1)


@probe
def budget_flops_estimator():
    """activation_memory_budget_runtime_estimator weighs the knapsack: at budget 0.5, "flops" keeps the expensive mm's
    output and recomputes the two cheap mm (8 mm in backward), "testing" (every op costs 1) keeps the most outputs
    and recomputes one (7 mm)."""
    inputs = (_x(16, 256), _x(256, 64, seed=1), _x(4, 32, seed=2), _x(4, 32, seed=3))
    seen = {}
    for estimator in ("flops", "testing"):
        with torch._functorch.config.patch(activation_memory_budget=0.5,
                                           activation_memory_budget_runtime_estimator=estimator):
            fn, graphs = compiled(_three_mm)
            _run(fn, _leaves(*inputs))
        seen[estimator] = _bw_count(graphs, aten.mm)
    if seen != {"flops": 8, "testing": 7}:
        raise AssertionError(f"expected 8 mm in backward under the flops estimator and 7 under testing, saw {seen}")


@probe
def budget_region_annotation():
    """``torch.autograd.graph.region_activation_memory_budget(0.0)`` around the whole forward saves only inputs."""
    def fn(x, w1, w2, w3):
        with torch.autograd.graph.region_activation_memory_budget(0.0):
            return _chain(x, w1, w2, w3)

    _, graphs, saved = _budget_run(1.0, fn=fn)
    _, _, saved_full = _budget_run(1.0)  # (9 outputs)
    if not saved < saved_full:
        raise AssertionError(f"expected the region budget 0.0 to save fewer forward outputs than none, saw {saved} vs "
                             f"{saved_full}")


def _knapsack_instance():
    # greedy (by runtime/memory ratio) takes item 0 and then cannot fit 1 and 2; the optimum takes 1 and 2.
    return [0.5, 0.45, 0.45], [6.0, 5.0, 5.0], 0.9


@probe
def budget_solver_dispatch():
    """``activation_memory_budget_solver`` picks the solver: "dp" and "ilp" find the optimum (items 1, 2 of the
    instance, runtime 10), "greedy" the greedy answer (item 0)."""
    from torch._functorch import partitioners

    memory, runtimes, capacity = _knapsack_instance()
    for solver, expected in (("dp", [1, 2]), ("ilp", [1, 2]), ("greedy", [0]),
                             ("dp_knapsack_sliding_hirschberg", [1, 2])):
        with torch._functorch.config.patch(activation_memory_budget_solver=solver):
            _, saved, _ = partitioners._optimize_runtime_with_given_memory(None, memory, runtimes, capacity, None, [])
        if sorted(saved) != expected:
            raise AssertionError(f"solver {solver}: expected to save items {expected}, saw {sorted(saved)}")


@probe
def knapsack_solvers_optimal():
    """torch's knapsack solvers (torch/_functorch/_activation_checkpointing/knapsack.py) on small instances: dp, ilp
    and the sliding Hirschberg dp return the exact optimum, greedy a feasible set in ratio order."""
    import itertools

    from torch._functorch._activation_checkpointing import knapsack

    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = 2 + trial % 5
        memory = [round(float(v), 4) for v in torch.rand(n, generator=g) * 0.6 + 0.05]
        runtimes = [float(v) for v in torch.randint(1, 20, (n,), generator=g)]
        capacity = round(float(torch.rand(1, generator=g)) * 0.9 + 0.1, 4)
        best = max(sum(runtimes[i] for i in s) for k in range(n + 1) for s in itertools.combinations(range(n), k)
                   if sum(memory[i] for i in s) <= capacity + 1e-9)
        for name in ("dp_knapsack", "ilp_knapsack", "dp_knapsack_sliding_hirschberg"):
            _, saved, recomputed = getattr(knapsack, name)(memory, runtimes, capacity)
            value, used = sum(runtimes[i] for i in saved), sum(memory[i] for i in saved)
            if sorted(saved + recomputed) != list(range(n)) or used > capacity + 1e-3 or abs(value - best) > 1e-6:
                raise AssertionError(f"{name} on memory={memory} runtimes={runtimes} capacity={capacity}: expected the "
                                     f"optimum {best}, saw saved={saved} (value {value}, memory {used:.4f})")
        _, saved, _ = knapsack.greedy_knapsack(memory, runtimes, capacity)
        order = sorted(range(n), key=lambda i: runtimes[i] / memory[i], reverse=True)
        expected, used = [], 0.0
        for i in order:
            if used + memory[i] <= capacity:
                used += memory[i]
                expected.append(i)
        if saved != expected:
            raise AssertionError(f"greedy_knapsack on memory={memory} runtimes={runtimes} capacity={capacity}: expected "
                                 f"{expected} (by runtime/memory, descending), saw {saved}")


# --- the remat pass, export ----------------------------------------------------------------------------------------

@probe
def remat_pass_recomputes():
    """remat_using_tags_for_fwd_loss_bwd_graph: with the pass on, the backward region of a forward+loss+backward graph
    recomputes the checkpointed mm (two mm in the graph's backward region), and the gradients are unchanged."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def step(x, w):
        out = checkpoint(_mm_region, x, w, use_reentrant=False)
        return torch.autograd.grad(out.sum(), (x, w))

    graphs: list[fx.GraphModule] = []

    def fw(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    x, w = _x(8, 8), _x(8, 8, seed=1)
    ref = step(*_leaves(x, w))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True), \
            torch._functorch.config.patch(remat_using_tags_for_fwd_loss_bwd_graph=True):
        got = torch.compile(step, backend=aot_autograd(fw_compiler=fw), fullgraph=True)(*_leaves(x, w))
    _close("remat pass: gradients", got, ref)
    recomputed = [n.name for g in graphs for n in g.graph.nodes if n.name.endswith("_recomputed")]
    if not any(name.startswith("mm") for name in recomputed):
        raise AssertionError(f"expected the mm recomputed in the backward region (a node named mm*_recomputed), saw "
                             f"{recomputed}")


@probe
def non_strict_trace_recomputes():
    """Export's non-strict tracing (make_fx under torch.compiler._non_strict_tracing_context) traces eager SAC as eager:
    the traced train step recomputes the PREFER_RECOMPUTE relu (2 relu: forward and recomputation; the backward needs
    relu's output) and not the MUST_SAVE mm (3 mm: forward and two gradients)."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.traceback import preserve_node_meta

    def step(x, w):
        out = checkpoint(_mm_region, x, w, use_reentrant=False, context_fn=_sac(save=(aten.mm.default,)))
        return torch.autograd.grad(out.sum(), (x, w))

    with torch.compiler._non_strict_tracing_context(), torch.compiler._patch_autograd_grad(), preserve_node_meta():
        gm = make_fx(step)(_x(8, 8), _x(8, 8, seed=1))
    relu, mm = _count(gm, aten.relu), _count(gm, aten.mm)
    if (relu, mm) != (2, 3):
        raise AssertionError(f"expected the traced step to recompute relu and not mm (2 relu, 3 mm), saw {relu} relu, "
                             f"{mm} mm")


@probe
def export_keeps_sac_policy():
    """Export to torch IR keeps a SAC region's policy: the exported graph, compiled, does not recompute the saved mm
    (the same facts as the program compiled directly)."""
    from torch.export import _trace

    class M(torch.nn.Module):
        def forward(self, x, w):
            return checkpoint(_mm_region, x, w, use_reentrant=False, context_fn=_sac(save=(aten.mm.default,)))

    x, w = _x(8, 8), _x(8, 8, seed=1)
    torch._dynamo.reset()
    gm = _trace._export_to_torch_ir(M(), (x, w), {}, dynamic_shapes=None, preserve_module_call_signature=(),
                                    restore_fqn=False, _log_export_usage=False)
    fn, graphs = compiled(gm, fullgraph=False)
    got = _run(fn, _leaves(x, w))
    _close("export + compile: gradients", got[1], _run(_mm_region, _leaves(x, w))[1])
    if _bw_count(graphs, aten.mm) != 2:
        raise AssertionError(f"expected the saved mm not recomputed after export (2 mm in backward), saw "
                             f"{_bw_count(graphs, aten.mm)}")


@probe
def export_pre_dispatch_keeps_sac_policy():
    """torch.export.export(strict=True) traces a SAC region at pre-dispatch into a tag_activation_checkpoint HOP whose
    body keeps the region's context_fn."""
    class M(torch.nn.Module):
        def forward(self, x, w):
            return checkpoint(_mm_region, x, w, use_reentrant=False, context_fn=_sac(save=(aten.mm.default,)))

    torch._dynamo.reset()
    ep = torch.export.export(M(), (_x(8, 8), _x(8, 8, seed=1)), strict=True)
    bodies = [m for m in ep.graph_module.modules() if isinstance(m, fx.GraphModule) and m is not ep.graph_module]
    if not bodies or not all("_checkpoint_context_fn" in b.meta for b in bodies):
        raise AssertionError(f"expected the exported region body to carry the SAC context_fn, bodies: "
                             f"{[sorted(b.meta) for b in bodies]}")


# --- a program without checkpointing -------------------------------------------------------------------------------

def _no_ac_program(x, w1, w2):
    h = torch.nn.functional.dropout(torch.mm(x, w1).relu(), p=0.25, training=True)
    return torch.mm(h.sin(), w2).sum(dim=1).exp()


def no_ac_fingerprint(stages: tuple[str, ...] = ("eager", "aot_eager", "inductor")) -> dict[str, str]:
    """A program without checkpointing (mm, relu, dropout, sin, a reduction) run eagerly, compiled with aot_eager under
    both partitioners and (``inductor`` in ``stages``) through inductor's passes: its outputs, input gradients and
    graph texts, as text.  A fault must leave every entry byte-identical."""
    x, w1, w2 = _x(8, 8), _x(8, 8, seed=1), _x(8, 8, seed=2)
    out: dict[str, str] = {}

    def record(label, fn, graphs=None):
        torch.manual_seed(0)
        outs, grads = _run(fn, _leaves(x, w1, w2))
        out[label] = repr([t.tolist() for t in outs + grads])
        if graphs is not None:
            for kind in ("joint", "fw", "bw"):
                out[f"{label} {kind}"] = "\n".join(g.print_readable(print_output=False) for g in getattr(graphs, kind))

    if "eager" in stages:
        record("eager", _no_ac_program)
    if "aot_eager" in stages:
        for partitioner in ("min_cut", "default"):
            fn, graphs = compiled(_no_ac_program, partitioner=partitioner)
            record(f"aot_eager {partitioner}", fn, graphs)
    if "inductor" in stages:
        fn, graphs = inductor_compiled(_no_ac_program)
        record("inductor", fn, graphs)
    return out


@contextlib.contextmanager
def fault_applied(fault):
    undo = fault.apply()
    try:
        yield
    finally:
        undo()
        torch._dynamo.reset()
