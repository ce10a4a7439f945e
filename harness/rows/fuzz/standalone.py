"""The invariants of harness/core/invariants.py restated with torch alone, for the fuzzer's standalone repro scripts.

harness/rows/fuzz/repro.py embeds this module's source verbatim in a finding's script, so the script checks the
invariant the finding broke without the harness: exit 1 while it fails.  The graphs are read as
harness/core/analysis.py reads them (saved tensors by provenance, recomputed ops by name, the documented region
boundaries, FLOPs from ``torch.utils.flop_counter``'s formulas); each invariant returns the problems it sees, an empty
list when it holds.  tests/test_fuzz.py checks these verdicts against the harness's, on programs that break each
invariant and on programs that do not.  Imports: torch and the standard library only.
"""

import operator

import torch
import torch.fx as fx

RNG_REPLAY = ("run_with_rng_state", "graphsafe_run_with_rng_state")
RECOMPUTE_TAGS = ("MUST_RECOMPUTE", "PREFER_RECOMPUTE")


def _val(node):
    return node.meta.get("val", node.meta.get("example_value")) if isinstance(node, fx.Node) else node


def _nbytes(t):
    try:
        return int(t.numel()) * t.element_size()
    except Exception:  # symbolic numel
        return None


def _policy(node):
    p = node.meta.get("recompute")
    return None if p is None else getattr(p, "name", str(p))


def is_rng_replay(node):
    return node.op == "call_function" and getattr(node.target, "name", lambda: "")() in RNG_REPLAY


def _rng_state_of(node):
    if "rng_state" in node.kwargs:
        return node.kwargs["rng_state"]
    return node.args[0] if node.args and not isinstance(node.args[0], torch._ops.OpOverload) else None


def is_random(node):
    """An op torch tags nondeterministic_seeded, except one whose dropout_p is literally 0.0."""
    if not (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and torch.Tag.nondeterministic_seeded in node.target.tags):
        return False
    schema = node.target._schema.arguments
    i = next((i for i, a in enumerate(schema) if a.name == "dropout_p"), None)
    if i is None:
        return True
    p = node.args[i] if len(node.args) > i else node.kwargs.get("dropout_p", schema[i].default_value)
    return not (isinstance(p, (int, float)) and p == 0.0)


def _forward_nodes(joint):
    backward, fwd = set(), set()
    for n in joint.graph.nodes:
        if n.op == "placeholder":
            (backward if "tangents" in str(n.target) else fwd).add(n.name)
            continue
        if n.op == "output":
            continue
        tag = n.meta.get("partitioner_tag", "")
        from_tangent = any(a.name in backward for a in n.all_input_nodes)
        (backward if "is_backward" in tag or from_tangent and "is_forward" not in tag else fwd).add(n.name)
    return fwd


def _primal_of(name, joint):
    """The primal ``name`` is, or is a view chain of, in the joint graph; else None."""
    if name.startswith("primals"):
        return name
    node = next((n for n in joint.graph.nodes if n.name == name), None)
    while node is not None and node.op == "call_function" and getattr(node.target, "is_view", False):
        node = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    return node.name if node is not None and node.op == "placeholder" and node.name.startswith("primals") else None


def _saved(joint, bw):
    """(name, bytes, kind) of each backward input the forward saved: "input" (a leaf input or parameter, or a view
    of one: alive anyway), "input_activation", "rng_state" or "activation"."""
    out = []
    fed = getattr(joint, "ac_activation_inputs", frozenset())
    for n in bw.graph.find_nodes(op="placeholder"):
        name = str(n.target)
        if "tangents" in name or "bwd_seed" in name or "bwd_base_offset" in name or not isinstance(_val(n), torch.Tensor):
            continue
        primal = _primal_of(n.name, joint)
        if any(is_rng_replay(u) and _rng_state_of(u) is n for u in n.users):
            kind = "rng_state"
        elif primal is not None:
            kind = "input_activation" if primal in fed else "input"
        else:
            kind = "activation"
        out.append((n.name, _nbytes(_val(n)), kind))
    return out


