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

LABELS = ("human", "benign_automation", "distillation_harvesting")


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
        self.inp = nn.Linear(cfg.n_features, cfg.d_model)
        self.pos = nn.Embedding(cfg.window, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        pos = torch.arange(T, device=x.device)
        # Float causal mask from arange: exports with a dynamic T (a bool/triu mask did not).
        mask = (pos.unsqueeze(0) > pos.unsqueeze(1)).to(x.dtype) * -1e9  # (T, T)
        h = self.drop(self.inp(x) + self.pos(pos))
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
