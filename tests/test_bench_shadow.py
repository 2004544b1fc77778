"""`distillguard bench shadow` (and its old spelling `bench --shadow`): the shadow model's cost, measured side by side."""
import json

import pytest

from distillguard.cli import main


@pytest.mark.slow
def test_shadow_bench_times_both_paths(tiny_bundle, tmp_path, capsys):
    assert main(["bench", "--shadow", "--model", str(tiny_bundle), "--py-events", "200", "--repeats", "1",
                 "--workdir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "shadow_bench.json").read_text())
    assert res["events"] == 200 and res["repeats"] == 3          # at least 3 alternating runs for a median
    for batch in ("batch_1", "batch_32"):
        b = res[batch]
        assert len(b["runs_off_us"]) == len(b["runs_on_us"]) == 3
        assert b["us_per_request_off"] > 0 and b["us_per_request_on"] > 0
        assert b["ratio_on_off"] == pytest.approx(b["us_per_request_on"] / b["us_per_request_off"])
    printed = capsys.readouterr()
    assert "shadow model, requests one at a time" in printed.out
    assert "`bench --shadow` is deprecated, use `distillguard bench shadow ..." in printed.err
