"""Training data: sessionized features, session labels (training.labels), account-disjoint split, windows."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset

from ..model import windows
from ..model.schema import LABELS
from ..model.sessions import assign_sessions
from . import labels as labels_mod

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Every labelled session of the input, feature rows laid end to end."""
    sr: windows.SessionRows
    y: np.ndarray            # (n_sessions,) int64 class index
    accounts: np.ndarray     # (n_sessions,) str
    families: np.ndarray     # (n_sessions,) str ('' when unknown)
    session_ids: np.ndarray  # (n_sessions,) str
    n_unlabelled: int        # sessions of the input no label row matched (conflicts not included)
    # `source` of each labelled session's label rows ('' when not given; "simulated" for
    # --mix-simulated traffic), aligned with y.
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    # Sessions left out because two label rows disagree (labels.CONFLICTS_SCHEMA) and label
    # rows that matched no session (labels.UNMATCHED_SCHEMA): reported, never dropped silently.
    conflicts: pa.Table = field(default_factory=labels_mod.CONFLICTS_SCHEMA.empty_table)
    unmatched: pa.Table = field(default_factory=labels_mod.UNMATCHED_SCHEMA.empty_table)
    n_label_rows: int = 0


def split_of(accounts: np.ndarray, seed: int, fractions=(0.7, 0.15)) -> np.ndarray:
    """Account-disjoint split by a seeded hash of account_id: 0 train, 1 val, 2 test."""
    uniq, inv = np.unique(accounts, return_inverse=True)
    u = np.array([zlib.crc32(f"{seed}:{a}".encode()) / 2**32 for a in uniq])
    part = np.where(u < fractions[0], 0, np.where(u < fractions[0] + fractions[1], 1, 2))
    return part[inv]


def hash_only_copy(events: pa.Table) -> pa.Table:
    """Canonical events as a file that carries only an upstream `template_hash` would give
    them: each frame is the exact value of the event's signature, read back as a legacy
    one-band signature (no band-wise matching). The held-out and cross-generator reports
    score these copies beside the originals (docs/templates.md, "Compatibility")."""
    from ..model.schema import normalise

    t = events.set_column(events.schema.get_field_index("template_hash"), "template_hash",
                          events["frame_signature"])
    t = t.set_column(t.schema.get_field_index("frame_signature"), "frame_signature",
                     pa.nulls(t.num_rows, pa.string()))
    return normalise(t, source="hash-only copy")


def prepare(events: pa.Table, labels: pa.Table, gap_s: float, on_conflict: str = "exclude") -> Prepared:
    """Canonical events + label rows (labels_io.read_labels) -> labelled sessions.

    Sessions no label row matches are dropped (counted in n_unlabelled); sessions two rows
    label differently are dropped and listed in `conflicts` (on_conflict="fail" raises
    SchemaError instead); label rows matching no session are listed in `unmatched`. The
    rules are training.labels.resolve's."""
    table = assign_sessions(events, gap_s=gap_s)
    sr = windows.featurize(table)
    first = pa.array(sr.starts[:-1])
    last = pa.array(sr.starts[1:] - 1)
    sess = pc.take(table["session_id"], last).to_numpy(zero_copy_only=False).astype(str)
    acct = pc.take(table["account_id"], last).to_numpy(zero_copy_only=False).astype(str)
    ts = table["ts"]
    res = labels_mod.resolve(sess, acct, pc.take(ts, first).to_numpy(zero_copy_only=False),
                             pc.take(ts, last).to_numpy(zero_copy_only=False), labels, on_conflict)
    keep = res.y >= 0
    idx = np.flatnonzero(keep)
    return Prepared(
        sr=_select_sessions(sr, idx), y=res.y[keep], accounts=acct[keep], families=res.families[keep],
        session_ids=sess[keep], n_unlabelled=int((~keep & ~res.conflicting).sum()), sources=res.sources[keep],
        conflicts=res.conflicts, unmatched=res.unmatched, n_label_rows=res.n_rows)


