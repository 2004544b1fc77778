"""The shipped default bundle matches this code's feature spec and scores the examples."""
from pathlib import Path

import pandas as pd

from distillguard.cli import main
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.serving.bundle import load_bundle

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_default_bundle_loads_with_this_feature_spec():
    # Fails after a feature change until `make model` rebuilds the bundle.
    b = load_bundle(DEFAULT_BUNDLE)
    assert b.window == 32 and b.metadata["training_data"]["simulated"]["seed"] == 0


def test_readme_example_commands_run(tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score", "--input", str(EXAMPLES / "events.csv"), "--output", str(out), "-q"]) == 0
    df = pd.read_csv(out)
    labels = pd.read_csv(EXAMPLES / "labels.csv")
    assert set(df["account_id"]) == set(labels["account_id"])
    # the default model tells the example's classes apart far better than chance
    merged = df.merge(labels, on="account_id", suffixes=("_pred", ""))
    assert (merged["label_pred"] == merged["label"]).mean() > 0.8
    assert main(["score", "--input", str(EXAMPLES / "events_with_prompts.csv"),
                 "--output", str(tmp_path / "p.csv"), "-q"]) == 0
    assert main(["evaluate", "--events", str(EXAMPLES / "events.csv"), "--labels", str(EXAMPLES / "labels.csv"),
                 "--report", str(tmp_path / "rep"), "-q"]) == 0
    assert (tmp_path / "rep" / "report.md").exists()
