"""Transformer blocks as training stacks use them, small by default, real-size by configuration.

* :class:`LlamaBlock` (torchtitan's Llama 3 layer): RMSNorm, rotary embedding, grouped-query attention through
  ``F.scaled_dot_product_attention`` (causal), SwiGLU feed-forward; no biases.  Module names follow torchtitan
  (``attention.wq/wk/wv/wo``, ``feed_forward.w1/w2/w3``, ``attention_norm``, ``ffn_norm``) so its tensor-parallel plan
  applies unchanged (:func:`llama_tp_plan`).
* :class:`MoEBlock`: the same attention, then a mixture of experts: a linear router, softmax, top-k, and each expert
  (a SwiGLU) run on the tokens routed to it, found with ``nonzero``: token counts are data-dependent.
* :class:`GPTBlock`: the GPT layer of Korthikanti et al., "Reducing Activation Recomputation in Large Transformer
  Models" (2022), Fig. 2 / Sec. 4.1: LayerNorm, QKV linear, Q·Kᵀ, softmax, dropout, attention over V, output linear,
  dropout, residual; LayerNorm, linear h→4h, GeLU, linear 4h→h, dropout, residual.  Layout [s, b, h].  The attention
  core (Q·Kᵀ → softmax → dropout → ·V) is one function, so "selective recompute" can checkpoint exactly it.

A :class:`Stack` holds blocks in ``.layers`` (what :mod:`harness.core.policies` wraps).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    dim: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 160
    max_seq: int = 64
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    # MoE
    n_experts: int = 4
    top_k: int = 2
    expert_dim: int = 64

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# Llama-3-8B: 32 layers; d=4096, 32 heads, 8 KV heads, FFN 14336 (params.json of Meta-Llama-3-8B)
LLAMA3_8B = LlamaConfig(dim=4096, n_heads=32, n_kv_heads=8, ffn_dim=14336, max_seq=8192)


def rope_tables(cfg: LlamaConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim))
    t = torch.arange(cfg.max_seq, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv)  # [seq, hd/2]
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [b, s, heads, hd]; pairs (2i, 2i+1) rotated by position (the complex form of torchtitan, in reals)."""
    s = x.shape[1]
    cos, sin = cos[:s, None, :], sin[:s, None, :]
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return out.type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x):
        b, s, _ = x.shape
        hd = self.cfg.head_dim
        # -1 heads: under tensor parallel each rank holds n_heads / tp of them (torchtitan does the same)
        q = self.wq(x).view(b, s, -1, hd)
        k = self.wk(x).view(b, s, -1, hd)
        v = self.wv(x).view(b, s, -1, hd)
        q, k = apply_rope(q, self.rope_cos, self.rope_sin), apply_rope(k, self.rope_cos, self.rope_sin)
        n_rep = self.cfg.n_heads // self.cfg.n_kv_heads
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, heads, s, hd]
        k = k.repeat_interleave(n_rep, dim=1)  # GQA: each KV head serves n_rep query heads
        v = v.repeat_interleave(n_rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, s, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig = LlamaConfig()):
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.feed_forward = SwiGLU(cfg.dim, cfg.ffn_dim)

    def forward(self, x):
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.ffn_norm(h))


class MoE(nn.Module):
    """Top-k token-choice routing; expert e runs on the tokens that picked it (a data-dependent count)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.top_k = cfg.top_k
        self.router = nn.Linear(cfg.dim, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.dim, cfg.expert_dim) for _ in range(cfg.n_experts))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        scores = self.router(x).softmax(dim=-1)
        weights, chosen = scores.topk(self.top_k, dim=-1)  # [tokens, k]
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)  # data-dependent number of tokens
            y = expert(x[token]) * weights[token, slot].unsqueeze(-1).to(x.dtype)
            out = out.index_add(0, token, y)
        return out.view(shape)


class MoEBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig = LlamaConfig()):
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.moe = MoE(cfg)

    def forward(self, x):
        h = x + self.attention(self.attention_norm(x))
        return h + self.moe(self.ffn_norm(h))


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    h: int = 64  # hidden size
    a: int = 4  # attention heads
    dropout: float = 0.1


class GPTBlock(nn.Module):
    """Korthikanti et al. (2022)'s transformer layer; input and output [s, b, h].

    ``attention_checkpoint``: a callable ``(fn, q, k, v) -> out`` used for the attention core (selective recompute
    passes a checkpoint here); None runs it directly."""

    def __init__(self, cfg: GPTConfig = GPTConfig(), attention_checkpoint=None):
        super().__init__()
        self.cfg = cfg
        h = cfg.h
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.ln2 = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 4 * h)
        self.fc2 = nn.Linear(4 * h, h)
        self.attention_checkpoint = attention_checkpoint

    def core(self, q, k, v):
        """[b·a, s, d] each -> [b·a, s, d]: Q·Kᵀ, softmax, dropout, ·V (the part selective recompute drops)."""
        scores = torch.bmm(q, k.transpose(1, 2)) * (1.0 / math.sqrt(q.shape[-1]))
        p = F.dropout(scores.softmax(dim=-1), self.cfg.dropout, self.training)
        return torch.bmm(p, v)

    def forward(self, x):
        s, b, h = x.shape
        a, d = self.cfg.a, h // self.cfg.a
        qkv = self.qkv(self.ln1(x))  # [s, b, 3h]
        q, k, v = (t.reshape(s, b * a, d).transpose(0, 1) for t in qkv.split(h, dim=-1))  # [b·a, s, d]
        ctx = self.attention_checkpoint(self.core, q, k, v) if self.attention_checkpoint else self.core(q, k, v)
        ctx = ctx.transpose(0, 1).reshape(s, b, h)
        x = x + F.dropout(self.proj(ctx), self.cfg.dropout, self.training)
        y = self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x + F.dropout(y, self.cfg.dropout, self.training)


class Stack(nn.Module):
    """Blocks in ``.layers`` (what the AC policies wrap), applied in order."""

    def __init__(self, make_block, n_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(make_block() for _ in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def llama(cfg: LlamaConfig = LlamaConfig(), n_layers: int = 2, moe: bool = False) -> Stack:
    return Stack(lambda: (MoEBlock if moe else LlamaBlock)(cfg), n_layers)


def llama_tp_plan(sequence_parallel: bool = True) -> dict:
    """torchtitan's per-block tensor-parallel plan (torchtitan/models/llama3/infra/parallelize.py, apply_tp):
    wq/wk/wv/w1/w3 colwise, wo/w2 rowwise; with sequence parallel the norms are ``SequenceParallel`` and the rowwise
    outputs are sharded on the sequence dim, so each rowwise linear ends in a reduce-scatter and each colwise one
    starts with an all-gather."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                                   SequenceParallel)

    if not sequence_parallel:
        return {"attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(), "attention.wv": ColwiseParallel(),
                "attention.wo": RowwiseParallel(), "feed_forward.w1": ColwiseParallel(),
                "feed_forward.w2": RowwiseParallel(), "feed_forward.w3": ColwiseParallel()}
    return {
        "attention_norm": SequenceParallel(),
        "attention": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(), "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
        "ffn_norm": SequenceParallel(),
        "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "feed_forward.w1": ColwiseParallel(), "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
        "feed_forward.w3": ColwiseParallel(),
    }
