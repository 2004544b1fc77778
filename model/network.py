"""Causal transformer over a window of per-event feature rows -> class logits after every event.

Two attention layouts (`NetworkConfig.attention_span`):
- 0, "window": score(t) = model over the last W events ending at t, absolute positions
  relative to that window. Output position i only depends on rows 0..i, so one pass over a
  session's first W events gives score(0..W-1); every later event needs its own window.
- S > 0, "sliding": every layer attends to the last S events (itself included) with a
  learned bias per head and distance, no absolute positions. Output i depends only on
  rows i-R+1..i, R = n_layer * (S - 1) + 1 (the receptive field, <= W), and not on where
  the window starts, so one pass over a whole session (or chunks of it that carry R-1
  rows of context) gives every event's score, and the online ring of W-1 earlier events
  plus the new one holds the receptive field.

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
    # Sliding-window attention span S (0 = whole-window attention with absolute positions).
    attention_span: int = 0

    def __post_init__(self):
        if self.attention_span < 0 or self.attention_span == 1:
            raise ValueError(f"attention_span must be 0 (whole window) or >= 2, got {self.attention_span}")
        if self.receptive_field > self.window:
            raise ValueError(f"receptive field {self.receptive_field} (n_layer {self.n_layer} x (attention_span "
                             f"{self.attention_span} - 1) + 1) exceeds window {self.window}: the online "
                             f"ring could not hold it")

    @property
    def receptive_field(self) -> int:
        """Rows an output depends on (its own included)."""
        if not self.attention_span:
            return self.window
        return self.n_layer * (self.attention_span - 1) + 1

    def to_dict(self) -> dict:
        return asdict(self)


def widest_span(window: int, n_layer: int) -> int:
    """The largest attention span whose receptive field fits `window` rows."""
    return max((window - 1) // n_layer + 1, 2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        # (h, S): additive attention bias per head and distance s = i - j (sliding layout only)
        self.rel = nn.Parameter(torch.zeros(cfg.n_head, cfg.attention_span)) if cfg.attention_span else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mask: (T, T) additive causal mask (window layout) or (h, nb, S, 2S) additive
        band mask with the distance bias folded in (sliding layout, `_band_mask`)."""
        B, T, C = x.shape
        h = self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, h, T, C/h)
        q = q.view(B, T, h, C // h).transpose(1, 2)
        k = k.view(B, T, h, C // h).transpose(1, 2)
        v = v.view(B, T, h, C // h).transpose(1, 2)
        scale = 1.0 / math.sqrt(C // h)
        if self.rel is None:
            att = self.drop(F.softmax((q @ k.transpose(-2, -1)) * scale + mask, dim=-1))  # (B, h, T, T)
            y = att @ v
        else:
            # Blocked local attention: rows in blocks of S; a block's queries score their own
            # block and the one before (2S keys, of which the band keeps distances 0..S-1),
            # so the cost per row is 2S however long the chunk (one (T, T) score matrix per
            # chunk ran 4x slower at T = 300 in onnxruntime).
            S = self.rel.shape[1]
            nb = mask.shape[1]
            pad = nb * S - T
            qb = F.pad(q, (0, 0, 0, pad)).reshape(B, h, nb, S, C // h)
            kb = F.pad(k, (0, 0, S, pad)).reshape(B, h, nb + 1, S, C // h)
            vb = F.pad(v, (0, 0, S, pad)).reshape(B, h, nb + 1, S, C // h)
            kk = torch.cat([kb[:, :, :-1], kb[:, :, 1:]], dim=3)           # (B, h, nb, 2S, C/h)
            vv = torch.cat([vb[:, :, :-1], vb[:, :, 1:]], dim=3)
            att = self.drop(F.softmax((qb @ kk.transpose(-2, -1)) * scale + mask, dim=-1))  # (B, h, nb, S, 2S)
            y = (att @ vv).reshape(B, h, nb * S, C // h)[:, :, :T]
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.drop(self.proj(y))

    def band_mask(self, T: int, device) -> torch.Tensor:
        """(h, nb, S, 2S) for T rows: query i of block b (row bS + i) against key j of the
        pair (row bS + j - S): distance d = S + i - j; kept when 0 <= d < S and the key row
        exists (>= 0), biased by rel[:, d]. exp(-1e9) is exactly 0 in float32, so an output
        carries no weight at all from rows past its receptive field."""
        S = self.rel.shape[1]
        nb = (T + S - 1) // S
        i = torch.arange(S, device=device).unsqueeze(1)
        j = torch.arange(2 * S, device=device).unsqueeze(0)
        d = S + i - j                                                       # (S, 2S)
        key_row = torch.arange(nb, device=device).view(nb, 1, 1) * S + j - S   # (nb, 1, 2S)
        keep = (d >= 0) & (d < S) & (key_row >= 0)                          # (nb, S, 2S)
        return (~keep).to(self.rel.dtype) * -1e9 + self.rel[:, d.clamp(0, S - 1)].unsqueeze(1)


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
    """x: (B, T, n_features) float32, right-padded -> logits (B, T, n_classes); T <= window
    in the window layout, any T in the sliding one."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.ple_bins
        if k:
            # (k, F) left bin edges and 1/width, set from training rows by `set_ple_edges`
            self.register_buffer("ple_lo", torch.zeros(k, cfg.n_features))
            self.register_buffer("ple_inv_w", torch.zeros(k, cfg.n_features))
        self.inp = nn.Linear(cfg.n_features * max(k, 1), cfg.d_model)
        self.pos = None if cfg.attention_span else nn.Embedding(cfg.window, cfg.d_model)
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
        # Float masks from arange: export with a dynamic T (a bool/triu mask did not).
        h = self.inp(self.encode(x))
        if self.pos is None:
            masks = [block.attn.band_mask(T, x.device) for block in self.blocks]
        else:
            causal = (pos.unsqueeze(0) > pos.unsqueeze(1)).to(x.dtype) * -1e9  # (T, T)
            masks = [causal] * len(self.blocks)
            h = h + self.pos(pos)
        h = self.drop(h)
        for block, mask in zip(self.blocks, masks):
            h = block(h, mask)
        return self.head(self.ln_f(h))


class ScoringGraph(nn.Module):
    """What goes into model.onnx: probabilities at every position (softmax in the graph)."""

    def __init__(self, net: SessionTransformer):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.net(x), dim=-1)
