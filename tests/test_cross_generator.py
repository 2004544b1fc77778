"""Cross-generator evaluation and the README tables rendered from its report."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_NET

from distillguard.training.cross_generator import FAMILY_COLUMNS, upper95


def test_upper_bound_when_nothing_is_flagged_is_the_exact_binomial_one():
    # 0 of 3000 flagged: the bootstrap collapses to [0, 0]; the bound must not.
    assert upper95(0.0, [0.0, 0.0], 3000) == pytest.approx(1 - 0.05 ** (1 / 3000))
    assert 0.00099 < upper95(0.0, [0.0, 0.0], 3000) < 0.00101
    assert upper95(0.2, [0.15, 0.26], 100) == 0.26
    assert upper95(None, None, 10) is None


@pytest.fixture(scope="module")
def cross_report(tmp_path_factory, tiny_bundle):
    from distillguard.training.cross_generator import run_cross_generator
    from distillguard.training.train import TrainConfig

    out = tmp_path_factory.mktemp("cross")
    cfg = TrainConfig(seed=0, epochs=1, batch_size=64, network=TINY_NET)
    rep = run_cross_generator(out, tiny_bundle, test_accounts_b=400, test_accounts_a=300, days=2.0,
                              train_events=15_000, train_days=2.0, epochs=1, train_config=cfg, n_boot=20,
                              progress=False)
    return out, rep


@pytest.mark.slow
def test_cross_generator_writes_the_matrix_and_per_family_tables(cross_report):
    from distillguard.training.generator_b import FAMILY_LABEL_B
    from distillguard.training.simulate import FAMILY_LABEL

    out, rep = cross_report
    assert set(rep["cells"]) == {"a->a", "a->b", "b->a", "b->b", "a->b hash-only", "b->a hash-only"}
    assert [k for k, c in rep["cells"].items() if c["cross"] and not c["hash_only"]] == ["a->b", "b->a"]
    # The hash-only copies hold the same sessions; only how frames are carried differs.
    for k in ("a->b", "b->a"):
        h = rep["cells"][f"{k} hash-only"]
        assert h["hash_only"] and h["summary"]["sessions"] == rep["cells"][k]["summary"]["sessions"]
        assert {r["family"] for r in rep["table"][f"{k} hash-only"]} == {r["family"] for r in rep["table"][k]}
    # Per-family rows for the off-diagonal cells, each family of the test generator that has sessions.
    fam_b = {r["family"] for r in rep["table"]["a->b"]}
    fam_a = {r["family"] for r in rep["table"]["b->a"]}
    assert fam_b and fam_b <= set(FAMILY_LABEL_B)
    assert fam_a and fam_a <= set(FAMILY_LABEL)
    for rows, labels in ((rep["table"]["a->b"], FAMILY_LABEL_B), (rep["table"]["b->a"], FAMILY_LABEL)):
        for r in rows:
            assert set(r) == set(FAMILY_COLUMNS)
            assert r["true_class"] == labels[r["family"]]
            assert 0.0 <= r["recall_true_class"] <= 1.0
            if r["flagged_distillation_1%"] is not None:
                assert r["flagged_distillation_1%_upper95"] >= r["flagged_distillation_1%"]
    # The B-trained check model really was trained on B, and the files are what the report says.
    meta = json.loads((out / "models" / "trained_on_b" / "metadata.json").read_text())
    assert meta["training_data"]["generator"] == "b"
    disk = json.loads((out / "cross_generator.json").read_text())
    assert disk["cells"]["a->b"]["summary"] == rep["cells"]["a->b"]["summary"]
    md = (out / "cross_generator.md").read_text()
    assert "A → B (cross)" in md and "B → A (cross)" in md and "A → B (cross), hash-only copy" in md
    assert (out / "cross_generator.png").stat().st_size > 10_000


@pytest.mark.slow
def test_cross_cells_score_the_sets_they_name(cross_report):
    """The in-distribution cell of the shipped model re-scored here gives the same figure:
    the matrix is computed from the sets on disk, not carried over from elsewhere."""
    from distillguard.serving.bundle import load_bundle
    from distillguard.training.cross_generator import load_prepared, score_set

    out, rep = cross_report
    b = load_bundle(rep["models"]["a"]["bundle"])
    p = load_prepared(out / "data" / "test_b" / "events.parquet", out / "data" / "test_b" / "labels.csv", b.gap_s)
    again = score_set(b, p, n_boot=0, seed=0, per_family=False)["summary"]
    s = rep["cells"]["a->b"]["summary"]
    assert again["macro_f1"] == pytest.approx(s["macro_f1"])
    assert again["human_acted_on_by_policy"] == pytest.approx(s["human_acted_on_by_policy"])
    assert again["sessions_per_class"] == s["sessions_per_class"]


README = """# title

Intro text that must stay.

<!-- report:cross_generator -->
old table
<!-- /report:cross_generator -->

Between.
<!-- report:cross_generator_families -->
<!-- /report:cross_generator_families -->
Tail.
"""


@pytest.mark.slow
def test_readme_tables_come_from_the_report(cross_report, tmp_path):
    from distillguard.training.report_tables import update_readme

    out, rep = cross_report
    reports = tmp_path / "reports"
    (reports / "cross_generator").mkdir(parents=True)
    (reports / "cross_generator" / "cross_generator.json").write_text((out / "cross_generator.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert update_readme(readme, reports) == ["cross_generator", "cross_generator_families"]
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# title\n\nIntro text that must stay.\n") and "\nBetween.\n" in text
    assert text.endswith("Tail.\n")
    macro = rep["cells"]["a->b"]["summary"]["macro_f1"]
    assert f"{macro:.3f}" in text
    for r in rep["table"]["a->b"]:
        assert f"| {r['family']} |" in text
    # Idempotent: a second run changes nothing.
    update_readme(readme, reports)
    assert readme.read_text() == text


def test_readme_update_refuses_bad_markers_and_missing_reports(tmp_path):
    from distillguard.training.report_tables import ReportMissing, update_readme

    readme = tmp_path / "README.md"
    for bad, err in (("<!-- report:holdout -->\nx\n", ValueError),
                     ("<!-- /report:holdout -->\n", ValueError),
                     ("<!-- report:nosuch -->\n<!-- /report:nosuch -->\n", KeyError),
                     ("<!-- report:holdout -->\n<!-- /report:holdout -->\n", ReportMissing)):
        readme.write_text(bad)
        with pytest.raises(err):
            update_readme(readme, tmp_path / "reports")
        assert readme.read_text() == bad          # left as it was


def test_readme_script_names_the_missing_report(tmp_path, capsys):
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("readme_tables", root / "scripts" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- report:in_distribution -->\n<!-- /report:in_distribution -->\n")
    assert mod.main(["--reports", str(tmp_path / "r"), "--readme", str(readme)]) == 1
    assert "eval/metrics.json: not found; run `make report`" in capsys.readouterr().err


def test_the_readme_marks_every_report_table():
    from distillguard.training.report_tables import RENDERERS, blocks

    root = Path(__file__).resolve().parents[1]
    assert sorted(blocks((root / "README.md").read_text())) == sorted(RENDERERS)
