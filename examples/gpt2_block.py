"""A GPT-2-style transformer (pre-LayerNorm blocks: causal self-attention, GELU MLP, dropout), tiny by default.

The factory is what `ac-conformance check examples/gpt2_block.py:build` and examples/test_gpt2_block.py call: it
returns ``(model, inputs)``; the blocks are in ``model.layers``, which is what the AC policies wrap."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in self.c_attn(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.dropout(self.c_proj(y.transpose(1, 2).reshape(b, s, d)), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, n_layers: int = 2, dim: int = 32, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(Block(dim, heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, x):
        for block in self.layers:
            x = block(x)
        return self.ln_f(x)


def build():
    """Two tiny blocks and a batch of 2 sequences of 8 embeddings."""
    return GPT2(), torch.randn(2, 8, 32)
