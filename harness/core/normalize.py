"""Canonical, human-readable text for FX graphs.

The text keeps what a reviewer needs (op, arguments, shapes, dtypes, recompute policy per node in the joint graph)
and drops what varies between processes or checkouts (file paths, line numbers, stack traces, object ids, and the
global ``ac_graph_id`` counter, which is relabelled ``ac0, ac1, ...`` in order of appearance).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import torch
import torch.fx as fx

_DTYPE_ABBR = {
    torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
    torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
    torch.bool: "b8", torch.complex64: "c64",
}


def type_str(val) -> str:
    """``f32[4, 4]`` for a tensor, ``Sym(s0)`` for a symbol, a tuple of those for multi-output nodes."""
    if isinstance(val, torch.Tensor):
        dt = _DTYPE_ABBR.get(val.dtype, str(val.dtype).replace("torch.", ""))
        return f"{dt}[{', '.join(str(s) for s in val.shape)}]"
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return f"Sym({val})"
    if isinstance(val, (list, tuple)):
        return "(" + ", ".join(type_str(v) for v in val) + ")"
    if isinstance(val, (int, float, bool)):
        return type(val).__name__
    return ""


def target_str(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f".{t}"
    if node.op in ("call_module", "get_attr"):
        return f"self.{t}"
    if isinstance(t, torch._ops.OpOverload):
        return str(t)  # aten.mm.default
    if isinstance(t, torch._ops.HigherOrderOperator):
        return f"higher_order.{t.name()}"
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)
    if mod in ("_operator", "operator"):
        mod = "operator"
    if name.startswith("_VariableFunctionsClass."):  # torch.sin and friends
        mod, name = "torch", name.split(".", 1)[1]
    return f"{mod}.{name}" if mod else name


def arg_str(a) -> str:
    if isinstance(a, fx.Node):
        return a.name
    if isinstance(a, tuple):
        inner = ", ".join(arg_str(x) for x in a)
        return f"({inner},)" if len(a) == 1 else f"({inner})"
    if isinstance(a, list):
        return "[" + ", ".join(arg_str(x) for x in a) + "]"
    if isinstance(a, dict):
        return "{" + ", ".join(f"{k!r}: {arg_str(v)}" for k, v in a.items()) + "}"
    if isinstance(a, torch.dtype):
        return str(a)
    if isinstance(a, torch.device):
        return f"device({a.type!r})"
    if isinstance(a, enum.Enum):
        return f"{type(a).__name__}.{a.name}"
    if isinstance(a, slice):
        return f"slice({arg_str(a.start)}, {arg_str(a.stop)}, {arg_str(a.step)})"
    if isinstance(a, fx.GraphModule):
        return "<graph>"
    if callable(a) and not isinstance(a, (int, float)):
        return getattr(a, "__qualname__", None) or getattr(a, "__name__", None) or type(a).__name__
    if isinstance(a, torch.Tensor):
        return f"tensor({type_str(a)})"
    return repr(a)


def policy_str(node: fx.Node) -> str:
    policy = node.meta.get("recompute")
    if policy is None:
        return ""
    return getattr(policy, "name", str(policy))


class _AcLabels:
    """Maps the process-global ac_graph_id values to ac0, ac1, ... by first appearance."""

    def __init__(self):
        self.labels: dict[object, str] = {}

    def __call__(self, raw) -> str:
        if raw not in self.labels:
            self.labels[raw] = f"ac{len(self.labels)}"
        return self.labels[raw]


def _node_line(node: fx.Node, annotate: bool, ac: _AcLabels) -> str:
    val = node.meta.get("val", node.meta.get("example_value"))
    ty = type_str(val)
    ann = f": {ty}" if ty else ""
    if node.op == "placeholder":
        line = f"{node.name}{ann} = input"
    elif node.op == "output":
        line = f"return {arg_str(node.args[0])}"
    elif node.op == "get_attr":
        line = f"{node.name}{ann} = self.{node.target}"
    else:
        args = [arg_str(a) for a in node.args] + [f"{k}={arg_str(v)}" for k, v in node.kwargs.items()]
        line = f"{node.name}{ann} = {target_str(node)}({', '.join(args)})"
    if annotate:
        notes = []
        policy = policy_str(node)
        if policy:
            notes.append(policy)
        if "ac_graph_id" in node.meta:
            notes.append(ac(node.meta["ac_graph_id"]))
        tag = node.meta.get("partitioner_tag")
        if tag:
            notes.append(tag)
        if notes:
            line += "  # " + " ".join(notes)
    return line


_SYMBOL = re.compile(r"(?<![\w.])([su])(\d+)(?![\w\[])")  # not u8[...]: that is a dtype


def relabel_symbols(text: str) -> str:
    """Rename shape symbols (``s29``, ``u3``) by order of first appearance (``s0, s1, ...``).

    Torch numbers symbols from process-wide state (the meta converter names an RNG state's size after the size of a
    weak memo), so the same graph gets other numbers after other work or under another xdist worker."""
    labels: dict[str, str] = {}
    counts: dict[str, int] = {}

    def rename(m: re.Match) -> str:
        key = m.group(0)
        if key not in labels:
            prefix = m.group(1)
            labels[key] = f"{prefix}{counts.get(prefix, 0)}"
            counts[prefix] = counts.get(prefix, 0) + 1
        return labels[key]

    return _SYMBOL.sub(rename, text)


def graph_text(gm: fx.GraphModule | fx.Graph, *, annotate: bool = False, indent: str = "") -> str:
    """One canonical text for one graph, subgraphs (HOP bodies) appended after it, indented."""
    ac = _AcLabels()
    return relabel_symbols(_graph_text(gm, annotate, indent, ac))


def _graph_text(gm, annotate: bool, indent: str, ac: _AcLabels) -> str:
    graph = gm.graph if isinstance(gm, fx.GraphModule) else gm
    lines = [indent + _node_line(n, annotate, ac) for n in graph.nodes]
    if isinstance(gm, fx.GraphModule):
        for node in graph.nodes:
            if node.op == "get_attr":
                sub = getattr(gm, str(node.target), None)
                if isinstance(sub, fx.GraphModule):
                    lines.append(f"{indent}subgraph {node.target}:")
                    lines.append(_graph_text(sub, annotate, indent + "    ", ac))
    return "\n".join(lines)


def graphs_text(gms: Iterable[fx.GraphModule], *, annotate: bool = False) -> str:
    """Several graphs of one kind (e.g. one per Dynamo frame), each under a ``## graph N`` heading."""
    gms = list(gms)
    if len(gms) == 1:
        return graph_text(gms[0], annotate=annotate) + "\n"
    return "".join(f"## graph {i}\n{graph_text(g, annotate=annotate)}\n" for i, g in enumerate(gms))
