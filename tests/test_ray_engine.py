"""`score --engine ray` on a local Ray instance writes what `--engine local` writes, row by row.

Equality is exact (Arrow tables equal, schema included, after sorting by session_id, and
event_index with --per-event): both engines call the same per-partition function, and
onnxruntime's CPU scores of a window do not depend on which windows share its call.
"""
import json
import os
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from distillguard.serving.harness import free_port
from distillguard.cli import main

for _k, _v in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1",
               "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}.items():
    os.environ.setdefault(_k, _v)

# Ray Data's own DataContext warns about its deprecated fields when it is copied to workers.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def ray_local():
    """One small local Ray instance for the module: 2 CPUs, 200 MB object store, no dashboard."""
    import logging

    import ray   # a missing Ray fails these tests: `make test` installs the `ray` extra

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def _score(bundle, events, out, *extra):
    return main(["score", "--model", str(bundle), "--input", str(events), "--output", str(out), "-q", *extra])


def _sorted(path, per_event=False):
    keys = [("session_id", "ascending")] + ([("event_index", "ascending")] if per_event else [])
    return pq.read_table(path).sort_by(keys)


def _assert_same_rows(a, b, per_event=False):
    ta, tb = _sorted(a, per_event), _sorted(b, per_event)
    assert ta.num_rows == tb.num_rows > 0
    assert ta.schema.equals(tb.schema)
    assert ta.equals(tb)   # exact: every column, every row


@pytest.mark.slow   # starts a local Ray cluster
def test_session_level_output_equals_local(ray_local, tiny_bundle, sim_data, tmp_path, capsys):
    loc, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert _score(tiny_bundle, sim_data[0], loc) == 0
    capsys.readouterr()
    assert _score(tiny_bundle, sim_data[0], ray_out, "--engine", "ray") == 0
    err = capsys.readouterr().err
    assert "on Ray" in err
    _assert_same_rows(loc, ray_out)
    # The run really was partitioned (2 CPUs -> 2 actors, 8 partitions): sessions still whole.
    ev = pq.read_table(sim_data[0])
    assert sum(pq.read_table(ray_out)["n_events"].to_pylist()) == ev.num_rows


@pytest.mark.slow   # starts a local Ray cluster
def test_per_event_output_equals_local(ray_local, tiny_bundle, sim_data, tmp_path):
    loc, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert _score(tiny_bundle, sim_data[0], loc, "--per-event") == 0
    assert _score(tiny_bundle, sim_data[0], ray_out, "--per-event", "--engine", "ray", "--actors", "1") == 0
    _assert_same_rows(loc, ray_out, per_event=True)


def _bad_csv(sim_data, tmp_path):
    df = pd.read_parquet(sim_data[0]).head(4000).copy()
    df["ts"] = df["ts"].astype(str)
    df.loc[10, "ts"] = "soon"
    df.loc[1500, "completion_tokens"] = -1
    df.loc[3999, "account_id"] = ""
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.slow   # starts a local Ray cluster
def test_bad_input_skip_and_fail_behave_the_same(ray_local, tiny_bundle, sim_data, tmp_path, capsys):
    bad = _bad_csv(sim_data, tmp_path)
    loc, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert _score(tiny_bundle, bad, loc, "--on-error", "skip") == 0
    assert _score(tiny_bundle, bad, ray_out, "--on-error", "skip", "--engine", "ray") == 0
    _assert_same_rows(loc, ray_out)
    rej = [sorted(json.dumps(json.loads(x), sort_keys=True) for x in
                  (p.with_name(p.name + ".rejects.jsonl")).read_text().splitlines()) for p in (loc, ray_out)]
    assert len(rej[0]) == 3 and rej[0] == rej[1]
    # fail mode: the same clear error, naming the row, and no output under the final name
    capsys.readouterr()
    errs = []
    for engine in ("local", "ray"):
        out = tmp_path / f"fail-{engine}.parquet"
        assert _score(tiny_bundle, bad, out, "--engine", engine) == 2
        assert not out.exists()
        errs.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert errs[0] == errs[1] and "row" in errs[0] and str(bad) in errs[0]


@pytest.mark.slow   # starts a local Ray cluster
def test_few_accounts_empty_partitions_and_spill_dir(ray_local, tiny_bundle, sim_data, tmp_path):
    # Two accounts: most of the 8 partitions are empty. CSV output, compared byte for byte.
    df = pd.read_parquet(sim_data[0])
    small = tmp_path / "two.parquet"
    df[df["account_id"].isin(df["account_id"].unique()[:2])].to_parquet(small)
    spill = tmp_path / "spill"
    spill.mkdir()
    loc, ray_out = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert _score(tiny_bundle, small, loc) == 0
    assert _score(tiny_bundle, small, ray_out, "--engine", "ray", "--spill-dir", str(spill)) == 0
    assert loc.read_bytes() == ray_out.read_bytes() and len(loc.read_text().splitlines()) > 1
    assert list(spill.iterdir()) == []   # partitions removed after the run


@pytest.mark.slow
def test_unreachable_address_is_a_clear_error(tiny_bundle, sim_data, tmp_path, capsys):
    out = tmp_path / "o.parquet"
    addr = f"127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    assert _score(tiny_bundle, sim_data[0], out, "--engine", "ray", "--address", addr) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert f"cannot reach a Ray cluster at {addr}" in err and "ray start --head" in err
    assert "Traceback" not in err and not out.exists()
    assert _score(tiny_bundle, sim_data[0], out, "--engine", "ray", "--address", "nohost") == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_ray_options_need_engine_ray(tiny_bundle, sim_data, tmp_path, capsys):
    assert _score(tiny_bundle, sim_data[0], tmp_path / "o.parquet", "--address", "127.0.0.1:6379") == 2
    assert "need --engine ray" in capsys.readouterr().err


def test_missing_ray_is_a_clear_error(monkeypatch):
    from distillguard.serving.batch_ray import RayEngineError, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)   # what `import ray` meets when it is not installed
    with pytest.raises(RayEngineError, match=r"pip install 'distillguard\[ray\]'"):
        import_ray()
