"""Model registry (serving/registry.py), the promote/rollback/registry verbs and hot reload:
real bundle copies, real symlinks and flock, a real gRPC server switching models while a
client keeps scoring, and `serve --workers 2` processes each following the pointers."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from conftest import bundle_variant

from distillguard.cli import main
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.serving.bundle import BundleError
from distillguard.serving.registry import Registry, RegistryError, bundle_hashes
from distillguard.serving.server import ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc
from distillguard.training.compare import CompareConfig, StaleComparison, compare_bundles, promote

T0 = 1_780_000_000.0




@pytest.fixture(scope="module")
def bundles(tiny_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("variants")
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    zero = {k: 0.0 for k in meta["policy"]["thresholds"]}
    return {
        "tiny": tiny_bundle,
        # acts on every session: human FPR 1, recalls unchanged -> the gate refuses it
        "worse": bundle_variant(tiny_bundle, d / "worse", policy={**meta["policy"], "thresholds": zero}, thresholds=zero),
        # scores exactly like tiny (an inert metadata field differs) -> the gate passes it
        "same_a": bundle_variant(tiny_bundle, d / "same_a", note="a"),
        "same_b": bundle_variant(tiny_bundle, d / "same_b", note="b"),
    }


def _reg(tmp_path, name="reg"):
    return Registry.init(tmp_path / name)


# ---------------------------------------------------------------------------- the directory


def test_add_copies_dedupes_by_content_and_refuses_bad_bundles(bundles, tmp_path):
    reg = _reg(tmp_path)
    assert reg.add(bundles["tiny"]) == "v0001"
    assert reg.add(shutil.copytree(bundles["tiny"], tmp_path / "copy")) == "v0001"    # same files, same version
    assert reg.add(bundles["worse"]) == "v0002"                                       # metadata counts
    v1 = reg.path_of("v0001")
    assert bundle_hashes(v1) == bundle_hashes(bundles["tiny"])
    assert oct((v1 / "model.onnx").stat().st_mode & 0o777) == "0o444"
    bad = shutil.copytree(bundles["tiny"], tmp_path / "bad")
    (bad / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(BundleError, match="model.onnx cannot be loaded"):
        reg.add(bad)
    (tmp_path / "half").mkdir()
    shutil.copy(bundles["tiny"] / "model.onnx", tmp_path / "half")
    with pytest.raises(BundleError, match="missing metadata.json"):
        reg.add(tmp_path / "half")
    assert reg.versions() == ["v0001", "v0002"]
    assert [p.name for p in reg.versions_dir.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(RegistryError, match="not a model registry"):
        Registry(tmp_path / "copy")
    with pytest.raises(RegistryError, match="non-empty directory"):
        Registry.init(tmp_path / "copy")


def test_promotions_stack_and_rollback_walks_back(bundles, tmp_path):
    reg = _reg(tmp_path)
    names = [reg.add(bundles[k]) for k in ("tiny", "worse", "same_a")]
    for n in names:
        reg.set_current(n)
    assert reg.current() == "v0003" and reg.rollback_stack() == ["v0001", "v0002"]
    assert reg.rollback()["to"] == "v0002" and reg.current() == "v0002"
    assert reg.rollback()["to"] == "v0001" and reg.current() == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback()
    reg.set_current("v0003", action="force", note="hotfix")
    assert reg.rollback()["to"] == "v0001"
    h = reg.history()
    assert [(e["action"], e["from"], e["to"]) for e in h] == [
        ("promote", None, "v0001"), ("promote", "v0001", "v0002"), ("promote", "v0002", "v0003"),
        ("rollback", "v0003", "v0002"), ("rollback", "v0002", "v0001"), ("force", "v0001", "v0003"),
        ("rollback", "v0003", "v0001")]
    forced = h[5]
    assert forced["forced"] is True and forced["note"] == "hotfix" and forced["user"]
    assert forced["bundle_version"] == json.loads((bundles["same_a"] / "metadata.json").read_text())["version"]
    assert forced["time"].endswith("Z")
    # an append cut short by a crash (no newline) is skipped; a broken line before others is an error
    text = reg.history_path.read_text()
    reg.history_path.write_text(text + '{"time": "2026-')
    assert len(reg.history()) == 7 and reg.rollback_stack() == []
    reg.history_path.write_text('{"time": \n' + text)
    with pytest.raises(RegistryError, match="line 1 is not valid JSON"):
        reg.history()
    reg.history_path.write_text(text)
    # shadow: set, and cleared when its version is promoted
    reg.set_shadow("v0002")
    assert reg.shadow() == "v0002" and os.readlink(reg.root / "shadow") == "versions/v0002"
    reg.set_current("v0002")
    assert reg.shadow() is None and reg.history()[-1]["action"] == "shadow"


def test_pointer_swaps_are_atomic_for_readers(bundles, tmp_path):
    reg = _reg(tmp_path)
    a, b = reg.add(bundles["tiny"]), reg.add(bundles["worse"])
    reg.set_current(a)
    seen, errors, done = set(), [], threading.Event()

    def read():
        while not done.is_set():
            try:
                seen.add(os.readlink(reg.root / "current"))
            except OSError as e:
                errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    for i in range(200):
        reg.set_current(b if i % 2 == 0 else a)
    done.set()
    t.join()
    assert errors == [] and seen == {"versions/v0001", "versions/v0002"}
    assert sorted(p.name for p in reg.root.iterdir()) == [".lock", "current", "history.jsonl", "versions"]


def test_the_lock_makes_another_process_wait(bundles, tmp_path):
    reg = _reg(tmp_path)
    for k in ("tiny", "worse"):
        reg.set_current(reg.add(bundles[k]))
    code = ("import sys; from distillguard.serving.registry import Registry; r = Registry(sys.argv[1]); "
            "print('ready', flush=True); r.rollback(); print('done', flush=True)")
    with reg.lock():
        p = subprocess.Popen([sys.executable, "-c", code, str(reg.root)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        assert p.poll() is None and reg.current() == "v0002"     # waiting on REG/.lock
    assert p.stdout.readline().strip() == "done" and p.wait(30) == 0
    assert reg.current() == "v0001"


def test_two_promotions_against_one_champion_cannot_both_land(bundles, sim_data, tmp_path):
    reg = _reg(tmp_path)
    reg.set_current(reg.add(bundles["tiny"]))
    comps = {}
    for k in ("same_a", "same_b"):
        comps[k] = tmp_path / f"cmp-{k}"
        assert compare_bundles(bundles[k], reg.root, *sim_data, comps[k], CompareConfig(n_boot=0))["verdict"] == "PROMOTE"
    results, barrier = {}, threading.Barrier(2)

    def go(k):
        barrier.wait()
        try:
            results[k] = promote(reg.root, bundles[k], comparison=comps[k])["version"]
        except StaleComparison as e:
            results[k] = e

    threads = [threading.Thread(target=go, args=(k,)) for k in comps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [k for k, v in results.items() if isinstance(v, str)]
    lost = [k for k, v in results.items() if isinstance(v, StaleComparison)]
    assert len(won) == 1 and len(lost) == 1 and "stale" in str(results[lost[0]])
    assert [e["action"] for e in reg.history()] == ["promote", "promote"]
    assert bundle_hashes(reg.current_path()) == bundle_hashes(bundles[won[0]])


# ---------------------------------------------------------------------------- the verbs


def test_promote_gate_refuses_worse_and_stale_and_force_is_recorded(bundles, sim_data, tmp_path, capsys):
    reg = str(tmp_path / "reg")
    ev, lab = map(str, sim_data)
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["tiny"])]) == 2     # no registry yet
    assert "registry --registry" in capsys.readouterr().err
    assert main(["registry", "--registry", reg, "--init"]) == 0
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["tiny"])]) == 0     # first: no gate
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["worse"])]) == 1    # no comparison
    assert "needs a comparison" in capsys.readouterr().err

    cmp_dir = tmp_path / "cmp"
    assert main(["evaluate", "--model", str(bundles["worse"]), "--baseline", reg, "--events", ev, "--labels", lab,
                 "--report", str(cmp_dir), "--n-boot", "20"]) == 0
    capsys.readouterr()
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["worse"]), "--comparison", str(cmp_dir)]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "human_fpr: champion" in err and "worse by" in err
    assert Registry(reg).current() == "v0001" and Registry(reg).versions() == ["v0001"]   # not even added
    # a comparison of another challenger is stale
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["same_a"]), "--comparison",
                 str(cmp_dir / "comparison.json")]) == 1
    assert "stale" in capsys.readouterr().err
    # a looser human-FPR tolerance re-judges the stored differences
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["worse"]), "--comparison", str(cmp_dir),
                 "--fpr-tolerance", "1.0"]) == 0
    assert main(["rollback", "--registry", reg]) == 0
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["worse"]), "--comparison", str(cmp_dir),
                 "--force", "--note", "incident 42"]) == 0
    last = Registry(reg).history()[-1]
    assert last["action"] == "force" and last["forced"] is True and last["note"] == "incident 42"
    assert last["comparison"]["verdict"] == "REJECT" and last["comparison"]["failing"][0].startswith("human_fpr")
    assert last["comparison"]["sha256"] and last["from"] == "v0001" and last["to"] == "v0002"
    # --events/--labels: the comparison is computed now, against the current version, and kept
    assert main(["promote", "--registry", reg, "--bundle", str(bundles["same_a"]), "--events", ev, "--labels", lab,
                 "--n-boot", "0"]) == 0
    last = Registry(reg).history()[-1]
    assert (last["action"], last["from"], last["to"], last["forced"]) == ("promote", "v0002", "v0003", False)
    assert last["comparison"]["verdict"] == "PROMOTE" and last["comparison"]["improved"][0].startswith("human_fpr")
    stored = list((tmp_path / "reg" / "comparisons").glob("*/comparison.json"))
    assert [str(p) for p in stored] == [last["comparison"]["path"]]
    capsys.readouterr()
    assert [main(["rollback", "--registry", reg]) for _ in range(3)] == [0, 0, 1]
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["registry", "--registry", reg, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["current"] == "v0001" and [v["name"] for v in listing["versions"]] == ["v0001", "v0002", "v0003"]
    assert main(["registry", "--registry", reg]) == 0
    out = capsys.readouterr().out
    assert "current v0001" in out and "FORCED" in out and "(incident 42)" in out


# ---------------------------------------------------------------------------- hot reload


def _version(bundle):
    return json.loads((bundle / "metadata.json").read_text())["version"]


def _wait(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _req(account, i):
    return pb.ScoreRequest(account_id=account, event_id=f"e{i}", ts=T0 + i, prompt_tokens=120, max_tokens=512,
                           template_hash="00000000000000aa")


def test_promote_and_rollback_switch_a_running_server_without_a_failed_request(bundles, tmp_path):
    reg = _reg(tmp_path)
    reg.set_current(reg.add(DEFAULT_BUNDLE))          # window 32: the session ring holds tiny's 16 too
    srv, port = create_server("127.0.0.1:0", reg.root, ServeConfig(registry_poll_s=0.1))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.ScorerStub(channel)
    v_default, v_tiny = _version(DEFAULT_BUNDLE), _version(bundles["tiny"])
    seen, errors, done = [], [], threading.Event()

    def client():       # one caller, so the versions it sees are in serving order
        i = 0
        while not done.is_set():
            try:
                seen.append(stub.Score(_req(f"hot-{i % 5}", i), timeout=10).model_version)
            except grpc.RpcError as e:
                errors.append(e)
            i += 1

    t = threading.Thread(target=client)
    try:
        assert stub.Score(_req("first", 0), timeout=10).model_version == v_default
        t.start()
        assert _wait(lambda: len(seen) > 20)
        assert main(["promote", "--registry", str(reg.root), "--bundle", str(bundles["tiny"]), "--force"]) == 0
        assert _wait(lambda: seen[-1] == v_tiny), "the server did not switch to the promoted version"
        assert srv.scorer.bundle.path == reg.root / "versions" / "v0002"
        n = len(seen)
        assert _wait(lambda: len(seen) > n + 20)
        assert main(["promote", "--registry", str(reg.root), "--bundle", str(bundles["worse"]), "--shadow"]) == 0
        assert _wait(lambda: srv.scorer.shadow_bundle is not None and srv.scorer.shadow_bundle.path.name == "v0003")
        assert main(["registry", "--registry", str(reg.root), "--clear-shadow"]) == 0
        assert _wait(lambda: srv.scorer.shadow_bundle is None)
        assert main(["rollback", "--registry", str(reg.root)]) == 0
        assert _wait(lambda: seen[-1] == v_default), "the server did not follow the rollback"
        n = len(seen)
        assert _wait(lambda: len(seen) > n + 20)
    finally:
        done.set()
        if t.is_alive():
            t.join()
        channel.close()
        srv.stop(0)
    assert errors == []
    runs = [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
    assert runs == [v_default, v_tiny, v_default]          # one switch each way, never back and forth
    assert srv.metrics.registry.get_sample_value("distillguard_reloads_total", {"result": "ok"}) == 2
    assert not srv.registry_watcher._thread.is_alive()     # stopped with the server


def test_reload_re_resolves_current_and_a_refused_version_keeps_the_old_model(bundles, tmp_path):
    reg = _reg(tmp_path)
    with pytest.raises(RegistryError, match="no current version yet"):
        create_server("127.0.0.1:0", reg.root)
    reg.set_current(reg.add(bundles["tiny"]))
    with pytest.raises(ValueError, match="shadow pointer"):
        create_server("127.0.0.1:0", reg.root, ServeConfig(shadow_model=bundles["worse"]))
    shadow = reg.add(bundles["worse"])
    reg.set_shadow(shadow)
    # a poll interval this long leaves the watcher to the explicit calls below
    srv, port = create_server("127.0.0.1:0", reg.root, ServeConfig(registry_poll_s=3600))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.ScorerStub(channel)
    refused = lambda: srv.metrics.registry.get_sample_value("distillguard_reloads_total", {"result": "refused"})  # noqa: E731
    try:
        # started with the shadow pointer's version as its shadow model; a poll changes nothing
        assert srv.scorer.shadow_bundle.path.name == shadow and srv.registry_watcher.poll() == []
        reg.clear_shadow()
        assert srv.registry_watcher.poll() == ["shadow"] and srv.scorer.shadow_bundle is None
        same_a = reg.add(bundles["same_a"])
        reg.set_current(same_a)
        stub.Reload(pb.ReloadRequest(), timeout=30)           # no path: the registry's current, not the old path
        assert srv.scorer.bundle.path.name == same_a
        reg.set_current("v0001")
        srv.reload()                                          # SIGHUP's path
        assert srv.scorer.bundle.path.name == "v0001"
        # window 32 > the ring this server was started with (tiny's 16): refused, old model serves
        reg.set_current(reg.add(DEFAULT_BUNDLE))
        assert srv.registry_watcher.poll() == [] and srv.registry_watcher.poll() == []
        assert srv.scorer.bundle.path.name == "v0001" and refused() == 1     # not retried every poll
        assert stub.Score(_req("after-refusal", 0), timeout=10).model_version == _version(bundles["tiny"])
        with pytest.raises(grpc.RpcError) as e:
            stub.Reload(pb.ReloadRequest(), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "old model keeps serving" in e.value.details()
        reg.set_current(same_a)
        assert srv.registry_watcher.poll() == ["current"] and srv.scorer.bundle.path.name == same_a
    finally:
        channel.close()
        srv.stop(0)


def test_every_worker_follows_the_registry(bundles, tmp_path):
    from test_workers import _start_workers

    reg = _reg(tmp_path)
    reg.set_current(reg.add(DEFAULT_BUNDLE))
    p, workers = _start_workers(2, "--model", str(reg.root), "--registry-poll-s", "0.2")
    chans = [grpc.insecure_channel(f"127.0.0.1:{own}") for _, own, _ in workers.values()]
    try:
        stubs = [pb_grpc.ScorerStub(c) for c in chans]
        assert {s.Score(_req(f"w{k}", 0), timeout=10).model_version for k, s in enumerate(stubs)} == \
            {_version(DEFAULT_BUNDLE)}
        assert main(["promote", "--registry", str(reg.root), "--bundle", str(bundles["tiny"]), "--force"]) == 0
        for k, s in enumerate(stubs):
            assert _wait(lambda: s.Score(_req(f"w{k}", 1), timeout=10).model_version == _version(bundles["tiny"])), \
                p.logs()
    finally:
        for c in chans:
            c.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0, p.logs()
