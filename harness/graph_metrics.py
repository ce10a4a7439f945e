"""Figures read off a graph's canonical text (harness/normalize.py): op counts, bytes saved for backward, FLOPs.

They are computed from text, not from live graphs, so the same function gives the figures of a committed golden
and of a freshly recorded graph, and the nightly report can show their deltas.
"""

from __future__ import annotations

import ast
import re
from collections import Counter

_LINE = re.compile(r"^(?P<indent>\s*)(?P<name>[\w.]+)(?::\s*(?P<type>[^=]*?))?\s*=\s*(?P<rhs>.*?)(?:\s+#.*)?$")
_TENSOR = re.compile(r"^(?P<dt>\w+)\[(?P<dims>[^\]]*)\]$")
_CALL = re.compile(r"^(?P<target>[\w.]+)\((?P<args>.*)\)$")
DTYPE_BYTES = {"f64": 8, "f32": 4, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u8": 1, "b8": 1,
               "c64": 8, "float8_e4m3fn": 1, "float8_e5m2": 1}


def _shape(ty: str | None) -> tuple[int, ...] | None:
    m = _TENSOR.match((ty or "").strip())
    if not m:
        return None
    dims = [d.strip() for d in m["dims"].split(",") if d.strip()]
    return tuple(int(d) for d in dims) if all(d.isdigit() for d in dims) else None


def _bytes(ty: str | None) -> int | None:
    m = _TENSOR.match((ty or "").strip())
    shape = _shape(ty)
    if not m or shape is None or m["dt"] not in DTYPE_BYTES:
        return None
    n = 1
    for d in shape:
        n *= d
    return n * DTYPE_BYTES[m["dt"]]


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _nodes(text: str):
    for raw in text.splitlines():
        if raw.lstrip().startswith(("#", "return", "subgraph")):
            continue
        m = _LINE.match(raw)
        if m:
            yield m


def op_counts(text: str) -> Counter:
    """Calls per target (``aten.mm.default``), over every graph and subgraph in the text."""
    counts: Counter = Counter()
    for m in _nodes(text):
        call = _CALL.match(m["rhs"])
        if call:
            counts[call["target"]] += 1
    return counts


def saved_bytes(bw_text: str) -> int | None:
    """Bytes of the backward graph's non-tangent inputs: what the forward saved for it (None: symbolic shapes)."""
    total = 0
    for m in _nodes(bw_text):
        if m["indent"] or m["rhs"] != "input" or m["name"].startswith("tangents"):
            continue
        if not _TENSOR.match((m["type"] or "").strip()):
            continue  # symbols and scalars
        b = _bytes(m["type"])
        if b is None:
            return None
        total += b
    return total


def flops(text: str) -> int:
    """FLOPs of the ops torch's flop counter knows (matmuls, convolutions, attention), from the shapes in the text."""
    import torch
    from torch.utils.flop_counter import flop_registry

    shapes: dict[str, tuple[int, ...] | None] = {}
    total = 0
    for m in _nodes(text):
        shapes[m["name"]] = _shape(m["type"])
        call = _CALL.match(m["rhs"])
        if not call or not call["target"].startswith("aten."):
            continue
        _, op, overload = (call["target"].split(".") + [""])[:3]
        packet = getattr(torch.ops.aten, op, None)
        if packet is None or packet not in flop_registry:
            continue
        args, kwargs = [], {}
        for tok in _split_top(call["args"]):
            key, eq, val = tok.partition("=")
            if eq and key.isidentifier() and not val.startswith("="):
                kwargs[key] = _value(val, shapes)
            else:
                args.append(_value(tok, shapes))
        try:
            total += int(flop_registry[packet](*args, out_val=_shape(m["type"]), **kwargs))
        except Exception:  # an argument the text does not carry: leave the op out
            continue
    return total


def _value(tok: str, shapes: dict):
    if tok in shapes:
        return shapes[tok]
    try:
        return ast.literal_eval(tok)
    except Exception:
        return None


def metrics(texts: dict[str, str]) -> dict:
    """The figures of one cell's graphs by kind: op counts per kind, saved bytes, FLOPs of fw + bw."""
    out: dict = {"ops": {k: dict(sorted(op_counts(t).items())) for k, t in sorted(texts.items())}}
    out["saved_bytes"] = saved_bytes(texts["bw"]) if "bw" in texts else None
    kinds = [k for k in ("fw", "bw", "inference") if k in texts]
    out["flops"] = sum(flops(texts[k]) for k in kinds) if kinds else None
    return out
