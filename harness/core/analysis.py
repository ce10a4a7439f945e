"""What a compiled cell costs and saves, read off its recorded graphs.

For each (joint, fw, bw) triple of a :class:`~harness.core.pipeline.Run`:

* **saved tensors**: the backward graph's placeholders that are not tangents, RNG seed/offset inputs, symbols or
  backward state.  That is exactly how ``torch/_functorch/partitioners.py::_extract_fwd_bwd_modules`` builds the
  backward: its inputs are ``saved_sym_nodes + saved_values + saved_opaque_objects + saved_opaque_nodes +
  tangent_inputs + bwd_seed_offset_inputs + backward_state_inputs``, keeping the joint graph's node names.
  A saved ``primals_*``, or a view of one (a transposed weight), is an input kept alive (no new memory); a
  generator state feeding an RNG replay is an RNG state; the others are activations.
* **recomputed ops**: backward call nodes whose name is a forward node of the joint graph (``node_copy`` keeps
  names), i.e. forward work redone in the backward.
* **policies**: the ``recompute`` tag (CheckpointPolicy) of each joint node, as the partitioner received it.
* **FLOPs** per graph and of the recomputed ops, from each node's ``meta["val"]`` shapes through
  ``torch.utils.flop_counter``'s formula registry (exact for the ops it knows: matmuls, convolutions, attention;
  zero for the others), without running anything.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import Counter

import torch
import torch.fx as fx

from harness.core.normalize import target_str, type_str
from harness.core.pipeline import NOT_ANALYSED

_SKIP_RECOMPUTE = {operator.getitem}
# The partitioner's RNG functionalization replays a forward random op in the backward under these wrappers.
RNG_REPLAY = ("run_with_rng_state", "graphsafe_run_with_rng_state")
# RNG-wrapping higher-order ops: an occurrence of the wrapped op counts as the op (as upstream's count_ops does).
_RNG_WRAPPERS = {"run_and_save_rng_state": 0, "run_with_rng_state": 1, "graphsafe_run_with_rng_state": 0}


def is_rng_replay(node: fx.Node) -> bool:
    return node.op == "call_function" and getattr(node.target, "name", lambda: "")() in RNG_REPLAY


def op_name(node: fx.Node) -> str | None:
    """The op a call node runs (``aten.mm.default``); an RNG wrapper counts as the op it wraps."""
    if node.op not in ("call_function", "call_method", "call_module"):
        return None
    name = target_str(node)
    for wrapper, idx in _RNG_WRAPPERS.items():
        if wrapper in node.name or name.endswith(wrapper):
            inner = node.args[idx] if len(node.args) > idx else None
            if isinstance(inner, torch._ops.OpOverload):
                return str(inner)
    return name


def op_counts(gms) -> Counter:
    """Ops of every graph of one kind, HOP bodies (subgraphs) included."""
    counts: Counter = Counter()
    for gm in gms:
        for node in gm.graph.nodes:
            name = op_name(node)
            if name:
                counts[name] += 1
        for _, sub in gm.named_children():
            if isinstance(sub, fx.GraphModule):
                counts.update(op_counts([sub]))
    return counts


@dataclasses.dataclass
class Saved:
    name: str
    type: str  # f32[4, 4]
    bytes: int | None  # None: symbolic shape
    kind: str  # "input", "input_activation", "activation" or "rng_state": see saved_tensors


@dataclasses.dataclass
class GraphAnalysis:
    """One joint graph and its partition."""

    saved: list[Saved]
    recomputed: list[tuple[str, str]]  # (node name, op)
    policies: dict[str, str]  # joint node name -> CheckpointPolicy name
    boundaries: dict[str, str]  # joint node name -> why the partitioner may save it despite a recompute tag
    fw_flops: int
    bw_flops: int
    recompute_flops: int
    region_input_bytes: int | None  # activations the checkpointed regions read from outside (see region_inputs)
    joint: fx.GraphModule
    bw: fx.GraphModule

    @property
    def recomputed_names(self) -> set[str]:
        return {name for name, _ in self.recomputed}

    @property
    def saved_bytes(self) -> int | None:
        sizes = [s.bytes for s in self.saved]
        return None if None in sizes else sum(sizes)

    def _bytes_of(self, *kinds) -> int | None:
        sizes = [s.bytes for s in self.saved if s.kind in kinds]
        return None if None in sizes else sum(sizes)

    activation_bytes = property(lambda self: self._bytes_of("activation", "input_activation"))
    # Activations produced inside this graph (what recomputation can avoid; an input activation cannot be recomputed here).
    intermediate_bytes = property(lambda self: self._bytes_of("activation"))
    # A generator state saved to replay randomness is a fixed per-op cost (5 KB on CPU) with no counterpart without
    # AC: reported apart from activation memory.
    rng_state_bytes = property(lambda self: self._bytes_of("rng_state"))


@dataclasses.dataclass
class Analysis:
    graphs: list[GraphAnalysis]

    def _sum(self, attr):
        vals = [getattr(g, attr) for g in self.graphs]
        return None if None in vals else sum(vals)

    saved_bytes = property(lambda self: self._sum("saved_bytes"))
    activation_bytes = property(lambda self: self._sum("activation_bytes"))
    intermediate_bytes = property(lambda self: self._sum("intermediate_bytes"))
    rng_state_bytes = property(lambda self: self._sum("rng_state_bytes"))
    region_input_bytes = property(lambda self: self._sum("region_input_bytes"))
    fw_flops = property(lambda self: self._sum("fw_flops"))
    bw_flops = property(lambda self: self._sum("bw_flops"))
    recompute_flops = property(lambda self: self._sum("recompute_flops"))

    @property
    def saved(self) -> list[Saved]:
        return [s for g in self.graphs for s in g.saved]

    @property
    def recomputed(self) -> list[tuple[str, str]]:
        return [r for g in self.graphs for r in g.recomputed]


def _val(node):
    return node.meta.get("val", node.meta.get("example_value")) if isinstance(node, fx.Node) else node


def _nbytes(t: torch.Tensor) -> int | None:
    try:
        return int(t.numel()) * t.element_size()
    except Exception:  # symbolic numel
        return None


def is_saved_placeholder(node: fx.Node) -> bool:
    """A backward input that holds a tensor the forward saved (see the module docstring)."""
    if node.op != "placeholder":
        return False
    name = str(node.target)
    if "tangents" in name or "bwd_seed" in name or "bwd_base_offset" in name:
        return False
    return isinstance(_val(node), torch.Tensor)


def _input_of(name: str, joint: fx.GraphModule | None) -> str | None:
    """The primal that ``name`` is, or is a view chain of in the joint graph (a transposed weight); else None."""
    if name.startswith("primals"):
        return name
    node = next((n for n in joint.graph.nodes if n.name == name), None) if joint is not None else None
    while node is not None and node.op == "call_function" and getattr(node.target, "is_view", False):
        node = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    return node.name if node is not None and node.op == "placeholder" and node.name.startswith("primals") else None


def activation_inputs(joint: fx.GraphModule | None) -> frozenset[str]:
    """Primals of ``joint`` that entered the compiled graph as activations (non-leaf tensors requiring grad: an earlier
    graph's or eager code's output), as the recording backend noted them (``harness.core.pipeline.Recorder``)."""
    return getattr(joint, "ac_activation_inputs", frozenset())


def rng_state_of(node: fx.Node):
    """The RNG state argument of an RNG replay: ``run_with_rng_state(rng_state, op, *args)`` takes it first;
    ``graphsafe_run_with_rng_state(op, *args, rng_state=...)`` (CUDA, fallback_random off) as a keyword."""
    if not is_rng_replay(node):
        return None
    if "rng_state" in node.kwargs:
        return node.kwargs["rng_state"]
    return node.args[0] if node.args and not isinstance(node.args[0], torch._ops.OpOverload) else None


def saved_tensors(bw: fx.GraphModule, joint: fx.GraphModule | None = None) -> list[Saved]:
    """The backward's saved inputs by provenance: a parameter or leaf user input (or a view of one) is "input" (alive
    anyway: no activation memory); an input that entered the compiled graph as an activation is "input_activation"
    (it stays alive for the backward only because it was saved); a state feeding an RNG replay is "rng_state";
    everything else is an "activation"."""
    out = []
    fed = activation_inputs(joint)
    for n in bw.graph.find_nodes(op="placeholder"):
        if is_saved_placeholder(n):
            v = _val(n)
            primal = _input_of(n.name, joint)
            if any(rng_state_of(u) is n for u in n.users):
                kind = "rng_state"
            elif primal is not None:
                kind = "input_activation" if primal in fed else "input"
            else:
                kind = "activation"
            out.append(Saved(n.name, type_str(v), _nbytes(v), kind))
    return out


def node_flops(node: fx.Node, gm: fx.GraphModule | None = None) -> int:
    """FLOPs of one call node from its meta shapes; a HOP's subgraph bodies are counted once per call."""
    from torch.utils.flop_counter import flop_registry

    if node.op != "call_function":
        return 0
    total = 0
    if gm is not None:
        for a in node.args:
            if isinstance(a, fx.Node) and a.op == "get_attr":
                sub = getattr(gm, str(a.target), None)
                if isinstance(sub, fx.GraphModule):
                    total += graph_flops(sub)
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    if packet is None or packet not in flop_registry:
        # RNG wrappers (run_with_rng_state(op, ...)) count as their op
        inner = next((a for a in node.args if isinstance(a, torch._ops.OpOverload)), None)
        if inner is None or inner.overloadpacket not in flop_registry:
            return total
        packet = inner.overloadpacket
        args = node.args[node.args.index(inner) + 1:]
    else:
        args = node.args
    args = torch.fx.node.map_aggregate(args, _val)
    kwargs = torch.fx.node.map_aggregate(dict(node.kwargs), _val)
    try:
        return total + int(flop_registry[packet](*args, out_val=_val(node), **kwargs))
    except Exception:  # symbolic shapes
        return total


