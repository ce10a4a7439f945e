"""Saved activation memory of real transformer blocks against Korthikanti et al. (2022), and at real sizes.

The paper's per-layer bytes for a GPT block (16-bit activations, 1-byte dropout masks, s·b·h units):
no recompute ``34 + 5·a·s/h``, selective recompute of the attention core ``34``, full recompute ``2``.
We build that block (harness/rows/models.py GPTBlock) and measure eager (saved_tensors_hooks) and compiled (the backward
graph's saved tensors) bytes.  Every difference is accounted for exactly:

* ``8·s·b`` bytes (eager and compiled, none/selective): the two LayerNorms save their mean and rstd ([s, b, 1] each,
  bf16 on CPU); the paper ignores these statistics;
* eager only, CPU: ``F.dropout`` in training is not ``native_dropout`` on CPU but ``input * bernoulli_(1-p)/(1-p)``,
  so each mask is a bf16 tensor (2 bytes, not 1): ``+a·s²·b`` for the attention dropout (none only: selective
  recomputes it) and ``+2·s·b·h`` for the two hidden dropouts; compiled graphs use ``native_dropout`` (bool mask);
* compiled selective and full also save generator states to replay dropout in the recomputation (RNG state bytes,
  reported apart; no activation counterpart in the paper);
* the layer input (the first LayerNorm's input, counted by the paper) is a graph input of the compiled block:
  it is counted here as the layer input.

The min-cut partitioner recomputes nothing cheap in this block on this torch (aot_eager): the compiled figures
are the paper's plus the LayerNorm statistics.
"""

from __future__ import annotations

import pytest
import torch

from harness.rows import models
from harness.core import policies
from harness.tools import realsize as R


def _deltas(s, b, h, a):
    ln_stats = 8 * s * b
    return {
        ("eager", "none"): ln_stats + a * s * s * b + 2 * s * b * h,
        ("eager", "selective"): ln_stats + 2 * s * b * h,
        ("eager", "full"): 0,
        ("compiled", "none"): ln_stats,
        ("compiled", "selective"): ln_stats,
        ("compiled", "full"): 0,
    }


def _check_rows(rows, s, b, h, a, eager=True):
    d = _deltas(s, b, h, a)
    problems = []
    for r in rows:
        for kind in ("eager", "compiled") if eager else ("compiled",):
            seen = r[f"{kind}_bytes"]
            want = r["paper_bytes"] + d[(kind, r["mode"])]
            if seen != want:
                items = r[f"{kind}_items"]
                problems.append(f"{kind} {r['mode']}: expected paper {r['paper_bytes']} + explained "
                                f"{d[(kind, r['mode'])]} = {want} bytes; seen {seen} (saved: {items})")
    return problems


def test_korthikanti_gpt_block_small(record):
    cfg, s, b = models.GPTConfig(h=64, a=4), 32, 2
    rows = R.korthikanti_rows(cfg, s, b, eager=True)
    record("korthikanti", [{k: v for k, v in r.items() if not k.endswith("items")} for r in rows])
    problems = _check_rows(rows, s, b, cfg.h, cfg.a)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_korthikanti_gpt3_size_fake(record):
    """GPT-3 175B layer sizes (h=12288, a=96, s=2048, b=1) under FakeTensorMode: nothing allocated."""
    cfg, s, b = models.GPTConfig(h=12288, a=96), 2048, 1
    with R.fake_cpu():
        rows = R.korthikanti_rows(cfg, s, b, eager=False)
    record("korthikanti_gpt3", [{k: v for k, v in r.items() if not k.endswith("items")} for r in rows])
    problems = _check_rows(rows, s, b, cfg.h, cfg.a, eager=False)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_llama3_8b_policy_table(record):
    """The per-policy table at Llama-3-8B layer size, seq 4096, bf16, without allocating; ordering as promised."""
    import dataclasses

    cfg = dataclasses.replace(models.LLAMA3_8B, max_seq=4096)
    figures = {}
    for name, params in R.TABLE_POLICIES:
        p = policies.get(name, **params)
        with R.fake_cpu():
            figures[p.id] = R.llama_policy_saved(cfg, 4096, 1, p, n_layers=2, device="cpu").total / 2 / R.MB
    record("llama3_8b_MB_per_layer", figures)
    order = ["full", "every_other_mm", "selective_op", "none"]
    seen = [figures[k] for k in order]
    assert seen == sorted(seen) and len(set(seen)) == 4, f"expected MB/layer strictly increasing along {order}; seen {seen}"
    assert figures["full"] < figures["selective_layer2"] < figures["none"], (
        f"expected full < selective_layer2 < none; seen {figures}")
    assert figures["memory_budget0.5"] < figures["none"], f"expected memory_budget0.5 < none; seen {figures}"
