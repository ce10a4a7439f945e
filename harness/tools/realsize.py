"""Saved activation memory at real sizes without allocating, and Korthikanti et al. (2022) as a reference.

* :func:`compiled_saved` compiles a model through the recording aot_eager backend (min-cut partitioner) and runs one
  step on ``meta`` tensors: every shape is real, nothing is allocated; the backward graphs' saved tensors are read
  with ``harness.core.analysis.saved_tensors``.  SDPA on meta picks the math backend, so real-size Llama figures are
  taken under ``FakeTensorMode`` on the CPU device instead (:func:`fake_cpu`), where SDPA dispatches like CPU eager
  (``_scaled_dot_product_flash_attention_for_cpu``: saves out and logsumexp, not the s×s probabilities).
* :func:`eager_saved` measures eager saved tensors with ``saved_tensors_hooks`` (deduplicated by storage, parameters
  excluded); AC regions use the reentrant checkpoint there, which saves its inputs through ``save_for_backward``,
  so the hooks see exactly what is kept.
* :func:`korthikanti` gives the paper's per-layer bytes (16-bit activations, 1-byte dropout masks):
  no recompute ``s·b·h·(34 + 5·a·s/h)``, selective (attention core) ``34·s·b·h``, full ``2·s·b·h``.

``python -m harness.tools.realsize`` prints the per-policy table and the Korthikanti comparison (markdown).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys

import torch
import torch.nn as nn

from harness.core import analysis, policies
from harness.rows import models
from harness.tools import training

MB = 2**20


def korthikanti(s: int, b: int, h: int, a: int) -> dict[str, int]:
    return {"none": s * b * h * 34 + 5 * a * s * s * b, "selective": 34 * s * b * h, "full": 2 * s * b * h}


# --------------------------------------------------------------------------------------------------------------
# eager


class _EagerSaved:
    """saved_tensors_hooks that record each saved tensor once per storage; parameters are not activations."""

    def __init__(self, params):
        self.params = {p.untyped_storage()._cdata for p in params}
        self.storages: dict[int, int] = {}
        self.items: list[tuple[str, int]] = []

    def pack(self, t):
        st = t.untyped_storage()
        key = st._cdata
        if key not in self.params and key not in self.storages:
            self.storages[key] = st.nbytes()
            self.items.append((f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}", st.nbytes()))
        return t

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def _reentrant(fn, *args):
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=True)


def _non_reentrant(fn, *args):
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)


@contextlib.contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def gpt_model(cfg: models.GPTConfig, mode: str, reentrant: bool, dtype=torch.bfloat16, device="cpu") -> nn.Module:
    """One Korthikanti GPT block with no / selective (attention core) / full recompute."""
    ck = _reentrant if reentrant else _non_reentrant
    torch.manual_seed(0)
    with torch.device(device), _default_dtype(dtype):  # not .to(dtype): fake parameters cannot be swapped
        block = models.GPTBlock(cfg, attention_checkpoint=ck if mode == "selective" else None)
    if mode == "full":
        inner = block

        class Full(nn.Module):
            def __init__(self):
                super().__init__()
                self.block = inner

            def forward(self, x):
                return ck(self.block, x)

        return Full()
    return block


def eager_saved(model: nn.Module, x: torch.Tensor) -> tuple[int, list]:
    rec = _EagerSaved(model.parameters())
    x = x.detach().requires_grad_(True)  # the layer input is an activation of the previous layer
    with torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
        model(x)
    return rec.bytes, rec.items


# --------------------------------------------------------------------------------------------------------------
# compiled


@dataclasses.dataclass
class CompiledSaved:
    activation: int  # saved activation bytes (not graph inputs)
    layer_input: int  # bytes of the saved model input (the block input: an activation of the previous layer)
    rng_state: int
    dynamo_graphs: int
    saved: list  # (name, type, bytes, kind)

    @property
    def total(self) -> int:
        return self.activation + self.layer_input


def compiled_saved(model: nn.Module, x: torch.Tensor, policy: policies.Policy | None = None,
                   partition: str = "min_cut") -> CompiledSaved:
    """Compile ``model`` whole through the recording backend and run one forward/backward on ``x``'s device."""
    rec = training.recorder(partition)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=rec)
    ctx = policy.context() if policy is not None else contextlib.nullcontext()
    x = x.detach().requires_grad_(True)
    with ctx:
        out = compiled(x)
        out.float().pow(2).sum().backward()
    run = training.recorded(rec, "realsize")
    a = analysis.of(run)
    saved = a.saved if a is not None else []
    xshape = f"{list(x.shape)}"
    # the model input is the only saved graph input with x's shape (parameters are 1-D or 2-D)
    layer_input = sum(s.bytes for s in saved if s.kind in ("input", "input_activation") and s.type.endswith(xshape))
    return CompiledSaved(activation=sum(s.bytes for s in saved if s.kind == "activation"), layer_input=layer_input,
                         rng_state=sum(s.bytes for s in saved if s.kind == "rng_state"),
                         dynamo_graphs=run.counters["graphs"], saved=[(s.name, s.type, s.bytes, s.kind) for s in saved])