def graph_flops(gm: fx.GraphModule, only: set[str] | None = None) -> int:
    return sum(node_flops(n, gm) for n in gm.graph.nodes if only is None or n.name in only)


def forward_nodes(joint: fx.GraphModule) -> set[str]:
    """Names of the joint graph's forward nodes: tagged ``is_forward``, or (untagged) not depending on a tangent."""
    backward: set[str] = set()
    fwd: set[str] = set()
    for n in joint.graph.nodes:
        tag = n.meta.get("partitioner_tag", "")
        if n.op == "placeholder":
            (backward if "tangents" in str(n.target) else fwd).add(n.name)
            continue
        if n.op == "output":
            continue
        from_tangent = any(a.name in backward for a in n.all_input_nodes)
        if "is_backward" in tag or from_tangent and "is_forward" not in tag:
            backward.add(n.name)
        else:
            fwd.add(n.name)
    return fwd


def policy_name(node: fx.Node) -> str | None:
    p = node.meta.get("recompute")
    return None if p is None else getattr(p, "name", str(p))


def _must_recompute(node: fx.Node) -> bool:
    return policy_name(node) in ("MUST_RECOMPUTE", "PREFER_RECOMPUTE")


def _cleanup_boundaries(graph: fx.Graph) -> dict[str, str]:
    out = {}
    for n in graph.nodes:
        if _must_recompute(n):
            later = [u.name for u in n.users if _must_recompute(u) and "ac_graph_id" in u.meta
                     and "ac_graph_id" in n.meta and u.meta["ac_graph_id"] > n.meta["ac_graph_id"]]
            if later:
                out[n.name] = f"output of one checkpointed region feeding a later one ({', '.join(later)})"
            elif n.meta.get("has_backward_hook", False) and not any(_must_recompute(u) for u in n.users):
                out[n.name] = "region output with a backward hook"
        if n.target is torch.ops.aten.copy_.default and len(n.args) > 1 and isinstance(n.args[1], fx.Node):
            out.setdefault(n.args[1].name, "source of an input mutation (copy_)")
    return out


