"""A model bundle: a directory holding model.onnx and metadata.json.

Loading checks the feature spec the bundle was trained with against the code's: a
mismatch would feed the network columns it never saw, a silent wrong score, so it is a
clear error instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..model import features
from ..training.calibration import apply_temperature


class BundleError(RuntimeError):
    pass


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Serving uses one thread, no spinning: on 2 cores a spinning pool starves gRPC threads
    # (design doc). Batch scoring passes 0: one thread per core, still without spinning.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class Bundle:
    path: Path
    metadata: dict
    session: object

    @property
    def window(self) -> int:
        return int(self.metadata["model_config"]["window"])

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.metadata["labels"])

    @property
    def thresholds(self) -> dict:
        return self.metadata["thresholds"]

    @cached_property
    def policy(self):
        from .policy import PolicyConfig

        return PolicyConfig.from_metadata(self.metadata)

    @property
    def gap_s(self) -> float:
        return float(self.metadata.get("session_gap_s", 86400.0))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))

    @property
    def temperature(self) -> float:
        return float(self.metadata.get("calibration", {}).get("temperature", 1.0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(B, T, F) float32, right-padded -> calibrated probabilities (B, T, n_classes).

        The one place scores leave the model: batch and online both read them here, so
        the bundle's temperature applies to both alike."""
        p = self.session.run(["probs"], {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]
        T = self.temperature
        return p if T == 1.0 else apply_temperature(p, T).astype(np.float32)


def load_bundle(path: str | Path, threads: int = 1) -> Bundle:
    path = Path(path)
    meta_path, onnx_path = path / "metadata.json", path / "model.onnx"
    if not path.is_dir():
        raise BundleError(f"model bundle {path}: not a directory (expected model.onnx + metadata.json)")
    for p in (meta_path, onnx_path):
        if not p.is_file():
            raise BundleError(f"model bundle {path}: missing {p.name}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"model bundle {path}: metadata.json is not valid JSON ({e})") from e
    for key in ("feature_spec_hash", "feature_spec", "labels", "thresholds", "model_config"):
        if key not in meta:
            raise BundleError(f"model bundle {path}: metadata.json lacks '{key}'")
    want = features.feature_spec_hash()
    if meta["feature_spec_hash"] != want:
        raise BundleError(
            f"model bundle {path}: trained with feature spec {meta['feature_spec_hash']} "
            f"(version {meta['feature_spec'].get('version')}), but this code computes "
            f"{want} (version {features.FEATURE_VERSION}); retrain the bundle with this version "
            f"(`distillguard train`) or use the distillguard release it was built with")
    try:
        session = ort_session(onnx_path, threads)
    except Exception as e:  # onnxruntime raises its own types for corrupt graphs
        raise BundleError(f"model bundle {path}: model.onnx cannot be loaded ({e})") from e
    return Bundle(path=path, metadata=meta, session=session)
