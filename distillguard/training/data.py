"""Training data: sessionized features, session labels, account-disjoint split, windows."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset

from ..model import windows
from ..model.network import LABELS
from ..model.sessions import assign_sessions

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Every labelled session of the input, feature rows laid end to end."""
    sr: windows.SessionRows
    y: np.ndarray            # (n_sessions,) int64 class index
    accounts: np.ndarray     # (n_sessions,) str
    families: np.ndarray     # (n_sessions,) str ('' when unknown)
    session_ids: np.ndarray  # (n_sessions,) str
    n_unlabelled: int


def split_of(accounts: np.ndarray, seed: int, fractions=(0.7, 0.15)) -> np.ndarray:
    """Account-disjoint split by a seeded hash of account_id: 0 train, 1 val, 2 test."""
    uniq, inv = np.unique(accounts, return_inverse=True)
    u = np.array([zlib.crc32(f"{seed}:{a}".encode()) / 2**32 for a in uniq])
    part = np.where(u < fractions[0], 0, np.where(u < fractions[0] + fractions[1], 1, 2))
    return part[inv]


def prepare(events: pa.Table, labels: pa.Table, gap_s: float) -> Prepared:
    """Canonical events + label table -> labelled sessions (unlabelled ones dropped)."""
    table = assign_sessions(events, gap_s=gap_s)
    sr = windows.featurize(table)
    last = pa.array(sr.starts[1:] - 1)
    sess = pc.take(table["session_id"], last).to_numpy(zero_copy_only=False).astype(str)
    acct = pc.take(table["account_id"], last).to_numpy(zero_copy_only=False).astype(str)
    key_col = "session_id" if "session_id" in labels.column_names else "account_id"
    keys = labels[key_col].to_numpy(zero_copy_only=False).astype(str)
    lab = dict(zip(keys, labels["label"].to_pylist()))
    fam = dict(zip(keys, labels["family"].to_pylist())) if "family" in labels.column_names else {}
    look = sess if key_col == "session_id" else acct
    y = np.array([LABELS.index(lab[k]) if k in lab else -1 for k in look], dtype=np.int64)
    keep = y >= 0
    idx = np.flatnonzero(keep)
    lengths = sr.lengths[idx]
    rows = np.concatenate([sr.rows[sr.starts[i]:sr.starts[i + 1]] for i in idx]) if len(idx) else sr.rows[:0]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Prepared(
        sr=windows.SessionRows(rows=rows, starts=starts), y=y[keep], accounts=acct[keep],
        families=np.array([fam.get(k) or "" for k in look[keep]], dtype=object).astype(str),
        session_ids=sess[keep], n_unlabelled=int((~keep).sum()))


def training_windows(sr: windows.SessionRows, sessions: np.ndarray, window: int,
                     rng: np.random.Generator, tail_per_session: int = 3):
    """(begin, length, session) windows: each session's head window plus a few random
    full windows ending later in long sessions (where the harvest evidence accumulates)."""
    lengths = sr.lengths[sessions]
    begin = [sr.starts[:-1][sessions]]
    length = [np.minimum(lengths, window)]
    owner = [sessions]
    long = sessions[lengths > window]
    for _ in range(tail_per_session):
        n = sr.lengths[long]
        end = sr.starts[:-1][long] + window + (rng.random(len(long)) * (n - window)).astype(np.int64)
        begin.append(end - window)
        length.append(np.full(len(long), window))
        owner.append(long)
    return np.concatenate(begin), np.concatenate(length), np.concatenate(owner)


class WindowDataset(Dataset):
    def __init__(self, rows, begin, length, y, window):
        self.rows, self.begin, self.length, self.y, self.window = rows, begin, length, y, window

    def __len__(self):
        return len(self.begin)

    def __getitems__(self, idx):
        idx = np.asarray(idx)
        x = windows.gather(self.rows, self.begin[idx], self.length[idx])
        return (torch.from_numpy(x), torch.from_numpy(self.length[idx]), torch.from_numpy(self.y[idx]))

    def __getitem__(self, i):
        return self.__getitems__([i])


def _identity(batch):
    return batch


class SessionDataModule(L.LightningDataModule):
    def __init__(self, prepared: Prepared, split: np.ndarray, window: int, batch_size: int, seed: int):
        super().__init__()
        self.p, self.split, self.window, self.batch_size, self.seed = prepared, split, window, batch_size, seed

    def _dataset(self, part: int, rng) -> WindowDataset:
        sessions = np.flatnonzero(self.split == part)
        tails = 3 if part == 0 else 1
        b, ln, owner = training_windows(self.p.sr, sessions, self.window, rng, tails)
        return WindowDataset(self.p.sr.rows, b, ln, self.p.y[owner], self.window)

    def setup(self, stage=None):
        rng = np.random.default_rng(self.seed)
        self.train_ds = self._dataset(0, rng)
        self.val_ds = self._dataset(1, rng)

    def class_weights(self) -> torch.Tensor:
        counts = np.bincount(self.p.y[self.split == 0], minlength=len(LABELS)).astype(np.float64)
        w = counts.sum() / np.maximum(counts, 1) / len(LABELS)
        return torch.tensor(w, dtype=torch.float32)

    def _loader(self, ds, shuffle):
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, generator=g,
                          collate_fn=_identity, num_workers=0)

    def train_dataloader(self):
        return self._loader(self.train_ds, True)

    def val_dataloader(self):
        return self._loader(self.val_ds, False)
