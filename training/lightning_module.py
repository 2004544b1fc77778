"""Thin LightningModule around the plain SessionTransformer."""
from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F

from ..model.network import NetworkConfig, SessionTransformer


class SessionClassifier(L.LightningModule):
    def __init__(self, net_config: dict, class_weights: list[float], lr: float = 2e-3,
                 weight_decay: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = SessionTransformer(NetworkConfig(**net_config))
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32))

    def forward(self, x):
        return self.net(x)

    def _common_step(self, batch, stage: str):
        x, length, y, first = batch
        logits = self.net(x)                                        # (B, T, C)
        B, T, C = logits.shape
        t = torch.arange(T, device=x.device)[None, :]
        # Rows before `first` are context whose own outputs scoring never computes (data.training_windows).
        valid = (t < length[:, None]) & (t >= first[:, None])       # (B, T)
        target = y[:, None].expand(B, T)
        loss_all = F.cross_entropy(logits.reshape(-1, C), target.reshape(-1),
                                   weight=self.class_weights, reduction="none").view(B, T)
        w = self.class_weights[target] * valid
        loss = (loss_all * valid).sum() / w.sum().clamp_min(1e-6)
        last = logits[torch.arange(B, device=x.device), length - 1]
        acc = (last.argmax(-1) == y).float().mean()
        # Epoch-level validation numbers are averaged over DDP processes (each saw a shard),
        # so every process's checkpoint callback ranks epochs by the same val_loss.
        sync = stage != "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=B, sync_dist=sync)
        self.log(f"{stage}_acc", acc, prog_bar=True, batch_size=B, sync_dist=sync)
        return loss

    def training_step(self, batch, batch_idx):
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._common_step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