def _cleanup_boundaries(graph):
    out = {}
    for n in graph.nodes:
        if _policy(n) in RECOMPUTE_TAGS:
            later = [u for u in n.users if _policy(u) in RECOMPUTE_TAGS and "ac_graph_id" in u.meta
                     and "ac_graph_id" in n.meta and u.meta["ac_graph_id"] > n.meta["ac_graph_id"]]
            if later or n.meta.get("has_backward_hook", False) and not any(_policy(u) in RECOMPUTE_TAGS for u in n.users):
                out[n.name] = "region boundary"
        if n.target is torch.ops.aten.copy_.default and len(n.args) > 1 and isinstance(n.args[1], fx.Node):
            out.setdefault(n.args[1].name, "source of an input mutation")
    return out


def _boundaries(joint, cse):
    """Recompute-tagged nodes the partitioner saves on purpose (cleanup_recompute_tags, force_save_bw_mutation_src),
    on the graph as received and, for min-cut, after its CSE pass merged identical ops of several regions."""
    out = _cleanup_boundaries(joint.graph)
    if cse:
        from torch._functorch.compile_utils import fx_graph_cse

        try:
            merged = fx_graph_cse(joint.graph)
        except Exception:
            return out
        for name, why in _cleanup_boundaries(merged).items():
            out.setdefault(name, why + " after CSE")
    return out


def _node_flops(node, gm):
    from torch.utils.flop_counter import flop_registry

    if node.op != "call_function":
        return 0
    total = 0
    for a in node.args:
        if isinstance(a, fx.Node) and a.op == "get_attr" and isinstance(getattr(gm, str(a.target), None), fx.GraphModule):
            total += _flops(getattr(gm, str(a.target)))
    packet = getattr(node.target, "overloadpacket", None)
    args = node.args
    if packet is None or packet not in flop_registry:
        inner = next((a for a in node.args if isinstance(a, torch._ops.OpOverload)), None)
        if inner is None or inner.overloadpacket not in flop_registry:
            return total
        packet, args = inner.overloadpacket, node.args[node.args.index(inner) + 1:]
    try:
        return total + int(flop_registry[packet](*fx.node.map_aggregate(args, _val), out_val=_val(node),
                                                 **fx.node.map_aggregate(dict(node.kwargs), _val)))
    except Exception:  # symbolic shapes
        return total


def _flops(gm):
    return sum(_node_flops(n, gm) for n in gm.graph.nodes)


def _region_input_bytes(joint):
    fwd, fed, out = _forward_nodes(joint), getattr(joint, "ac_activation_inputs", frozenset()), {}
    for n in joint.graph.nodes:
        region = n.meta.get("ac_graph_id")
        if region is None or n.name not in fwd:
            continue
        for a in n.all_input_nodes:
            if a.meta.get("ac_graph_id") == region or not isinstance(_val(a), torch.Tensor):
                continue
            primal = _primal_of(a.name, joint)
            if primal is None or primal in fed:
                out[a.name] = _nbytes(_val(a))
    return None if None in out.values() else sum(out.values())


def _pair(joint, candidates):
    names = {n.name for n in joint.graph.nodes}
    best, score = None, 0
    for gm in candidates:
        calls = [n.name for n in gm.graph.nodes if n.op in ("placeholder", "call_function")]
        s = sum(c in names for c in calls) / max(len(calls), 1)
        if s > score:
            best, score = gm, s
    return best


def analyse(graphs, cse=True):
    """One dict per recorded joint graph whose backward ran: its joint and backward graphs, policies, saved tensors,
    recomputed op names, documented boundaries, backward FLOPs and the bytes its regions read from outside."""
    out, bws = [], list(graphs.get("bw", []))
    for joint in graphs.get("joint", []):
        bw = _pair(joint, bws)
        if bw is None:
            continue
        bws.remove(bw)
        fwd = _forward_nodes(joint)
        out.append({
            "joint": joint, "bw": bw, "saved": _saved(joint, bw), "boundaries": _boundaries(joint, cse),
            "policies": {n.name: p for n in joint.graph.nodes if (p := _policy(n))},
            "recomputed": {n.name for n in bw.graph.nodes if n.op == "call_function" and n.target is not operator.getitem
                           and (n.name in fwd or is_rng_replay(n))},
            "bw_flops": _flops(bw), "region_input_bytes": _region_input_bytes(joint)})
    return out


def _activation_bytes(gs):
    sizes = [b for g in gs for _, b, kind in g["saved"] if kind in ("activation", "input_activation")]
    return None if None in sizes else sum(sizes)


# ---- the invariants (harness/core/invariants.py has each rule's source in torch's documentation) ------------------

