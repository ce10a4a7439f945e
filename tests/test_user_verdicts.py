"""The user path's verdicts on small synthetic models (issues 26 and 31): inputs as a dict or (args, kwargs) and
dict outputs are accepted; bad input is exit 3 with one clear line (no blocks, an unknown op, a model that fails
eagerly, double AC, own without AC); a mismatch compiling without AC shows too is a backend difference (exit 4, both
errors side by side); a policy whose blocks the forward never calls had no effect (exit 5, saying why); a message
longer than the limit keeps every check's first line and says it was cut; policy parameters make the cell id."""

from __future__ import annotations

import json

import pytest

from harness.core import attribution
from harness.core.case import Axes, Cell
from harness.user import cli, conformance
from test_conformance_plugin import MODEL as BASE_MODEL

MODEL = BASE_MODEL + '''
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper


class DictNet(Net):  # keyword input, dict output with a non-floating entry
    def forward(self, x, scale=1.0):
        return {"hidden": super().forward(x) * scale, "count": torch.tensor(3)}


class OneBlock(Net):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block()])


class Flat(nn.Module):  # no container of blocks anywhere
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class Gathered(nn.Module):  # .layers is a list the user built; the forward calls the blocks through .stages
    def __init__(self):
        super().__init__()
        self.stages = nn.Sequential(Block(), Block())
        self.layers = nn.ModuleList(list(self.stages))

    def forward(self, x):
        return self.stages(x)


def build_dict():
    return DictNet(), {"x": torch.randn(4, 8)}


def build_args_kwargs():
    return DictNet(), ((torch.randn(4, 8),), {"scale": 2.0})


def build_flat():
    return Flat(), torch.randn(4, 8)


def build_gathered():
    return Gathered(), torch.randn(4, 8)


def build_one_block():
    return OneBlock(), torch.randn(4, 8)


def build_fails():
    class Broken(Net):
        def forward(self, x):  # noqa: ARG002
            raise NotImplementedError("no CPU backward for this attention")
    return Broken(), torch.randn(4, 8)


def build_wrapped():
    net = Net()
    for i, block in enumerate(net.layers):
        net.layers[i] = checkpoint_wrapper(block)
    return net, torch.randn(4, 8)


def build_ac(ac: bool = False):
    return (build_wrapped() if ac else (Net(), torch.randn(4, 8)))


def build_sequential():
    return nn.Sequential(*(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(4))), torch.randn(4, 8)


def build_bad_inputs():
    return DictNet(), {1: torch.randn(4, 8)}
'''


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "usermodels.py"
    path.write_text(MODEL)
    return path


def check(model, target, *extra, tmp_path, capsys):
    rc = cli.main(["check", f"{model}:{target}", *extra, "--report", str(tmp_path / "r")])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dict_inputs_and_dict_outputs_pass(model, tmp_path, capsys):
    rc, out, err = check(model, "build_dict", tmp_path=tmp_path, capsys=capsys)
    assert rc == 0, out[-3000:] + err[-2000:]
    assert "wraps 2 of 2 block(s) under layers (Block): layers.0, layers.1" in out, out[-2000:]
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["cells"][0]["policy"]["outputs"] == ["['hidden']"], doc["cells"][0]["policy"]
    assert "no AC" in out and "peak" in out, "each AC figure is shown beside the no-AC one"
    assert out.count("build_dict_full-min_cut-aot_eager-cpu-float32") == 1, f"each cell is listed once:\n{out}"


def test_args_kwargs_inputs_pass(model, tmp_path, capsys):
    rc, out, err = check(model, "build_args_kwargs", tmp_path=tmp_path, capsys=capsys)
    assert rc == 0, out[-3000:] + err[-2000:]


@pytest.mark.parametrize("target, extra, message", [
    ("build_flat", (), "found no blocks to checkpoint in Flat"),
    ("build_dict", ("--blocks", "layerz"), "--blocks layerz: the model has no submodule 'layerz'"),
    ("build_dict", ("--policy", "selective_op:save=aten.nosuchop.default"),
     "save list names no op of torch"),
    ("build_fails", (), "cannot run: the model fails in eager without AC on cpu (NotImplementedError: no CPU backward"),
    ("build_wrapped", (), "the model already checkpoints itself (2 checkpoint wrapper(s) around Block)"),
    ("build_wrapped", ("--policy", "hf"), "the model already checkpoints itself"),
    ("build_dict", ("--policy", "own"), "policy own: the model build_dict() returns does not checkpoint itself"),
    ("build_bad_inputs", (), "dict inputs are keyword arguments, so their keys must be strings"),
    ("build_dict", ("--tolerance", "1e-4"), "--tolerance 1e-4: expected RTOL,ATOL"),
])
def test_bad_input_exits_3_with_one_line(model, tmp_path, capsys, target, extra, message):
    rc, out, err = check(model, target, *extra, tmp_path=tmp_path, capsys=capsys)
    assert rc == 3 and message in err, f"expected exit 3 and {message!r}; saw exit {rc}:\n{err[-2000:]}"
    assert err.startswith("ac-conformance: bad input: "), err[:300]


def test_own_mechanism_is_checked_against_the_model_without_ac(model, tmp_path, capsys):
    rc, out, err = check(model, "build_wrapped", "--policy", "own", tmp_path=tmp_path, capsys=capsys)
    assert rc == 0, out[-3000:] + err[-2000:]
    cell = json.loads((tmp_path / "r" / "report.json").read_text())["cells"][0]
    assert cell["figures"]["activation_bytes"] < cell["no_ac"]["activation_bytes"], cell
    assert cell["figures"]["bw_flops"] > cell["no_ac"]["bw_flops"], cell
    rc, out, err = check(model, "build_ac", "--policy", "own", tmp_path=tmp_path, capsys=capsys)
    assert rc == 0 and "what build_ac(ac=True) checkpoints" in out, out[-3000:] + err[-2000:]


