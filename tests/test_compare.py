"""Champion vs challenger (training/compare.py, `evaluate compare`): real bundles scored
on the same holdout, paired bootstrap over accounts, verdict and its tolerance, the
comparison files and their hashes."""
import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import bundle_variant, tiny_train_config

from distillguard.cli import main
from distillguard.training.compare import CompareConfig, compare_bundles, judge, load_comparison


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()




@pytest.fixture(scope="module")
def shuffled_bundle(tmp_path_factory, sim_data):
    """A deliberately worse challenger: one epoch on labels shuffled across accounts."""
    from distillguard.training.train import train

    d = tmp_path_factory.mktemp("shuffled")
    lab = pd.read_csv(sim_data[1])
    lab["label"] = np.random.default_rng(3).permutation(lab["label"].to_numpy())
    lab.to_csv(d / "labels.csv", index=False)
    train(sim_data[0], d / "labels.csv", d / "bundle", tiny_train_config(d, seed=1, epochs=1), progress=False)
    return d / "bundle"


@pytest.fixture(scope="module")
def trigger_happy(tiny_bundle, tmp_path_factory):
    """tiny_bundle's weights with every action threshold at 0: it acts on every session,
    so its human FPR is 1 while its argmax labels (and so its recalls) equal the champion's."""
    d = tmp_path_factory.mktemp("trigger")
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    zero = {k: 0.0 for k in meta["policy"]["thresholds"]}
    return bundle_variant(tiny_bundle, d / "bundle", policy={**meta["policy"], "thresholds": zero}, thresholds=zero)


