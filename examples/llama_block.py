"""A Llama-style transformer (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU), tiny by default.

The factory is what `ac-conformance check examples/llama_block.py:build` and examples/test_llama_block.py call: it
returns ``(model, inputs)``; the blocks are in ``model.layers``, which is what the AC policies wrap."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope(x, theta: float = 10000.0):
    """Rotary embedding of x [b, s, heads, hd] (pairs (2i, 2i+1) rotated by position)."""
    s, hd = x.shape[1], x.shape[-1]
    freqs = torch.outer(torch.arange(s, dtype=torch.float32),
                        1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    cos, sin = freqs.cos()[:, None, :], freqs.sin()[:, None, :]
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, heads * self.hd, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(heads * self.hd, dim, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        q = rope(self.wq(x).view(b, s, self.heads, self.hd)).transpose(1, 2)
        k = rope(self.wk(x).view(b, s, self.kv_heads, self.hd)).transpose(1, 2)
        v = self.wv(x).view(b, s, self.kv_heads, self.hd).transpose(1, 2)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, kv_heads: int = 2, ffn: int = 64):
        super().__init__()
        self.attention_norm = nn.RMSNorm(dim)
        self.attention = Attention(dim, heads, kv_heads)
        self.ffn_norm = nn.RMSNorm(dim)
        self.w1 = nn.Linear(dim, ffn, bias=False)
        self.w2 = nn.Linear(ffn, dim, bias=False)
        self.w3 = nn.Linear(dim, ffn, bias=False)

    def forward(self, x):
        h = x + self.attention(self.attention_norm(x))
        f = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(f)) * self.w3(f))


class Llama(nn.Module):
    def __init__(self, n_layers: int = 2, **block):
        super().__init__()
        self.layers = nn.ModuleList(Block(**block) for _ in range(n_layers))

    def forward(self, x):
        for block in self.layers:
            x = block(x)
        return x


def build():
    """Two tiny blocks and a batch of 2 sequences of 8 embeddings."""
    return Llama(), torch.randn(2, 8, 32)
