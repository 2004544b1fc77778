"""Causal transformer over a window of per-event feature rows -> class logits after every event.

score(t) = model over the last W events ending at t, positions relative to that window.
Because attention is causal, output position i of a window only depends on rows 0..i, so
one forward pass over a session's first W events yields score(0..W-1) at once.

Right padding needs no key-padding mask: a valid position i never attends to j > i, and
padded rows sit after every valid one (their outputs are ignored). This keeps the graph
free of `src_key_padding_mask`, which does not export with a dynamic length (design doc).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from .schema import LABELS


@dataclass
class NetworkConfig:
    n_features: int = 36
    window: int = 32          # W: events the model sees; also the positional table size
    d_model: int = 32
    n_head: int = 4
    n_layer: int = 2
    d_ff: int = 64
    dropout: float = 0.1
    n_classes: int = len(LABELS)
    # Piecewise-linear encoding of each input feature over `ple_bins` quantile bins of the
    # training rows (0 = feed raw features to a linear layer). Saturates beyond the
    # training range, like a tree's last split, instead of extrapolating linearly.
    ple_bins: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, h, T, C/h)
        q = q.view(B, T, h, C // h).transpose(1, 2)
        k = k.view(B, T, h, C // h).transpose(1, 2)
        v = v.view(B, T, h, C // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // h)) + mask  # (B, h, T, T)
        att = self.drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class SessionTransformer(nn.Module):
    """x: (B, T, n_features) float32, T <= window, right-padded -> logits (B, T, n_classes)."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.ple_bins
        if k:
            # (k, F) left bin edges and 1/width, set from training rows by `set_ple_edges`
            self.register_buffer("ple_lo", torch.zeros(k, cfg.n_features))
            self.register_buffer("ple_inv_w", torch.zeros(k, cfg.n_features))
        self.inp = nn.Linear(cfg.n_features * max(k, 1), cfg.d_model)
        self.pos = nn.Embedding(cfg.window, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def set_ple_edges(self, edges: torch.Tensor) -> None:
        """edges: (ple_bins + 1, F) increasing quantiles of each feature over training rows;
        a zero-width bin (a constant stretch of a feature) encodes as 0."""
        lo, hi = edges[:-1], edges[1:]
        width = hi - lo
        self.ple_lo.copy_(lo)
        self.ple_inv_w.copy_(torch.where(width > 1e-6, 1.0 / width.clamp_min(1e-6), torch.zeros_like(width)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, F * max(ple_bins, 1))."""
        if not self.cfg.ple_bins:
            return x
        B, T, Fn = x.shape
        e = ((x.unsqueeze(2) - self.ple_lo) * self.ple_inv_w).clamp(0.0, 1.0)  # (B, T, k, F)
        return e.reshape(B, T, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        pos = torch.arange(T, device=x.device)
        # Float causal mask from arange: exports with a dynamic T (a bool/triu mask did not).
        mask = (pos.unsqueeze(0) > pos.unsqueeze(1)).to(x.dtype) * -1e9  # (T, T)
        h = self.drop(self.inp(self.encode(x)) + self.pos(pos))
        for block in self.blocks:
            h = block(h, mask)
        return self.head(self.ln_f(h))


class ScoringGraph(nn.Module):
    """What goes into model.onnx: probabilities at every position (softmax in the graph)."""

    def __init__(self, net: SessionTransformer):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.net(x), dim=-1)