def must_save_not_recomputed(gs):
    return [f"node {name} (policy MUST_SAVE) is recomputed in the backward" for g in gs
            for name, p in g["policies"].items() if p == "MUST_SAVE" and name in g["recomputed"]]


def recompute_tagged_not_saved(gs):
    return [f"node {name} (policy {p}) is saved for backward, and is no documented region boundary" for g in gs
            for name, p in g["policies"].items()
            if p in RECOMPUTE_TAGS and name in {s for s, _, _ in g["saved"]} and name not in g["boundaries"]]


def random_ops_replayed(gs):
    problems = []
    for g in gs:
        for n in g["bw"].graph.nodes:
            if is_random(n) and n.name in g["recomputed"]:
                problems.append(f"forward random op {n.name} ({n.target}) is recomputed in the backward without the "
                                f"forward's RNG state")
            if is_rng_replay(n):
                state = _rng_state_of(n)
                saved = isinstance(state, fx.Node) and state.op == "placeholder" and (
                    str(state.target).startswith("bwd_rng_state") or any(s == state.name for s, _, _ in g["saved"]))
                if not saved:
                    problems.append(f"RNG replay {n.name} takes its state from {state}, not from a state the forward saved")
    return problems


def _checkpointed(gs):
    return bool(gs) and any(g["policies"] for g in gs)


def ac_backward_does_no_less_work(gs, plain):
    if not _checkpointed(gs):
        return []
    with_ac, without = sum(g["bw_flops"] for g in gs), sum(g["bw_flops"] for g in plain)
    return [f"backward FLOPs with AC {with_ac} < without AC {without}"] if with_ac < without else []


def ac_saves_within_eager_bound(gs, plain):
    if not _checkpointed(gs):
        return []
    act, plain_act = _activation_bytes(gs), _activation_bytes(plain)
    regions = [g["region_input_bytes"] for g in gs]
    activation = ("activation", "input_activation")
    directed = {name: b for g in gs for name, b, kind in g["saved"]
                if kind in activation and g["policies"].get(name) in ("MUST_SAVE", "PREFER_SAVE")}
    if None in (act, plain_act, *regions, *directed.values()):
        return []
    also_plain = sum(b or 0 for g in plain for name, b, kind in g["saved"] if name in directed and kind in activation)
    chosen, bound = act - sum(directed.values()), plain_act - also_plain + sum(regions)
    return [f"saved activation bytes with AC (*_SAVE aside) {chosen} > without AC + the regions' inputs {bound}"] \
        if chosen > bound else []


def budget_monotone(sweep):
    """``sweep``: [(budget, analysed graphs)] in the order the budget decreases."""
    seen = [(b, _activation_bytes(gs)) for b, gs in sweep]
    if any(s is None for _, s in seen):
        return []
    return [f"saved activation bytes rise from {s0} to {s1} as activation_memory_budget goes {b0} -> {b1}"
            for (b0, s0), (b1, s1) in zip(seen, seen[1:]) if s1 > s0]


KNAPSACK_GAP = {"dp": 0.0, "dp_knapsack_sliding_hirschberg": 0.0, "ilp": 1e-4}  # how far below its optimum each may stop


def budget_knapsack_monotone(sweep, solver):
    """``sweep``: [(budget, [(memory, runtimes, max_memory, objective, saved items), ...])]: the knapsacks the
    partitioner posed at each budget.  Posed at a down-set of the interior budgets; an exact solver's objective never
    falls as the capacity grows on the same instance."""
    interior = sorted((b, calls) for b, calls in sweep if 0.0 < b < 1.0)
    problems = [f"{len(c1)} knapsacks posed at budget {b1}, {len(c0)} at {b0}"
                for (b0, c0), (b1, c1) in zip(interior, interior[1:]) if len(c1) > len(c0)]
    if solver not in KNAPSACK_GAP:
        return problems
    posed = [(b, c) for b, calls in interior for c in calls]
    return problems + [f"{solver}'s objective falls from {c0[3]} at budget {b0} to {c1[3]} at budget {b1} on the same "
                       f"instance (saved items {c0[4]} -> {c1[4]})"
                       for b0, c0 in posed for b1, c1 in posed
                       if c0[2] < c1[2] and c0[:2] == c1[:2] and c1[3] < c0[3] * (1 - KNAPSACK_GAP[solver])]
