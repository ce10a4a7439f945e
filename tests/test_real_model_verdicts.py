"""The user path's verdicts on real library models (the models dependency group; `make models` runs this file with
the real-model suite): HF's own gradient checkpointing is checked against the model without it (issue 26), and T5's
blocks gathered into a `.layers` the forward never calls is "AC had no effect" (issue 31), not a pass."""

from __future__ import annotations

import importlib.util
import json

import pytest

from harness.core.paths import ROOT
from harness.user import cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                reason="needs the models dependency group (make models)")
MODELS = ROOT / "harness" / "rows" / "real_models.py"


def _check(tmp_path, capsys, target, *extra):
    rc = cli.main(["check", f"{MODELS}:{target}", *extra, "--report", str(tmp_path / "r")])
    return rc, capsys.readouterr().out, json.loads((tmp_path / "r" / "report.json").read_text())


def test_hf_gradient_checkpointing_is_checked_against_the_model_without_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, doc = _check(tmp_path, capsys, "hf_gpt2_gc", "--policy", "own")
    assert rc == 0, out[-3000:]
    cell = doc["cells"][0]
    assert "HF gradient checkpointing on" in cell["policy"]["wrapped"], cell["policy"]
    f, n = cell["figures"], cell["no_ac"]
    assert f["activation_bytes"] < n["activation_bytes"], f"expected fewer saved bytes than without AC: {f} vs {n}"
    assert f["bw_flops"] > n["bw_flops"] and f["recompute_flops"] > 0, f"expected recomputation: {f} vs {n}"


def test_t5_blocks_the_forward_never_calls_had_no_effect(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, doc = _check(tmp_path, capsys, "hf_t5_gathered_layers", "--policy", "full")
    assert rc == 5, out[-3000:]
    assert "were never called by the model's forward" in out and "[ac_effect]" in out, out[-3000:]
