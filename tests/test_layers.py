"""The harness's import graph has no cycle and no upward edge between its named layers (README "Layout").

Every ``import harness.X`` / ``from harness.X import ...`` counts, module-level or inside a function; dynamic imports
(importlib, as harness.case loads the area modules) do not."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.paths import ROOT

# Layer of each module (a package's modules share its layer unless listed); imports may only point down (or sideways
# within a layer, as long as there is no cycle).
LAYERS = {
    0: ("harness.paths", "harness.normalize", "harness.torch_compat"),  # base: no harness imports
    1: ("harness.case", "harness.cases", "harness.policies", "harness.models", "harness.scenarios", "harness.fuzz.program",
        "harness.fuzz.strategies", "harness.fuzz.repro"),  # declaration (harness.cases: the package, empty)
    2: ("harness.collect",),  # collection: cells, matrix, requirements
    3: ("harness.pipeline",),  # compile and record
    4: ("harness.analysis", "harness.baselines", "harness.peak", "harness.knapsack"),  # figures: the only source of them
    5: ("harness.checks", "harness.invariants", "harness.known_failures"),  # verdicts
    6: ("harness.cases.*", "harness.fuzz.oracles"),  # rows: case modules (they use verdict helpers in checks)
    7: ("harness.golden", "harness.review"),  # goldens
    8: ("harness.suite",),  # one cell, checked three ways
    9: ("harness.plugin", "harness.nightly", "harness.nightly_plugin", "harness.reports", "harness.memory_report",
        "harness.coverage", "harness.fuzz", "harness.contract", "harness.distributed", "harness.realsize", "harness.training",
        "harness.cli", "harness.conformance", "harness.compat", "harness.findings", "harness.__main__",
        "harness.reports"),  # front ends
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, length = None, -1
    for layer, names in LAYERS.items():
        for name in names:
            if name.endswith(".*"):
                hit = module.startswith(name[:-1]) and module != name[:-2]
            else:
                hit = module == name or module.startswith(name + ".")
            if hit and len(name) > length:
                best, length = layer, len(name)
    if best is None:
        raise AssertionError(f"module {module} has no layer: add it to tests/test_layers.py LAYERS (and the README)")
    return best


def imports(path: Path, module: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("harness")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            for a in node.names:  # `from harness import analysis` imports the module harness.analysis
                sub = f"{node.module}.{a.name}"
                out.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                        or (ROOT / Path(*sub.split(".")) / "__init__.py").exists() else node.module)
    out.discard(module)
    return {m for m in out if m != "harness"}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p, module_name(p)) for p in sorted((ROOT / "harness").rglob("*.py"))}


def test_no_upward_edge_between_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
              for m, deps in graph().items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
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
    """The checker itself: a declaration module importing the suite is reported."""
    bad = tmp_path / "case.py"
    bad.write_text("from harness.suite import check_cell\n")
    deps = imports(bad, "harness.case")
    assert deps == {"harness.suite"} and layer_of("harness.suite") > layer_of("harness.case"), deps