@pytest.fixture(scope="module")
def rejected(shuffled_bundle, tiny_bundle, sim_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp-shuffled")
    return compare_bundles(shuffled_bundle, tiny_bundle, *sim_data, out, CompareConfig(n_boot=100)), out


def test_worse_challenger_is_rejected_naming_each_failing_criterion(rejected):
    res, out = rejected
    assert res["verdict"] == "REJECT"
    failing = [c for c in res["criteria"] if c["status"] == "worse"]
    assert failing and len(res["failing"]) == len(failing)
    for c, line in zip(failing, res["failing"]):
        assert c["worse_by"] > c["limit"]
        assert line.startswith(c["name"] + ":") and f"{c['champion']:.4f}" in line and f"{c['challenger']:.4f}" in line
    # every other criterion is within tolerance or better, and says so
    for c in res["criteria"]:
        if c["status"] != "worse":
            assert c["worse_by"] is None or c["worse_by"] <= c["limit"]
    md = (out / "comparison.md").read_text()
    assert "REJECT" in md and all(c["name"] in md for c in failing)
    assert load_comparison(out) == res == json.loads((out / "comparison.json").read_text())


def test_a_model_against_itself_promotes_with_zero_paired_differences(tiny_bundle, sim_data, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "copy")
    res = compare_bundles(copy, tiny_bundle, *sim_data, tmp_path / "cmp", CompareConfig(n_boot=50))
    assert res["verdict"] == "PROMOTE" and res["failing"] == [] and res["improved"] == []
    for name, m in res["metrics"].items():
        if m["champion"] is not None:
            assert m["difference"] == 0.0, name
            assert m["difference_ci95"] == [0.0, 0.0], name


def test_the_tolerance_decides_and_human_fpr_has_its_own(rejected, trigger_happy, tiny_bundle, sim_data, tmp_path):
    res, _ = rejected
    worse = sorted(c["worse_by"] for c in res["criteria"] if c["status"] == "worse")
    # just above the largest shortfall: promoted; just below the smallest: the same criteria fail
    assert judge(res["metrics"], worse[-1] + 1e-6)["verdict"] == "PROMOTE"
    again = judge(res["metrics"], worse[0] - 1e-6)
    assert again["verdict"] == "REJECT"
    assert [c["name"] for c in again["criteria"] if c["status"] == "worse"] == \
        [c["name"] for c in res["criteria"] if c["status"] == "worse"]

    # Same weights, every session acted on: recalls equal, human FPR 1 - only human_fpr fails,
    # and a loose recall tolerance does not loosen the FPR one.
    cmp = compare_bundles(trigger_happy, tiny_bundle, *sim_data, tmp_path / "c",
                          CompareConfig(tolerance=0.5, fpr_tolerance=0.01, n_boot=20))
    assert cmp["metrics"]["human_fpr"]["challenger"] == 1.0
    assert cmp["verdict"] == "REJECT" and len(cmp["failing"]) == 1 and cmp["failing"][0].startswith("human_fpr:")
    assert {c["name"]: c["status"] for c in cmp["criteria"]}["recall.human"] == "within"
    # a tolerance as large as the whole shortfall (the champion may flag no human at all)
    assert judge(cmp["metrics"], 0.01, fpr_tolerance=1.0)["verdict"] == "PROMOTE"
    # the other way round it improves: the champion flags everything
    back = compare_bundles(tiny_bundle, trigger_happy, *sim_data, tmp_path / "d", CompareConfig(n_boot=20))
    assert back["verdict"] == "PROMOTE" and back["improved"][0].startswith("human_fpr:")


def test_intervals_contain_the_point_and_pairing_makes_differences_tight(rejected, trigger_happy, tiny_bundle,
                                                                         sim_data, tmp_path):
    res, _ = rejected
    checked = 0
    for name, m in res["metrics"].items():
        for who in ("champion", "challenger"):
            if m[f"{who}_ci95"] is not None:
                lo, hi = m[f"{who}_ci95"]
                assert lo - 1e-9 <= m[who] <= hi + 1e-9, (name, who)
                checked += 1
    assert checked > 20
    # Same weights: each model's recall varies over resamples, their paired difference cannot.
    cmp = compare_bundles(trigger_happy, tiny_bundle, *sim_data, tmp_path / "c", CompareConfig(n_boot=100))
    for cls in ("human", "distillation_harvesting"):
        m = cmp["metrics"][f"recall.{cls}"]
        assert m["champion_ci95"][1] - m["champion_ci95"][0] > 0.01
        assert m["difference_ci95"] == [0.0, 0.0]


def test_the_json_names_both_bundles_by_hash_and_fingerprints_the_holdout(rejected, shuffled_bundle, tiny_bundle,
                                                                          sim_data):
    res, _ = rejected
    for who, b in (("challenger", shuffled_bundle), ("champion", tiny_bundle)):
        meta = json.loads((b / "metadata.json").read_text())
        assert res[who]["version"] == meta["version"]
        assert res[who]["sha256"]["model.onnx"] == _sha(b / "model.onnx")
        assert res[who]["sha256"]["metadata.json"] == _sha(b / "metadata.json")
    assert res["tolerance"] == 0.01 and res["bootstrap"] == {"unit": "account", "paired": True, "n_boot": 100,
                                                             "seed": 0}
    # tiny_bundle was trained on this very file pair: the fingerprints match and it is said
    assert res["holdout"]["sha256"] == json.loads((tiny_bundle / "metadata.json").read_text())["training_data"]["sha256"]
    assert any("champion's training data" in w for w in res["warnings"])
    assert res["set_sizes"]["champion"] == res["set_sizes"]["challenger"]


def test_bundles_with_other_session_gaps_are_paired_over_accounts(tiny_bundle, sim_data, tmp_path):
    short = bundle_variant(tiny_bundle, tmp_path / "short", session_gap_s=600.0)
    res = compare_bundles(short, tiny_bundle, *sim_data, tmp_path / "c", CompareConfig(n_boot=20))
    assert any("cut sessions differently" in w for w in res["warnings"])
    assert res["set_sizes"]["challenger"]["sessions"] > res["set_sizes"]["champion"]["sessions"]
    assert res["set_sizes"]["challenger"]["accounts"] == res["set_sizes"]["champion"]["accounts"]


def test_a_holdout_without_humans_cannot_pass(tiny_bundle, sim_data, tmp_path):
    lab = pd.read_csv(sim_data[1])
    lab[lab["label"] != "human"].to_csv(tmp_path / "nohuman.csv", index=False)
    res = compare_bundles(tiny_bundle, tiny_bundle, sim_data[0], tmp_path / "nohuman.csv", tmp_path / "c",
                          CompareConfig(n_boot=0))
    assert res["verdict"] == "REJECT" and "no human sessions" in res["failing"][0]
    assert res["not_checked"] == ["recall.human"]


def test_cli_evaluate_with_a_baseline(trigger_happy, tiny_bundle, sim_data, tmp_path, capsys):
    rc = main(["evaluate", "compare", "--model", str(trigger_happy), "--baseline", str(tiny_bundle), "--events",
               str(sim_data[0]), "--labels", str(sim_data[1]), "--report", str(tmp_path / "r"), "--n-boot", "30",
               "--fpr-tolerance", "0.02"])
    out = capsys.readouterr().out
    assert rc == 0 and "verdict: REJECT" in out and "failing: human_fpr" in out
    res = load_comparison(tmp_path / "r" / "comparison.json")
    assert res["fpr_tolerance"] == 0.02 and res["bootstrap"]["n_boot"] == 30
    assert (tmp_path / "r" / "comparison.md").is_file()
    # The old spelling (`evaluate --baseline`) still runs, with a note naming the new one.
    assert main(["evaluate", "--model", str(tiny_bundle), "--baseline", str(tmp_path / "nope"), "--events",
                 str(sim_data[0]), "--labels", str(sim_data[1]), "--report", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "use `distillguard evaluate compare --model" in err