def _select_sessions(sr: windows.SessionRows, idx: np.ndarray) -> windows.SessionRows:
    lengths = sr.lengths[idx]
    rows = np.concatenate([sr.rows[sr.starts[i]:sr.starts[i + 1]] for i in idx]) if len(idx) else sr.rows[:0]
    return windows.SessionRows(rows=rows, starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def concat_prepared(a: Prepared, b: Prepared) -> Prepared:
    """Sessions of `a`, then those of `b` (e.g. logged events, then simulated traffic).

    Features are per session (each session's running state starts empty), so preparing
    two account-disjoint event sets apart and joining them equals preparing them together."""
    sr = windows.SessionRows(rows=np.concatenate([a.sr.rows, b.sr.rows]),
                             starts=np.concatenate([a.sr.starts, a.sr.starts[-1] + b.sr.starts[1:]]))
    return Prepared(sr=sr, y=np.concatenate([a.y, b.y]), accounts=np.concatenate([a.accounts, b.accounts]),
                    families=np.concatenate([a.families, b.families]),
                    session_ids=np.concatenate([a.session_ids, b.session_ids]),
                    n_unlabelled=a.n_unlabelled + b.n_unlabelled, sources=np.concatenate([a.sources, b.sources]),
                    conflicts=pa.concat_tables([a.conflicts, b.conflicts]),
                    unmatched=pa.concat_tables([a.unmatched, b.unmatched]),
                    n_label_rows=a.n_label_rows + b.n_label_rows)


def training_windows(sr: windows.SessionRows, sessions: np.ndarray, window: int,
                     rng: np.random.Generator, tail_per_session: int = 3, receptive: int | None = None):
    """(begin, length, session, first) windows: each session's head window plus a few random
    windows ending later in long sessions (where the harvest evidence accumulates); the loss
    reads rows first.. of a window.

    Whole-window attention (receptive None): windows of W rows, every row trained (a row's
    score is a legal causal score of the window's rows). Sliding attention (receptive R):
    windows of W + R - 1 rows; a late window trains only its last W rows, the ones whose
    receptive field lies inside it, so training sees exactly the outputs scoring computes."""
    ctx = 0 if receptive is None else receptive - 1
    span = window + ctx
    lengths = sr.lengths[sessions]
    begin = [sr.starts[:-1][sessions]]
    length = [np.minimum(lengths, span)]
    owner = [sessions]
    first = [np.zeros(len(sessions), np.int64)]
    long = sessions[lengths > span]
    for _ in range(tail_per_session):
        n = sr.lengths[long]
        end = sr.starts[:-1][long] + span + (rng.random(len(long)) * (n - span)).astype(np.int64)
        begin.append(end - span)
        length.append(np.full(len(long), span))
        owner.append(long)
        first.append(np.full(len(long), ctx, np.int64))
    return np.concatenate(begin), np.concatenate(length), np.concatenate(owner), np.concatenate(first)


class WindowDataset(Dataset):
    def __init__(self, rows, begin, length, y, window, first=None):
        self.rows, self.begin, self.length, self.y, self.window = rows, begin, length, y, window
        self.first = np.zeros(len(begin), np.int64) if first is None else first

    def __len__(self):
        return len(self.begin)

    def __getitems__(self, idx):
        idx = np.asarray(idx)
        x = windows.gather(self.rows, self.begin[idx], self.length[idx])
        return (torch.from_numpy(x), torch.from_numpy(self.length[idx]), torch.from_numpy(self.y[idx]),
                torch.from_numpy(self.first[idx]))

    def __getitem__(self, i):
        return self.__getitems__([i])


def _identity(batch):
    return batch


class SessionDataModule(L.LightningDataModule):
    def __init__(self, prepared: Prepared, split: np.ndarray, window: int, batch_size: int, seed: int,
                 receptive: int | None = None):
        super().__init__()
        self.p, self.split, self.window, self.batch_size, self.seed = prepared, split, window, batch_size, seed
        self.receptive = receptive

    def _dataset(self, part: int, rng) -> WindowDataset:
        sessions = np.flatnonzero(self.split == part)
        tails = 3 if part == 0 else 1
        b, ln, owner, first = training_windows(self.p.sr, sessions, self.window, rng, tails, self.receptive)
        return WindowDataset(self.p.sr.rows, b, ln, self.p.y[owner], self.window, first)

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
