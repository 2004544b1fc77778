"""`distillguard bench verdicts`: what occlusion reasons cost beside rule checks, side by side."""
import json

import pytest

from distillguard.cli import main
from distillguard.serving import DEFAULT_BUNDLE


@pytest.mark.slow
def test_verdicts_bench_times_both_reason_paths(tmp_path, capsys):
    # The shipped bundle: it acts on enough of the simulated traffic to explain some of it.
    assert main(["bench", "verdicts", "--model", str(DEFAULT_BUNDLE), "--py-events", "600", "--repeats", "1",
                 "--workdir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "verdicts_bench.json").read_text())
    assert res["events"] == 600
    b1 = res["batch_1"]
    assert b1["occlusion"]["explained_share"] > 0 and b1["rules"]["explained_share"] == 0
    for k in ("occlusion", "rules"):
        assert 0 < b1[k]["p50_us"] <= b1[k]["p99_us"] and res["batch_32"][k]["us_per_request"] > 0
    assert "reasons by occlusion vs rule checks" in capsys.readouterr().out


def test_verdicts_bench_refuses_a_bundle_without_a_baseline(tiny_bundle, tmp_path):
    import shutil

    b = shutil.copytree(tiny_bundle, tmp_path / "old")
    meta = json.loads((b / "metadata.json").read_text())
    del meta["occlusion_baseline"]
    (b / "metadata.json").write_text(json.dumps(meta))
    from distillguard.benchmarks.bench_verdicts import run_verdicts_bench

    with pytest.raises(ValueError, match="no occlusion baseline"):
        run_verdicts_bench(b, events=50, repeats=1, workdir=tmp_path)