def boundaries(joint: fx.GraphModule, cse: bool = True) -> dict[str, str]:
    """Joint nodes tagged for recompute that the partitioner documents it will save anyway, as it sees the graph.

    ``min_cut_rematerialization_partition`` first merges identical nodes (``fx_graph_cse`` when
    ``functorch.config.cse``, on by default; the default partitioner does not), then ``cleanup_recompute_tags`` marks MUST_SAVE a recomputable node used by a later
    region's recomputable node ("stash the tensor at the boundary of checkpointed blocks") and a region output with a
    backward hook; ``force_save_bw_mutation_src`` saves the source of an input mutation.  So the rule is applied to
    the joint graph as received and to its CSE-merged form: an identical op in two regions becomes one node whose
    users span both (fuzz finding 57011d7d53, retracted: not a defect)."""
    out = _cleanup_boundaries(joint.graph)
    if cse:
        from torch._functorch.compile_utils import fx_graph_cse

        try:
            merged = fx_graph_cse(joint.graph)
        except Exception:  # a graph the pass cannot copy: the received graph's boundaries stand
            return out
        for name, why in _cleanup_boundaries(merged).items():
            out.setdefault(name, why + " after CSE merged identical ops of several regions")
    return out


def region_inputs(joint: fx.GraphModule) -> dict[str, int | None]:
    """Bytes of each tensor a checkpointed region reads from outside itself, when it is an activation (not a
    parameter or leaf input): what eager ``checkpoint`` saves for the region ("inputs to the checkpointed function are
    saved", torch/utils/checkpoint.py), by joint node name."""
    fwd = forward_nodes(joint)
    fed = activation_inputs(joint)
    out: dict[str, int | None] = {}
    for n in joint.graph.nodes:
        region = n.meta.get("ac_graph_id")
        if region is None or n.name not in fwd:
            continue
        for a in n.all_input_nodes:
            if a.meta.get("ac_graph_id") == region or not isinstance(_val(a), torch.Tensor):
                continue
            primal = _input_of(a.name, joint)
            if primal is not None and primal not in fed:
                continue  # a parameter or leaf input: alive anyway
            out[a.name] = _nbytes(_val(a))
    return out