@contextlib.contextmanager
def fake_cpu():
    """FakeTensorMode on the CPU device: real shapes and CPU dispatch (SDPA backend choice), no storage."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    # allow_non_fake_inputs: the generator state a checkpoint saves to replay randomness is a real tensor
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def llama_policy_saved(cfg: models.LlamaConfig, seq: int, batch: int, policy: policies.Policy, n_layers: int = 2,
                       dtype=torch.bfloat16, device: str = "meta", moe: bool = False) -> CompiledSaved:
    torch.manual_seed(0)
    with torch.device(device), _default_dtype(dtype):  # not .to(dtype): fake parameters cannot be swapped
        model = models.llama(cfg, n_layers, moe=moe)
        x = torch.randn(batch, seq, cfg.dim, dtype=dtype)
    policy.apply(model, via="wrapper")
    return compiled_saved(model, x, policy)


def gpt_compiled_saved(cfg: models.GPTConfig, s: int, b: int, mode: str, device="cpu", dtype=torch.bfloat16):
    model = gpt_model(cfg, mode, reentrant=False, dtype=dtype, device=device)
    model.train()
    with torch.device(device):
        x = torch.randn(s, b, cfg.h, dtype=dtype)
    return compiled_saved(model, x)


# --------------------------------------------------------------------------------------------------------------
# report

TABLE_POLICIES = (("none", {}), ("full", {}), ("selective_op", {}), ("every_other_mm", {}),
                  ("selective_layer", {"every": 2}), ("memory_budget", {"budget": 0.5}))


def policy_table(cfg: models.LlamaConfig, seq: int, batch: int, n_layers: int = 2, device: str = "meta",
                 moe: bool = False) -> list[dict]:
    rows = []
    for name, params in TABLE_POLICIES:
        p = policies.get(name, **params)
        r = llama_policy_saved(cfg, seq, batch, p, n_layers=n_layers, device=device, moe=moe)
        rows.append({"policy": p.id, "activation_MB_per_layer": r.activation / n_layers / MB,
                     "with_layer_input_MB_per_layer": r.total / n_layers / MB, "dynamo_graphs": r.dynamo_graphs})
    return rows


def korthikanti_rows(cfg: models.GPTConfig, s: int, b: int, eager: bool = True) -> list[dict]:
    ref = korthikanti(s, b, cfg.h, cfg.a)
    rows = []
    for mode in ("none", "selective", "full"):
        row = {"mode": mode, "paper_bytes": ref[mode]}
        if eager:
            torch.manual_seed(1)
            x = torch.randn(s, b, cfg.h, dtype=torch.bfloat16)
            m = gpt_model(cfg, mode, reentrant=True)
            m.train()
            row["eager_bytes"], row["eager_items"] = eager_saved(m, x)
        c = gpt_compiled_saved(cfg, s, b, mode)
        row["compiled_bytes"] = c.total
        row["compiled_items"] = c.saved
        rows.append(row)
    return rows


def korthikanti_table(cfg: models.GPTConfig, s: int, b: int, eager: bool, fake: bool) -> str:
    sbh = s * b * cfg.h
    ctx = fake_cpu() if fake else contextlib.nullcontext()
    with ctx:
        rows = korthikanti_rows(cfg, s, b, eager=eager)
    lines = [f"### GPT block h={cfg.h}, a={cfg.a}, s={s}, b={b}, bf16, dropout {cfg.dropout} "
             f"({'FakeTensorMode, CPU dispatch' if fake else 'real CPU tensors'}); bytes and units of s·b·h\n",
             "| recompute | paper bytes (s·b·h) | eager bytes (s·b·h) | compiled bytes (s·b·h) | compiled RNG-state bytes |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        e = f"{r['eager_bytes']} ({r['eager_bytes'] / sbh:.4g})" if "eager_bytes" in r else "-"
        rng = sum(i[2] for i in r["compiled_items"] if i[3] == "rng_state")
        lines.append(f"| {r['mode']} | {r['paper_bytes']} ({r['paper_bytes'] / sbh:.4g}) | {e} | "
                     f"{r['compiled_bytes']} ({r['compiled_bytes'] / sbh:.4g}) | {rng} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--skip-llama", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_llama:
        print(f"## Llama-3-8B layer (d=4096, 32 heads, 8 KV heads, FFN 14336), seq {args.seq}, batch {args.batch}, "
              "bf16; compiled (aot_eager, min-cut) under FakeTensorMode (CPU dispatch: SDPA flash-for-CPU); "
              "MB per layer (2-layer model / 2)\n", flush=True)
        print("| policy | saved activations MB/layer | + layer input MB/layer | dynamo graphs |\n|---|---:|---:|---:|", flush=True)
        cfg = dataclasses.replace(models.LLAMA3_8B, max_seq=args.seq)
        for name, params in TABLE_POLICIES:
            p = policies.get(name, **params)
            with fake_cpu():
                r = llama_policy_saved(cfg, args.seq, args.batch, p, n_layers=2, device="cpu")
            print(f"| {p.id} | {r.activation / 2 / MB:.1f} | {r.total / 2 / MB:.1f} | {r.dynamo_graphs} |", flush=True)
        print()
    print("## Korthikanti et al. (2022), per-layer activation memory\n", flush=True)
    print(korthikanti_table(models.GPTConfig(h=64, a=4), 32, 2, eager=True, fake=False), flush=True)
    print()
    print(korthikanti_table(models.GPTConfig(h=12288, a=96), 2048, 1, eager=False, fake=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
