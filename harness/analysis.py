"""What a compiled cell costs and saves, read off its recorded graphs.

For each (joint, fw, bw) triple of a :class:`~harness.pipeline.Run`:

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

import torch
import torch.fx as fx

from harness.checks import op_name
from harness.normalize import type_str

_SKIP_RECOMPUTE = {operator.getitem}
# The partitioner's RNG functionalization replays a forward random op in the backward under these wrappers.
RNG_REPLAY = ("run_with_rng_state", "graphsafe_run_with_rng_state")


def is_rng_replay(node: fx.Node) -> bool:
    return node.op == "call_function" and getattr(node.target, "name", lambda: "")() in RNG_REPLAY


@dataclasses.dataclass
class Saved:
    name: str
    type: str  # f32[4, 4]
    bytes: int | None  # None: symbolic shape
    kind: str  # "input" (a primal, kept alive anyway), "activation", or "rng_state" (replays a random op)


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
    joint: fx.GraphModule
    bw: fx.GraphModule

    @property
    def saved_bytes(self) -> int | None:
        sizes = [s.bytes for s in self.saved]
        return None if None in sizes else sum(sizes)

    def _bytes_of(self, *kinds) -> int | None:
        sizes = [s.bytes for s in self.saved if s.kind in kinds]
        return None if None in sizes else sum(sizes)

    activation_bytes = property(lambda self: self._bytes_of("activation"))
    rng_state_bytes = property(lambda self: self._bytes_of("rng_state"))
    # What the memory invariants compare: a generator state saved to replay randomness is a fixed per-op cost
    # (5 KB on CPU, seed/offset on CUDA) that has no counterpart without AC, not activation memory.
    tensor_bytes = property(lambda self: self._bytes_of("input", "activation"))


@dataclasses.dataclass
class Analysis:
    graphs: list[GraphAnalysis]

    def _sum(self, attr):
        vals = [getattr(g, attr) for g in self.graphs]
        return None if None in vals else sum(vals)

    saved_bytes = property(lambda self: self._sum("saved_bytes"))
    activation_bytes = property(lambda self: self._sum("activation_bytes"))
    rng_state_bytes = property(lambda self: self._sum("rng_state_bytes"))
    tensor_bytes = property(lambda self: self._sum("tensor_bytes"))
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


def _aliases_input(name: str, joint: fx.GraphModule | None) -> bool:
    """``name`` is a primal, or a view chain of one in the joint graph (a transposed weight): no new memory."""
    node = next((n for n in joint.graph.nodes if n.name == name), None) if joint is not None else None
    while node is not None and node.op == "call_function" and getattr(node.target, "is_view", False):
        node = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    return name.startswith("primals") or (node is not None and node.op == "placeholder" and node.name.startswith("primals"))


def saved_tensors(bw: fx.GraphModule, joint: fx.GraphModule | None = None) -> list[Saved]:
    out = []
    for n in bw.graph.find_nodes(op="placeholder"):
        if is_saved_placeholder(n):
            v = _val(n)
            rng = any(is_rng_replay(u) and u.args and u.args[0] is n for u in n.users)
            kind = "rng_state" if rng else "input" if _aliases_input(n.name, joint) else "activation"
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


def boundaries(joint: fx.GraphModule) -> dict[str, str]:
    """Joint nodes tagged for recompute that the partitioner documents it will save anyway
    (``cleanup_recompute_tags``, ``force_save_bw_mutation_src`` in torch/_functorch/partitioners.py)."""
    out = {}
    for n in joint.graph.nodes:
        if _must_recompute(n):
            later = [u.name for u in n.users if _must_recompute(u) and "ac_graph_id" in u.meta
                     and "ac_graph_id" in n.meta and u.meta["ac_graph_id"] > n.meta["ac_graph_id"]]
            if later:
                out[n.name] = f"output of one checkpointed region feeding the next ({', '.join(later)})"
            elif n.meta.get("has_backward_hook", False) and not any(_must_recompute(u) for u in n.users):
                out[n.name] = "region output with a backward hook"
        if n.target is torch.ops.aten.copy_.default and len(n.args) > 1 and isinstance(n.args[1], fx.Node):
            out.setdefault(n.args[1].name, "source of an input mutation (copy_)")
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


def analyse_graphs(joint: fx.GraphModule, fw: fx.GraphModule | None, bw: fx.GraphModule) -> GraphAnalysis:
    fwd = forward_nodes(joint)
    recomputed_nodes = [n for n in bw.graph.nodes if n.op == "call_function" and n.target not in _SKIP_RECOMPUTE
                        and (n.name in fwd or is_rng_replay(n))]
    return GraphAnalysis(
        saved=saved_tensors(bw, joint),
        recomputed=[(n.name, op_name(n) or str(n.target)) for n in recomputed_nodes],
        policies={n.name: p for n in joint.graph.nodes if (p := policy_name(n))},
        boundaries=boundaries(joint),
        fw_flops=graph_flops(fw) if fw is not None else 0,
        bw_flops=graph_flops(bw),
        recompute_flops=graph_flops(bw, {n.name for n in recomputed_nodes}),
        joint=joint,
        bw=bw,
    )


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
        out.append(analyse_graphs(joint, fw, bw))
    return Analysis(out) if out else None


def _fmt_bytes(b: int | None) -> str:
    return "?" if b is None else str(b)


def summary_text(a: Analysis) -> str:
    """The reviewable figures of one cell (the "summary" golden)."""
    import re

    sym = re.compile(r"\b[su]\d+\b")  # symbol names depend on process history; their presence does not

    def shape(ty: str) -> str:
        return re.sub(r"\[[^\]]*\]", lambda m: sym.sub("s?", m.group()), ty)
    lines = [f"saved_bytes: {_fmt_bytes(a.saved_bytes)}", f"activation_bytes: {_fmt_bytes(a.activation_bytes)}",
             f"rng_state_bytes: {_fmt_bytes(a.rng_state_bytes)}",
             f"fw_flops: {a.fw_flops}", f"bw_flops: {a.bw_flops}", f"recompute_flops: {a.recompute_flops}"]
    for i, g in enumerate(a.graphs):
        if len(a.graphs) > 1:
            lines.append(f"## graph {i}")
        lines.append(f"saved ({len(g.saved)} tensors, {_fmt_bytes(g.saved_bytes)} bytes):")
        for s in g.saved:
            lines.append(f"  {s.name}: {shape(s.type)} {_fmt_bytes(s.bytes)} bytes ({s.kind})")
        lines.append(f"recomputed in backward ({len(g.recomputed)} ops, {g.recompute_flops} flops):")
        lines += [f"  {name}: {op}" for name, op in g.recomputed]
        lines.append(f"flops: fw {g.fw_flops}, bw {g.bw_flops}")
    return "\n".join(lines) + "\n"
