"""ONNX export and bundle writing."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from datetime import datetime, timezone
from importlib.metadata import version as _dist_version
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..model import features
from ..model.files import publish_atomically, publish_text
from ..model.network import ScoringGraph, SessionTransformer
from ..model.schema import LABELS


# Longest input a sliding-attention graph accepts (its attention is (T, T) per head).
MAX_SLIDING_LEN = 4096


def export_onnx(net: SessionTransformer, path: Path) -> None:
    """Dynamic batch and length (1..W; 1..MAX_SLIDING_LEN for a sliding-attention network,
    which batch scoring runs over chunks longer than W). The example uses batch 2 and
    length W: a batch of 1 would be specialised to a constant by the dynamo exporter
    (design doc pitfalls)."""
    if net.cfg.ple_bins and not bool(net.ple_inv_w.any()):
        raise ValueError("the network's piecewise-linear encoding has no bin edges (set_ple_edges was "
                         "never called): it would ignore its input")
    graph = ScoringGraph(net).eval()
    W = net.cfg.window
    x = torch.zeros(2, W, net.cfg.n_features)
    batch = torch.export.Dim("batch", min=1, max=65536)
    time = torch.export.Dim("time", min=1, max=MAX_SLIDING_LEN if net.cfg.attention_span else W)
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull:
        warnings.simplefilter("ignore")
        import contextlib
        with contextlib.redirect_stdout(devnull):
            prog = torch.onnx.export(graph, (x,), dynamo=True, input_names=["x"], output_names=["probs"],
                                     dynamic_shapes={"x": {0: batch, 1: time}}, verbose=False)
    model = prog.model_proto
    strip_exporter_metadata(model)
    # Published by rename: a reader (or a crash) never meets half a graph beside whole metadata.
    publish_atomically(path, lambda tmp: onnx.save(model, str(tmp)), best_effort_dir=True)


def strip_exporter_metadata(proto) -> None:
    """Clears every `doc_string` and `metadata_props` of an ONNX message and of every
    message inside it (model, graph, nodes, attributes and their subgraphs, value_info,
    initializers, functions), in place. The dynamo exporter stores there each node's FX
    node, module path and stack trace (source file paths of this checkout and of torch)
    and the exported program's signature: nothing a runtime reads, and it makes the bytes
    depend on the directory the model was exported from."""
    for field, value in proto.ListFields():
        if field.name in ("doc_string", "metadata_props"):
            proto.ClearField(field.name)
        elif field.type == field.TYPE_MESSAGE:
            for msg in (value if field.is_repeated else (value,)):
                strip_exporter_metadata(msg)


def weights_sha256(net: SessionTransformer) -> str:
    """Hash of the network's parameters and buffers (names, dtypes, shapes, values). Not of
    model.onnx's bytes: those also depend on the exporter (its version, its node naming),
    and bundles exported before `strip_exporter_metadata` carried source paths."""
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
    publish_text(out / "metadata.json", json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# ------------------------------------------------------------- reproducibility check
#
# `make model` reproducibility (design card): the same graph, the same initializers and
# the same ORT outputs. Compared on the parsed models, after stripping the exporter's
# metadata, so a bundle exported in another clone directory (or before stripping existed)
# compares equal when its model is the same.

def _stripped(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    strip_exporter_metadata(model)
    return model


def _node_signature(node: onnx.NodeProto) -> tuple:
    # Node names are left out: they are labels, the op, its wiring and attributes are the graph.
    attrs = tuple(a.SerializeToString(deterministic=True) for a in node.attribute)
    return node.domain, node.op_type, tuple(node.input), tuple(node.output), attrs


def _graph_differences(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    def opsets(m):
        return sorted((o.domain, o.version) for o in m.opset_import)

    diffs = []
    if opsets(a) != opsets(b):
        diffs.append(f"opset imports differ: {opsets(a)} vs {opsets(b)}")
    for part in ("input", "output"):
        sa = [v.SerializeToString(deterministic=True) for v in getattr(a.graph, part)]
        sb = [v.SerializeToString(deterministic=True) for v in getattr(b.graph, part)]
        if sa != sb:
            diffs.append(f"graph {part}s differ")
    na, nb = [_node_signature(n) for n in a.graph.node], [_node_signature(n) for n in b.graph.node]
    if len(na) != len(nb):
        diffs.append(f"node count differs: {len(na)} vs {len(nb)}")
    for i, (x, y) in enumerate(zip(na, nb)):
        if x != y:
            diffs.append(f"node {i} differs: {x[1]}{list(x[2])}->{list(x[3])} vs {y[1]}{list(y[2])}->{list(y[3])}")
            break   # the rest usually shifts with it
    fa = [f.SerializeToString(deterministic=True) for f in a.functions]
    fb = [f.SerializeToString(deterministic=True) for f in b.functions]
    if fa != fb:
        diffs.append("model-local functions differ")
    return diffs


def _initializer_differences(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    def arrays(m):
        return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    ia, ib = arrays(a), arrays(b)
    diffs = [f"initializer {n} only in the first" for n in sorted(ia.keys() - ib.keys())]
    diffs += [f"initializer {n} only in the second" for n in sorted(ib.keys() - ia.keys())]
    for n in sorted(ia.keys() & ib.keys()):
        x, y = ia[n], ib[n]
        if x.dtype != y.dtype or x.shape != y.shape:
            diffs.append(f"initializer {n}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
        elif x.tobytes() != y.tobytes():
            diffs.append(f"initializer {n}: values differ (max |diff| "
                         f"{float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))):.3g})")
    return diffs


def fixed_batches(n_features: int, window: int) -> list[np.ndarray]:
    """The check's inputs, the same in every run: batch x length at 1 x 1, 3 x W/2+1 and
    7 x W, the last with one right-padded row (zeros after its valid prefix)."""
    rng = np.random.default_rng(20240601)
    out = []
    for b, t in ((1, 1), (3, window // 2 + 1), (7, window)):
        x = rng.standard_normal((b, t, n_features)).astype(np.float32)
        out.append(x)
    out[-1][0, max(1, window // 3):] = 0.0
    return out


def output_differences(a: Path, b: Path, batches: list[np.ndarray], atol: float = 0.0) -> list[str]:
    from ..serving.bundle import ort_session

    sa, sb = ort_session(a), ort_session(b)
    diffs = []
    for x in batches:
        ya = sa.run(["probs"], {"x": x})[0]
        yb = sb.run(["probs"], {"x": x})[0]
        d = float(np.max(np.abs(ya.astype(np.float64) - yb.astype(np.float64))))
        if not d <= atol:      # NaN counts as a difference
            diffs.append(f"ORT outputs at batch {x.shape[0]} x length {x.shape[1]}: max |diff| {d:.3g} > {atol:g}")
    return diffs


def onnx_differences(a: Path, b: Path, *, window: int, atol: float = 0.0) -> list[str]:
    """What differs between two exported models: graph structure, initializers (names,
    dtypes, shapes, exact bytes), onnxruntime outputs on `fixed_batches` (|diff| <= atol;
    0 means bit-equal). Empty when they are the same model."""
    ma, mb = _stripped(a), _stripped(b)
    diffs = _graph_differences(ma, mb) + _initializer_differences(ma, mb)
    dims = [d.dim_value for d in ma.graph.input[0].type.tensor_type.shape.dim]
    return diffs + output_differences(a, b, fixed_batches(dims[-1], window), atol)


def bundle_differences(a: Path, b: Path, *, atol: float = 0.0) -> tuple[list[str], list[str]]:
    """(differences, notes) between two bundle directories. Differences: the models'
    (`onnx_differences`) and the metadata's version (data hash . weights hash). Notes: other
    metadata keys that differ (created_at excluded), for the reader, not a failure."""
    ma = json.loads((a / "metadata.json").read_text())
    mb = json.loads((b / "metadata.json").read_text())
    diffs = onnx_differences(a / "model.onnx", b / "model.onnx", window=ma["model_config"]["window"], atol=atol)
    if ma.get("version") != mb.get("version"):
        diffs.append(f"version differs: {ma.get('version')} vs {mb.get('version')}")
    notes = [f"metadata {k} differs" for k in sorted(ma.keys() | mb.keys())
             if k not in ("created_at", "version") and ma.get(k) != mb.get(k)]
    return diffs, notes