def test_checkpoint_sequential_and_a_sequential_of_blocks(model, tmp_path, capsys):
    """Dynamo marks ``checkpoint_sequential`` as not to be traced (torch 2.13): under fullgraph that is the run's
    failure, named; the same blocks wrapped one by one compile and save less than without AC."""
    rc, out, err = check(model, "build_sequential", "--policy", "checkpoint_sequential:segments=2", tmp_path=tmp_path,
                         capsys=capsys)
    assert rc == 2 and "[run]" in out and "`checkpoint_sequential`" in out and "should not be traced" in out, out
    rc, out, err = check(model, "build_sequential", "--policy", "full", tmp_path=tmp_path, capsys=capsys)
    assert "wraps 4 of 4 block(s) under (the model) (Sequential): 0, 1, 2, 3" in out, out
    assert rc == 0, out[-3000:] + err[-2000:]
    cell = json.loads((tmp_path / "r" / "report.json").read_text())["cells"][0]
    assert cell["figures"]["activation_bytes"] < cell["no_ac"]["activation_bytes"], cell


def test_backend_difference_exits_4_with_both_errors(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("USER_MODEL_WRONG", "backend")
    rc, out, err = check(model, "build_dict", "--tolerance", "1.3e-6,1e-5", tmp_path=tmp_path, capsys=capsys)
    assert rc == 4, out[-3000:] + err[-2000:]
    assert "BACKEND build_dict_full" in out and "[backend_difference]" in out, out[-3000:]
    assert "compiled with AC    vs eager without AC: max abs error" in out, out[-3000:]
    assert "compiled without AC vs eager without AC: max abs error" in out, out[-3000:]


def test_blocks_never_called_is_no_effect(model, tmp_path, capsys):
    rc, out, err = check(model, "build_gathered", tmp_path=tmp_path, capsys=capsys)
    assert rc == 5, out[-3000:] + err[-2000:]
    assert "[ac_effect]" in out and "AC had no effect: policy full" in out, out[-3000:]
    assert "were never called by the model's forward" in out, out[-3000:]
    assert "exit 5: AC had no effect" in out


def test_a_policy_that_wraps_no_block_warns(model, tmp_path, capsys):
    rc, out, err = check(model, "build_one_block", "--policy", "selective_layer:every=2", tmp_path=tmp_path,
                         capsys=capsys)
    assert "warning: policy selective_layer2 wraps none of the 1 block(s)" in out, out[-3000:]
    assert rc == 0, out[-3000:]


def test_a_save_list_that_saves_nothing_warns(model, tmp_path, capsys):
    rc, out, err = check(model, "build_dict", "--policy", "selective_op:save=aten.addmm.default", tmp_path=tmp_path,
                         capsys=capsys)
    assert "warning: the selective policy saved none of its ops" in out, out[-3000:]
    html = (tmp_path / "r" / "report.html").read_text()
    assert "&#9888;" in html and "saved none of its ops" in html


def test_policy_parameters_are_part_of_the_cell_id(model, tmp_path, capsys):
    rc, out, err = check(model, "build_dict", "--policy", "selective_op:save=aten.mm.default",
                         "--policy", "selective_op:save=aten.mm.default+aten.relu.default", tmp_path=tmp_path,
                         capsys=capsys)
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    ids = [c["cell"] for c in doc["cells"]]
    assert len(set(ids)) == 2, ids
    assert "aten.relu.default" in doc["cells"][1]["policy"]["policy"], doc["cells"][1]["policy"]


def test_a_long_message_keeps_every_first_line_and_says_it_was_cut():
    from harness.core.case import Case

    cell = Cell(Case("c", lambda ctx: None), Axes())
    failures = [(f"check{i}", f"first line of check {i}\n" + "detail " * 2000) for i in range(3)]
    r = conformance.CellResult(cell, "wrong", failures, "\n".join(m for _, m in failures))
    text = conformance.first_lines(r, limit=1000, where="REPORT")
    for i in range(3):
        assert f"[check{i}] first line of check {i}" in text, text[:2000]
    assert "cut:" in text and "the whole message is in REPORT" in text, text[-500:]
    short = conformance.CellResult(cell, "wrong", [("numerics", "x: one line")], "x: one line")
    assert "cut:" not in conformance.first_lines(short, limit=1000)
    fits = conformance.CellResult(cell, "wrong", failures[:1], failures[0][1][:400])
    shown = conformance.first_lines(fits, limit=1000)
    assert shown.count("first line of check 0") == 1 and "cut:" not in shown, \
        f"expected a message within the limit shown once and uncut, saw:\n{shown}"


def test_json_failures_keep_their_first_line_and_mark_a_cut(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "JSON_MESSAGE_LIMIT", 50)
    monkeypatch.setenv("USER_MODEL_WRONG", "backend")
    check(model, "build_dict", tmp_path=tmp_path, capsys=capsys)
    fail = json.loads((tmp_path / "r" / "report.json").read_text())["cells"][0]["failures"][0]
    assert fail["truncated"] and "[... cut:" in fail["message"] and "report.html" in fail["message"], fail
    assert fail["first_line"].startswith("build_dict_full-min_cut-aot_eager-cpu-float32: compile/backend difference")


def test_suite_rows_without_the_check_are_not_judged():
    assert attribution.EFFECT_STAGE == "ac_effect"
    from harness.rows.cases import all_cases

    flagged = [c.name for c in all_cases() if getattr(c.expect.check, "stage", "") == attribution.EFFECT_STAGE
               and c.area != "real_models"]
    assert flagged == [], f"only the user path and the real-model rows declare the no-effect check; saw {flagged}"
