"""Bundle contract: metadata fields, refusal of a feature-spec mismatch or a corrupt graph."""
import json
import shutil

import numpy as np
import pytest

from distillguard.model import features
from distillguard.serving.bundle import BundleError, load_bundle


def test_metadata_has_the_contract_fields(tiny_bundle):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    for key in ("model_config", "feature_spec", "feature_spec_hash", "labels", "thresholds", "metrics",
                "training_data", "created_at", "version", "train_config"):
        assert key in meta, key
    assert meta["feature_spec_hash"] == features.feature_spec_hash()
    assert meta["labels"] == ["human", "benign_automation", "distillation_harvesting"]
    t = meta["thresholds"]
    assert 0 < t["throttle"] <= t["challenge"] <= t["degrade"] <= t["block"] < 1
    assert meta["training_data"]["sha256"] and meta["training_data"]["sessions"] > 0
    assert "macro_f1" in meta["metrics"]["test"]


def test_feature_spec_mismatch_is_refused(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    meta = json.loads((b / "metadata.json").read_text())
    meta["feature_spec_hash"] = "0" * 16
    meta["feature_spec"]["version"] = 0
    (b / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="feature spec"):
        load_bundle(b)


def test_corrupt_or_incomplete_bundles_are_refused(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(BundleError, match="model.onnx"):
        load_bundle(b)
    (b / "model.onnx").unlink()
    with pytest.raises(BundleError, match="missing model.onnx"):
        load_bundle(b)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "absent")


def test_loaded_bundle_scores_without_nan(tiny_bundle):
    b = load_bundle(tiny_bundle)
    x = np.random.default_rng(0).standard_normal((3, 7, features.N_FEATURES)).astype(np.float32)
    p = b.predict(x)
    assert p.shape == (3, 7, 3) and not np.isnan(p).any()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_the_bundle_temperature_calibrates_what_batch_and_online_read(tiny_bundle):
    from distillguard.serving.bundle import apply_temperature

    b = load_bundle(tiny_bundle)
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert meta["calibration"]["method"] == "temperature"
    assert b.temperature == meta["calibration"]["temperature"] > 0
    x = np.random.default_rng(1).standard_normal((2, 5, features.N_FEATURES)).astype(np.float32)
    raw = b.session.run(["probs"], {"x": x})[0]
    np.testing.assert_allclose(b.predict(x), apply_temperature(raw, b.temperature), atol=1e-6)
    cal = meta["metrics"]["calibration_val"]
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9      # fitted on these sessions
    for action, d in meta["threshold_details"].items():
        assert d["threshold"] == meta["thresholds"][action]


def test_version_names_data_and_weights_not_install_paths(tiny_bundle):
    """version = pkg+<data sha8>.<weights sha8>: equal weights give equal versions wherever
    they were exported (the ONNX bytes carry source paths), other weights another version."""
    import copy
    import re

    import torch

    from distillguard.model.network import NetworkConfig, SessionTransformer
    from distillguard.training.export import weights_sha256

    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert re.fullmatch(r".+\+[0-9a-f]{8}\.[0-9a-f]{8}", meta["version"])
    assert meta["version"].split("+")[1].split(".")[0] == meta["training_data"]["sha256"][:8]
    net = SessionTransformer(NetworkConfig(window=8, d_model=8, n_head=2, n_layer=1, d_ff=16))
    twin = copy.deepcopy(net)
    assert weights_sha256(twin) == weights_sha256(net)
    with torch.no_grad():
        next(twin.parameters()).add_(1e-3)
    assert weights_sha256(twin) != weights_sha256(net)


def test_per_event_chunks_give_the_scores_of_one_window_per_event(tiny_bundle):
    """Batch per-event scoring of a sliding-attention bundle reads chunks of a session with
    R-1 rows of context; each event's score must equal the score of its own window of the
    last W rows (what the online scorer computes), sessions longer than a chunk included."""
    from distillguard.model import windows
    from distillguard.serving.bundle import last_window_probs, load_bundle, per_event_probs

    b = load_bundle(tiny_bundle)
    assert b.receptive_field is not None and b.receptive_field <= b.window
    rng = np.random.default_rng(0)
    lengths = np.array([1, 5, b.window, 300, 700, 3])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rows = rng.standard_normal((int(lengths.sum()), len(b.metadata["feature_spec"]["names"]))).astype(np.float32)
    sr = windows.SessionRows(rows=rows, starts=starts)
    got = per_event_probs(b, sr)
    ends = np.concatenate([np.arange(s + 1, e + 1) for s, e in zip(starts[:-1], starts[1:])])
    owner_start = np.repeat(starts[:-1], lengths)
    want = np.concatenate([last_window_probs(b, rows, ends[i:i + 256], (ends - owner_start)[i:i + 256])
                           for i in range(0, len(ends), 256)])
    np.testing.assert_allclose(got, want, atol=1e-5)