def _pair(joint: fx.GraphModule, candidates: list[fx.GraphModule]) -> fx.GraphModule | None:
    """The graph among ``candidates`` that came out of ``joint`` (most call-node names in common)."""
    names = {n.name for n in joint.graph.nodes}
    best, score = None, 0
    for gm in candidates:
        calls = [n.name for n in gm.graph.nodes if n.op in ("placeholder", "call_function")]
        s = sum(c in names for c in calls) / max(len(calls), 1)
        if s > score:
            best, score = gm, s
    return best


def analyse_graphs(joint: fx.GraphModule, fw: fx.GraphModule | None, bw: fx.GraphModule, cse: bool = True) -> GraphAnalysis:
    fwd = forward_nodes(joint)
    inputs = region_inputs(joint)
    recomputed_nodes = [n for n in bw.graph.nodes if n.op == "call_function" and n.target not in _SKIP_RECOMPUTE
                        and (n.name in fwd or is_rng_replay(n))]
    return GraphAnalysis(
        saved=saved_tensors(bw, joint),
        recomputed=[(n.name, op_name(n) or str(n.target)) for n in recomputed_nodes],
        policies={n.name: p for n in joint.graph.nodes if (p := policy_name(n))},
        boundaries=boundaries(joint, cse),
        fw_flops=graph_flops(fw) if fw is not None else 0,
        bw_flops=graph_flops(bw),
        recompute_flops=graph_flops(bw, {n.name for n in recomputed_nodes}),
        region_input_bytes=None if None in inputs.values() else sum(inputs.values()),
        joint=joint,
        bw=bw,
    )


def of(run) -> Analysis | None:
    """The analysis of a recorded run, computed once per run (every verdict, golden and report reads this one)."""
    if run.analysis is NOT_ANALYSED:
        run.analysis = analyse(run)
    return run.analysis


def analyse(run) -> Analysis | None:
    """The analysis of a recorded run; None when it has no joint/backward graphs (custom pipelines, inference-only,
    graphs without node meta)."""
    joints, fws, bws = (run.graphs.get(k, []) for k in ("joint", "fw", "bw"))
    if not joints or not bws:
        return None
    if any("val" not in n.meta for g in bws for n in g.graph.find_nodes(op="placeholder")):
        return None
    out = []
    remaining_bw, remaining_fw = list(bws), list(fws)
    for joint in joints:
        bw = _pair(joint, remaining_bw)
        if bw is None:
            continue  # a joint whose backward never ran
        remaining_bw.remove(bw)
        fw = _pair(joint, remaining_fw)
        if fw is not None:
            remaining_fw.remove(fw)
        out.append(analyse_graphs(joint, fw, bw, cse=run.cell.axes.partitioner == "min_cut"))
    return Analysis(out) if out else None


def policy_lines(joints) -> list[str]:
    """"node name: target -> policy" for every call_function node of the joint graphs that carries a recompute
    policy (the SAC annotations AOTAutograd puts on the joint graph as the partitioner receives it)."""
    return [f"{n.name}: {n.target} -> {n.meta['recompute'].name}" for joint in joints for n in joint.graph.nodes
            if n.op == "call_function" and "recompute" in n.meta]
