"""Reproducible export (design card): model.onnx carries no source paths or stack traces,
and two exports are compared by graph, initializers and ORT outputs (scripts/check_bundle.py,
`make model-check`), so the check holds whatever directory each was exported from."""
import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from distillguard.model.network import NetworkConfig, SessionTransformer
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.training.export import export_onnx, onnx_differences

REPO = Path(__file__).resolve().parents[1]
CFG = NetworkConfig(window=8, d_model=8, n_head=2, n_layer=1, d_ff=16, ple_bins=4)


def _net(cfg: NetworkConfig = CFG, seed: int = 0) -> SessionTransformer:
    torch.manual_seed(seed)
    net = SessionTransformer(cfg).eval()
    if cfg.ple_bins:
        net.set_ple_edges(torch.linspace(-2, 2, cfg.ple_bins + 1)[:, None].repeat(1, cfg.n_features))
    return net


def _strings(msg):
    """Every string field of an ONNX message and of the messages inside it (not raw tensor bytes)."""
    for field, value in msg.ListFields():
        values = value if field.is_repeated else (value,)
        if field.type == field.TYPE_MESSAGE:
            for m in values:
                yield from _strings(m)
        elif field.type == field.TYPE_STRING:
            yield from values


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_onnx(_net(), path)
    return path


def _assert_no_paths(path: Path) -> None:
    model = onnx.load(str(path))
    strings = list(_strings(model))
    assert len(strings) > 50            # op types, tensor names, ...: the walk did reach the graph
    for bad in (str(REPO), "/site-packages/", ".py", "Traceback", 'File "'):
        hits = [s for s in strings if bad in s]
        assert not hits, f"{bad!r} in the exported model: {hits[:3]}"
    raw = path.read_bytes()
    assert str(REPO).encode() not in raw and b"site-packages" not in raw
    assert not model.metadata_props and not model.graph.metadata_props
    assert not any(n.metadata_props or n.doc_string for n in model.graph.node)


def test_exported_model_carries_no_paths_or_stack_traces(exported):
    _assert_no_paths(exported)


def test_committed_default_bundle_carries_no_paths():
    _assert_no_paths(DEFAULT_BUNDLE / "model.onnx")


def _check_bundle_main():
    spec = importlib.util.spec_from_file_location("check_bundle", REPO / "scripts" / "check_bundle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _as_bundle(onnx_path: Path, d: Path, version: str = "0+data.weights") -> Path:
    d.mkdir()
    shutil.copy(onnx_path, d / "model.onnx")
    (d / "metadata.json").write_text(json.dumps({"model_config": CFG.to_dict(), "version": version,
                                                 "created_at": str(d)}))
    return d


@pytest.mark.slow
def test_same_weights_same_model_other_weights_or_graph_differ(exported, tmp_path, capsys):
    window = CFG.window
    again = tmp_path / "again.onnx"
    export_onnx(_net(), again)
    assert onnx_differences(exported, again, window=window) == []

    nudged = copy.deepcopy(_net())
    with torch.no_grad():
        nudged.head.bias.add_(1e-3)
    export_onnx(nudged, tmp_path / "nudged.onnx")
    diffs = onnx_differences(exported, tmp_path / "nudged.onnx", window=window)
    assert any(d.startswith("initializer net.head.bias: values differ") for d in diffs), diffs
    assert any(d.startswith("ORT outputs") for d in diffs), diffs
    assert not any(d.startswith("node") for d in diffs), diffs

    # The same through scripts/check_bundle.py (`make model-check`): exit status and listing.
    main = _check_bundle_main()
    a, b = _as_bundle(exported, tmp_path / "a"), _as_bundle(again, tmp_path / "b")
    assert main([str(a), str(b)]) == 0
    c = _as_bundle(tmp_path / "nudged.onnx", tmp_path / "c", version="0+data.other")
    assert main([str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert "initializer net.head.bias: values differ" in out and "version differs" in out

    deeper = NetworkConfig(**{**CFG.to_dict(), "n_layer": 2})
    export_onnx(_net(deeper), tmp_path / "deeper.onnx")
    diffs = onnx_differences(exported, tmp_path / "deeper.onnx", window=window)
    assert any(d.startswith("node count differs") for d in diffs), diffs
    assert any("only in the second" in d for d in diffs), diffs


@pytest.mark.slow   # a second process that imports torch and exports: 10-20 s on 2 cores
def test_export_from_another_clone_directory_is_the_same_model(exported, tmp_path):
    """The code copied to another directory exports the same model, byte for byte: no
    path of the tree it ran from is left in the file."""
    clone = tmp_path / "elsewhere" / "distillguard"
    for folder in ("model", "serving", "training"):
        shutil.copytree(REPO / folder, clone / folder, ignore=shutil.ignore_patterns("__pycache__", "default_bundle"))
    out = tmp_path / "clone.onnx"
    script = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from distillguard.model.network import NetworkConfig, SessionTransformer\n"
        "from distillguard.training import export\n"
        f"assert export.__file__.startswith({str(clone)!r}), export.__file__\n"
        f"cfg = NetworkConfig(**{CFG.to_dict()!r})\n"
        "torch.manual_seed(0)\n"
        "net = SessionTransformer(cfg).eval()\n"
        "net.set_ple_edges(torch.linspace(-2, 2, cfg.ple_bins + 1)[:, None].repeat(1, cfg.n_features))\n"
        f"export.export_onnx(net, Path({str(out)!r}))\n")
    # PYTHONPATH puts the copy ahead of the editable install's finder (appended to sys.meta_path).
    env = {**os.environ, "PYTHONPATH": str(clone.parent), "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert str(clone).encode() not in out.read_bytes()
    assert onnx_differences(exported, out, window=CFG.window) == []
    assert out.read_bytes() == exported.read_bytes()
