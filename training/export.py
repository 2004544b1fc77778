"""ONNX export and bundle writing."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from importlib.metadata import version as _dist_version
from ..model import features
from ..model.network import ScoringGraph, SessionTransformer
from ..model.schema import LABELS


def export_onnx(net: SessionTransformer, path: Path) -> None:
    """Dynamic batch and length (1..W). The example uses batch 2 and length W: a batch of
    1 would be specialised to a constant by the dynamo exporter (design doc pitfalls)."""
    if net.cfg.ple_bins and not bool(net.ple_inv_w.any()):
        raise ValueError("the network's piecewise-linear encoding has no bin edges (set_ple_edges was "
                         "never called): it would ignore its input")
    graph = ScoringGraph(net).eval()
    W = net.cfg.window
    x = torch.zeros(2, W, net.cfg.n_features)
    batch = torch.export.Dim("batch", min=1, max=65536)
    time = torch.export.Dim("time", min=1, max=W)
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull:
        warnings.simplefilter("ignore")
        import contextlib
        with contextlib.redirect_stdout(devnull):
            prog = torch.onnx.export(graph, (x,), dynamo=True, input_names=["x"], output_names=["probs"],
                                     dynamic_shapes={"x": {0: batch, 1: time}}, verbose=False)
    prog.save(str(path))


def weights_sha256(net: SessionTransformer) -> str:
    """Hash of the network's parameters and buffers (names, dtypes, shapes, values). Not of
    model.onnx's bytes: the exporter records source file paths in the graph, so the same
    weights exported from another checkout would hash differently."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_bundle(out: Path, net: SessionTransformer, *, thresholds: dict, metrics: dict,
                 train_config: dict, data_fingerprint: dict, session_gap_s: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, out / "model.onnx")
    # data hash . weights hash: two models trained on the same data (other seed, config or
    # epochs) get different versions, so a registry, the event log and ScoreResponse tell them apart.
    weights = weights_sha256(net)[:8]
    meta = {
        "version": f"{_dist_version('distillguard')}+{data_fingerprint.get('sha256', 'nodata')[:8]}.{weights}",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels": list(LABELS),
        "model_config": net.cfg.to_dict(),
        "feature_spec": features.feature_spec(),
        "feature_spec_hash": features.feature_spec_hash(),
        "session_gap_s": session_gap_s,
        "thresholds": thresholds,
        "metrics": metrics,
        "train_config": train_config,
        "training_data": data_fingerprint,
    }
    _write_metadata(out, meta)
    return out


def update_metadata(out: Path, **fields) -> None:
    meta = json.loads((out / "metadata.json").read_text())
    meta.update(fields)
    _write_metadata(out, meta)


def _write_metadata(out: Path, meta: dict) -> None:
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
