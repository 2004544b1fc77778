"""Held-out-family evaluation end to end on a tiny run (the full run is `make report`)."""
import json
import math

import pandas as pd
import pytest

from distillguard.model.network import NetworkConfig
from distillguard.training import holdout
from distillguard.training.train import TrainConfig

pytestmark = pytest.mark.slow   # one training per held-out family

FAMS = ("harvest_mimic", "benign_scheduled_job")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("holdout")
    cfg = TrainConfig(batch_size=64, network=NetworkConfig(window=16, d_model=16, n_head=2, n_layer=1, d_ff=32))
    rep = holdout.run_holdout(out, families=FAMS, seed=3, train_accounts=60, test_accounts=80, days=1.0,
                              epochs=1, train_config=cfg, n_boot=20, progress=False)
    return out, rep


def test_table_has_every_held_out_family_and_detector_with_all_columns(run):
    _, rep = run
    rows = rep["table"]
    assert {(r["family"], r["detector"]) for r in rows} == {(f, d) for f in FAMS
                                                            for d in (*holdout.DETECTORS, holdout.HASH_ONLY)}
    for r in rows:
        assert tuple(r) == holdout.TABLE_COLUMNS
        assert r["test_sessions"] > 0
    assert rep["families"]["harvest_mimic"]["true_class"] == "distillation_harvesting"
    assert rep["families"]["benign_scheduled_job"]["true_class"] == "benign_automation"


def test_held_out_family_absent_from_its_training_data(run):
    out, rep = run
    for f in FAMS:
        lab = pd.read_csv(out / "data" / f"train_{f}" / "labels.csv")
        assert f not in set(lab["family"])
        # the other held-out family was asked for there (60 accounts may leave it without events)
        assert f not in rep["families"][f]["train"]["families"]
        assert set(FAMS) - {f} <= set(rep["families"][f]["train"]["families"])
    test_lab = pd.read_csv(out / "data" / "test" / "labels.csv")
    assert set(FAMS) <= set(test_lab["family"])


def test_values_in_range(run):
    _, rep = run
    for r in rep["table"]:
        for k in ("recall_true_class", "flagged_distillation_1%", "flagged_distillation_0.1%"):
            v = r[k]
            assert v is None or 0.0 <= v <= 1.0, (k, v)
            ci = r[f"{k}_ci95"]
            assert ci is None or 0.0 <= ci[0] <= ci[1] <= 1.0
        if r["detector"] == "transformer":
            m = r["median_events_to_detection_1%"]
            assert m == "never" or (m is not None and 1 <= m)
            assert 0.0 <= r["detected_share_1%"] <= 1.0
        else:
            assert r["median_events_to_detection_1%"] is None
    # rules never predict benign automation
    rules = next(r for r in rep["table"] if r["family"] == "benign_scheduled_job" and r["detector"] == "rules")
    assert rules["recall_true_class"] == 0.0
    ed = rep["early_detection"]
    curve = ed["held_out"]["recall"]
    assert len(curve) == holdout.CURVE_MAX_EVENTS == len(ed["events"])
    assert all(0.0 <= a <= b <= 1.0 for a, b in zip(curve, curve[1:]))   # more events, never fewer detections
    assert rep["test_set"]["sessions_per_class"]["human"] > 0
    assert not rep["reliability"]["0.1%"]["reliable"]


def test_files_written(run):
    out, rep = run
    for name in ("holdout.json", "holdout.md", "holdout_families.png", "early_detection.png"):
        assert (out / name).stat().st_size > 0, name
    for f in FAMS:
        assert (out / "models" / f / "model.onnx").exists()
    assert json.loads((out / "holdout.json").read_text())["config"]["families"] == list(FAMS)
    md = (out / "holdout.md").read_text()
    assert all(f in md for f in FAMS) and "NOT reliable" in md
    assert not any(isinstance(v, float) and math.isnan(v) for r in rep["table"] for v in r.values())
