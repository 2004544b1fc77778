"""`bench templates`: the template extractor on real YAML files and the metrics on prompt
sets whose answer is known; one tiny run on lm-eval's installed task configs (installed by
`make install` with --no-deps: missing it fails here, it is not skipped)."""
from __future__ import annotations

import json

import pytest

from distillguard.benchmarks import bench_templates as bt
from distillguard.model import templates as T


def _tree(tmp_path):
    (tmp_path / "fam_a").mkdir()
    (tmp_path / "cmmlu").mkdir()
    (tmp_path / "fam_a" / "_base").write_text("doc_to_text: \"Passage: {{passage}}\\nQuestion: {{question}}\\nAnswer:\"\n")
    (tmp_path / "fam_a" / "t1.yaml").write_text("include: _base\ntask: t1\n")
    (tmp_path / "fam_a" / "t2.yaml").write_text("task: t2\ndoc_to_text: \"Passage:  {{p}}\\nQuestion: {{q}}\\nAnswer:\"\n")
    (tmp_path / "fam_a" / "t3.yaml").write_text("task: t3\ndoc_to_text: !function utils.doc_to_text\n")
    (tmp_path / "fam_a" / "t4_de.yaml").write_text(
        "task: t4\ndescription: \"Die folgenden Fragen betreffen Anatomie.\\n\\n\"\ndoc_to_text: \"{{q}}\\nAntwort:\"\n")
    (tmp_path / "fam_a" / "t5.yaml").write_text("task: t5\ndoc_to_text: '{% for x in xs %}{{x}}{% endfor %}'\n")
    (tmp_path / "fam_a" / "t6.yaml").write_text("task: t6\ndoc_to_text: question\n")
    (tmp_path / "cmmlu" / "c.yaml").write_text("task: c\ndoc_to_text: '以下是关于{{subject}}的单项选择题'\n")
    return tmp_path


def test_extractor_inherits_dedupes_and_leaves_out_held_out_suites(tmp_path):
    ts = bt.collection(_tree(tmp_path))
    fixed = sorted(t.fixed for t in ts)
    # t1 (via include) and t2 have the same fixed words: one template; t3 (a Python hook),
    # t5 (control flow), t6 (a bare column) and cmmlu are not templates here.
    assert fixed == sorted(["Passage: Question: Answer:", "Die folgenden Fragen betreffen Anatomie. Antwort:"])
    assert {t.lang for t in ts} == {"en", "de"}


def test_metrics_tell_a_good_signature_from_a_bad_one(tmp_path, monkeypatch):
    ts = bt.collection(_tree(tmp_path))
    good = bt.measure(ts, per_template=4, cross_pairs=50, unrelated=20)
    assert good["languages"]["en"]["agreement"] == 1.0
    # A signature of the whole text: prompts of one template never agree.
    monkeypatch.setattr(bt.T, "frame_signature", lambda text, key=None: T.legacy_signature(text))
    bad = bt.measure(ts, per_template=4, cross_pairs=50, unrelated=20)
    assert bad["languages"]["en"]["agreement"] == 0.0
    assert bad["languages"]["en"]["share_split"] == 1.0


def test_half_the_prompts_have_long_slots(tmp_path):
    res = bt.measure(bt.collection(_tree(tmp_path)), per_template=4, cross_pairs=10, unrelated=10)
    assert res["share_long_slots_ge_80pct"] == 1.0   # every long prompt: slots >= 80% of characters


@pytest.mark.slow
def test_cli_on_lm_eval_task_configs(tmp_path):
    from distillguard.cli import main

    assert bt.tasks_dir().is_dir()
    assert main(["bench", "templates", "--collection", "tune", "--limit", "40", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "summary.json").read_text())
    assert res["collection"] == "tune" and res["n_templates"] == 40
    assert all(bt.split_of(t.split("/")[0]) == "tune" for t in (w["task"] for w in res["worst_templates"]))
    assert (tmp_path / "table.md").read_text().startswith("| language |")
