"""``ac-conformance check`` (harness/user/cli.py): exit 0 on the Llama-style example with the report files (and a
headless-Chromium screenshot of the report), 2 on a wrong model with a repro that exits 1, 1 on graph-only drift from
the goldens, 3 on bad input (each with one clear sentence)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_conformance_plugin import MODEL
from test_nightly import png_pixels

from harness.user import cli, conformance
from harness.core.paths import ROOT

# The plugin tests' model (a compiled program that can be made wrong), plus a factory without trainable parameters
# and one that raises.
WRONG_MODEL = MODEL + '''

def frozen():
    return Net().requires_grad_(False), torch.randn(4, 8)


def broken():
    raise RuntimeError("weights file missing")
'''


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's harness, whatever is installed


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """The Llama-style example through `python -m harness check` in a subprocess (what the console script runs)."""
    out = tmp_path_factory.mktemp("llama")
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "examples/llama_block.py:build",
                           "--policy", "selective-op", "--policy", "every_other_mm", "--report", str(out / "report")],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    return out, proc


def test_llama_example_is_clean_and_writes_the_report(llama_run):
    out, proc = llama_run
    assert proc.returncode == 0, f"expected exit 0, saw {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "PASS  build_selective_op-min_cut-aot_eager-cpu-float32" in proc.stdout
    assert "PASS  build_every_other_mm-min_cut-aot_eager-cpu-float32" in proc.stdout
    html = (out / "report" / "report.html").read_text()
    for part in ("exit 0 (clean)", "<svg", "saved tensor", "recomputed in the backward", "bw graph", "no AC"):
        assert part in html, f"expected {part!r} in report.html"
    doc = json.loads((out / "report" / "report.json").read_text())
    assert doc["exit"] == 0 and {c["verdict"] for c in doc["cells"]} == {"pass"} and len(doc["cells"]) == 2
    assert all(c["figures"]["peak_bytes"] and c["figures"]["activation_bytes"] is not None for c in doc["cells"])


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="headless Chromium is not installed (/usr/bin/chromium; `apt-get install -y chromium`)")
def test_report_renders_in_headless_chromium(llama_run):
    out, proc = llama_run
    assert proc.returncode == 0, proc.stdout[-2000:]
    shot = out / "report.png"
    run = subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--screenshot={shot}", "--window-size=1280,1400", (out / "report" / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"Chromium wrote no screenshot (rc={run.returncode}):\n{run.stderr[-2000:]}"
    w, h, raw = png_pixels(shot)
    assert (w, h) == (1280, 1400)
    rows = [raw[r * (len(raw) // h) + 1:(r + 1) * (len(raw) // h)] for r in range(0, h, 40)]
    distinct = {bytes(row[j:j + 3]) for row in rows for j in range(0, len(row) - 2, 12)}
    assert len(distinct) > 8, f"the screenshot looks blank ({len(distinct)} distinct sampled pixel values)"
    print(f"report screenshot: {shot}")


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "usermodel.py"
    path.write_text(WRONG_MODEL)
    return path


def test_wrong_model_exits_2_with_a_repro_that_reproduces(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("USER_MODEL_WRONG", "1")
    report = tmp_path / "report"
    rc = cli.main(["check", f"{model}:build", "--policy", "full", "--report", str(report), "--repro"])
    out = capsys.readouterr().out
    assert rc == 2, out[-3000:]
    assert "WRONG build_full-min_cut-aot_eager-cpu-float32" in out and "[numerics]" in out
    assert "exit 2" in (report / "report.html").read_text()
    repro = report / "repro_build_full-min_cut-aot_eager-cpu-float32.py"
    assert repro.exists(), sorted(p.name for p in report.iterdir())
    proc = subprocess.run([sys.executable, str(repro)], env={**env(), "USER_MODEL_WRONG": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1 and "numerics mismatch" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_graph_drift_exits_1(model, tmp_path, capsys):
    goldens = tmp_path / "goldens"
    args = ["check", f"{model}:build", "--policy", "full", "--report", str(tmp_path / "r"), "--goldens", str(goldens)]
    assert cli.main(args + ["--update-goldens"]) == 0, capsys.readouterr().out[-3000:]
    fw = goldens / "cpu" / "build_full" / "build_full-min_cut-aot_eager-cpu-float32" / "fw.txt"
    assert fw.exists()
    assert cli.main(args) == 0, capsys.readouterr().out[-3000:]
    fw.write_text(fw.read_text().replace("aten.relu.default", "aten.tanh.default"))
    rc = cli.main(args)
    out = capsys.readouterr().out
    assert rc == 1 and "graph 'fw' drifted" in out and "DRIFT build_full" in out, out[-3000:]


@pytest.mark.parametrize("target, extra, message", [
    ("missing.py:build", (), "model file missing.py does not exist"),
    ("{model}:buidl", (), "has no factory named 'buidl'; functions defined there: ['broken', 'build', 'frozen']"),
    ("{model}:broken", (), "factory broken() raised RuntimeError: weights file missing"),
    ("{model}:frozen", (), "the model has no parameters that require grad"),
    ("{model}:build", ("--policy", "selective-opp"), "unknown AC policy 'selective-opp' (did you mean 'selective_op'?)"),
    ("{model}:build", ("--policy", "selective_layer:every=0"), "every must be >= 1"),
    ("{model}:build", ("--backend", "tvm"), "unknown backend 'tvm'"),
])
def test_bad_input_exits_3_with_one_sentence(model, tmp_path, capsys, target, extra, message):
    rc = cli.main(["check", target.format(model=model), *extra, "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 3 and message in err, err
    assert not (tmp_path / "r").exists(), "bad input writes no report"


def test_backend_that_cannot_compile_here_exits_3(model, tmp_path, capsys, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    conformance.backend_problem.cache_clear()
    try:
        with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False}):
            rc = cli.main(["check", f"{model}:build", "--backend", "inductor", "--report", str(tmp_path / "r")])
    finally:
        conformance.backend_problem.cache_clear()
    err = capsys.readouterr().err
    assert rc == 3 and "backend inductor cannot compile on cpu on this machine" in err, err
