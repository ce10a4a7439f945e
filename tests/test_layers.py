"""The folders of harness/ are its layers (``harness.LAYERS``, bottom first); imports point only down or sideways.

Every ``import harness.X`` / ``from harness.X import ...`` counts, module-level or inside a function, and so does a
dynamic import: a string naming a harness module (``importlib.import_module(f"harness.rows.cases.{name}")``,
``"-p", "harness.tools.nightly_plugin"``, ``"harness.tools.training:rank_program"``).  There is no exemption: a module
that needs something above it is in the wrong folder.  Inside a folder the imports form no cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import harness
from harness.core.paths import ROOT

TOP_LEVEL = ("harness", "harness.__main__")  # the package itself and `python -m harness` (the user's command line)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The index of the folder ``module`` lives in (``harness.__main__`` counts as the top layer)."""
    if module == "harness.__main__":
        return len(harness.LAYERS) - 1
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in harness.LAYERS:
        raise AssertionError(f"module {module} is in no layer folder: move it under harness/<{'|'.join(harness.LAYERS)}>/")
    return harness.LAYERS.index(parts[1])


def _known(dotted: str) -> str | None:
    """The harness module a dotted name points at (``harness.core.case.Case`` -> ``harness.core.case``)."""
    parts = dotted.split(".")
    for n in range(len(parts), 1, -1):
        base = ROOT / Path(*parts[:n])
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return ".".join(parts[:n])
    return None


# A string that is a module name (``"harness.tools.nightly_plugin"``), a launch target (``"harness.tools.training:rank"``)
# or the constant head of an f-string naming a module in a package (``f"harness.rows.cases.{name}"``).
_DYNAMIC = re.compile(r"^harness(?:\.[A-Za-z_][A-Za-z_0-9]*)+(?::[A-Za-z_][A-Za-z_0-9]*)?\.?$")


def imports(path: Path, module: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {_known(a.name) or a.name for a in node.names if a.name.startswith("harness")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            for a in node.names:  # `from harness.core import analysis` imports the module harness.core.analysis
                out.add(_known(f"{node.module}.{a.name}") or node.module)
        elif isinstance(node, (ast.Constant, ast.JoinedStr)):  # a module named in a string: importlib, -m, -p, launch
            head = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else node
            text = getattr(head, "value", None)
            if isinstance(text, str) and _DYNAMIC.match(text) and (isinstance(node, ast.Constant) or text.endswith(".")):
                target = _known(text.split(":")[0].rstrip("."))
                if target is not None:
                    out.add(target)
    out.discard(module)
    return {m for m in out if m not in ("harness", *(f"harness.{layer}" for layer in harness.LAYERS))}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p, module_name(p)) for p in sorted((ROOT / "harness").rglob("*.py"))}


def test_every_module_is_in_a_layer_folder():
    folders = sorted(p.name for p in (ROOT / "harness").iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(harness.LAYERS), (f"expected the packages under harness/ to be the layers "
                                               f"{harness.LAYERS}, saw {folders}")
    stray = [m for m in graph() if m not in TOP_LEVEL and m.split(".")[1] not in harness.LAYERS]
    assert stray == [], f"expected every module inside a layer folder, saw at the top: {stray}"


def test_no_upward_edge_between_layers():
    upward = [f"{m} ({harness.LAYERS[min(layer_of(m), len(harness.LAYERS) - 1)]}) imports {d} "
              f"({harness.LAYERS[layer_of(d)]})"
              for m, deps in graph().items() if m != "harness" for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert upward == [], "expected imports to point only down the layers, saw:\n  " + "\n  ".join(upward)


def test_no_import_cycle():
    g = graph()
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == [], f"expected no import cycle in harness/, saw: {cycles}"


def test_the_layer_check_sees_an_upward_edge(tmp_path):
    """The checker itself: a core module importing a row module, statically or by name, is reported."""
    bad = tmp_path / "case.py"
    bad.write_text("import importlib\nfrom harness.core.suite import check_cell\n"
                   "importlib.import_module('harness.rows.cases.tags')\n")
    deps = imports(bad, "harness.core.case")
    assert deps == {"harness.core.suite", "harness.rows.cases.tags"}, deps
    assert layer_of("harness.rows.cases.tags") > layer_of("harness.core.case")
