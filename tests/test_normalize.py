"""Graph normalization: the same program gives byte-identical text whatever its file path, line numbers,
or the process-global ac_graph_id counter."""

import textwrap

import torch

from harness.core.case import MIN_CUT_ONLY, Axes, Case, Cell, Program
from harness.core.normalize import graph_text
from harness.core.run import run_cell

SOURCE = """
import torch

def build(ctx):
    def body(x, y):
        return torch.sigmoid(torch.matmul(x, y))

    def fn(x, y):
        return ctx.checkpoint(body, torch.sin(x), y, use_reentrant=False)

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))
"""


def _builder(filename: str, blank_lines: int):
    """The same source compiled as if it lived in another file at other line numbers."""
    ns = {"Program": Program}
    exec(compile("\n" * blank_lines + textwrap.dedent(SOURCE), filename, "exec"), ns)
    return ns["build"]


def _texts(filename: str, blank_lines: int) -> dict[str, str]:
    case = Case("normalize_probe", _builder(filename, blank_lines), axes=MIN_CUT_ONLY, area="meta")
    run = run_cell(Cell(case, Axes()))
    return run, run.texts


def test_paths_line_numbers_and_ac_graph_ids_do_not_reach_the_text():
    run_a, a = _texts("/home/alice/project/models.py", 0)
    run_b, b = _texts("/tmp/elsewhere/other_name.py", 37)
    assert set(a) == {"dynamo", "joint", "fw", "bw"}, f"expected the four graph kinds, saw {sorted(a)}"
    # The raw graphs do differ: stack traces name the files and lines, ac_graph_id is a global counter.
    raw_a = run_a.graphs["joint"][0].print_readable(print_output=False)
    raw_b = run_b.graphs["joint"][0].print_readable(print_output=False)
    assert "/home/alice/project/models.py" in raw_a and "/tmp/elsewhere/other_name.py" in raw_b, \
        "expected the raw joint graphs to carry their source paths (else this test proves nothing)"
    ids_a = {n.meta.get("ac_graph_id") for n in run_a.graphs["joint"][0].graph.nodes} - {None}
    ids_b = {n.meta.get("ac_graph_id") for n in run_b.graphs["joint"][0].graph.nodes} - {None}
    assert ids_a != ids_b, f"expected different raw ac_graph_ids between runs, saw {ids_a} and {ids_b}"
    for kind in a:
        assert a[kind] == b[kind], f"graph '{kind}' text differs between runs:\n{a[kind]}\n---\n{b[kind]}"
        for leak in ("/home/alice", "/tmp/elsewhere", "File ", "line "):
            assert leak not in a[kind], f"graph '{kind}' text leaks {leak!r}:\n{a[kind]}"
    assert "ac0" in a["joint"] and "PREFER_RECOMPUTE" in a["joint"], \
        f"expected relabelled ac0 and the policy in the joint text, saw:\n{a['joint']}"


def test_text_shows_shapes_dtypes_and_subgraphs():
    def f(x):
        return torch.ops.aten.mm.default(x, x).to(torch.bfloat16)

    gm = torch.fx.experimental.proxy_tensor.make_fx(f)(torch.randn(3, 3))
    text = graph_text(gm)
    assert "aten.mm.default(x_1, x_1)" in text, f"expected the mm call with its argument names, saw:\n{text}"
    assert "f32[3, 3]" in text and "bf16[3, 3]" in text, f"expected shapes with dtypes, saw:\n{text}"
