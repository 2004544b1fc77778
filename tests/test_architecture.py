"""The architecture as a test: imports run one way between the top-level folders, no import
cycles between modules, no private name used across folders, `model/` free of Lightning,
gRPC and onnxruntime, and a scorer process free of torch, Lightning and scipy.

Ranks (docs/architecture.md): a module may import its own folder and lower ranks only.
The generated gRPC stubs (`distillguard.v1`) rank with serving's lowest layer: serving
imports them, model does not. Every package pyproject.toml installs must have a rank
here, so a new top-level folder cannot slip past the check.

Imports are read with `ast` from the source files (imports inside functions included,
relative imports resolved), not from a running process: a lazy import is still an edge.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_graph_tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod   # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


_g = _load_graph_tool()
NAMESPACE, RANKS, MODEL_FORBIDDEN = _g.NAMESPACE, _g.RANKS, _g.MODEL_FORBIDDEN
SCORER_FORBIDDEN = ("torch", "lightning", "pytorch_lightning", "scipy", "sklearn")
installed_packages, module_files, folder_of, read_imports = (
    _g.installed_packages, _g.module_files, _g.folder_of, _g.read_imports)
wrong_way_imports, private_imports, import_graph, import_cycles, _where = (
    _g.wrong_way_imports, _g.private_imports, _g.import_graph, _g.import_cycles, _g._where)


# ----------------------------------------------------------------------------- the tree

@pytest.fixture(scope="module")
def tree():
    packages = installed_packages()
    modules = module_files(packages)
    return packages, modules, read_imports(modules)


def test_every_installed_package_has_a_rank(tree):
    packages, modules, _ = tree
    assert {p.rsplit(".", 1)[-1] for p in packages} <= set(RANKS), \
        f"rank the new folder in RANKS (and docs/architecture.md): {sorted(packages)}"
    assert all(folder_of(m, packages) for m in modules)
    # The reader sees the tree: known modules and known edges, lazy imports included.
    edges = {(i.src, i.target) for i in tree[2]}
    assert ("distillguard.serving.server", "distillguard.serving.scorer") in edges
    assert ("distillguard.serving.batch", "distillguard.serving.batch_ray") in edges       # inside score_file
    assert ("distillguard.training.compare", "distillguard.serving.bundle") in edges       # inside _score


def test_imports_run_one_way(tree):
    packages, modules, imports = tree
    bad = wrong_way_imports(imports, modules, packages)
    assert not bad, "imports of a higher-rank folder:\n" + "\n".join(bad)


def test_no_import_cycles(tree):
    _, modules, imports = tree
    cycles = import_cycles(import_graph(imports, modules))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_across_folders(tree):
    packages, modules, imports = tree
    bad = private_imports(imports, modules, packages)
    assert not bad, "private names used from another folder:\n" + "\n".join(bad)


def test_model_imports_neither_lightning_grpc_nor_onnxruntime(tree):
    packages, modules, imports = tree
    bad = [f"{_where(i, modules, ROOT)}: {i.src} imports {i.target}" for i in imports
           if folder_of(i.src, packages) == f"{NAMESPACE}.model" and i.target.split(".")[0] in MODEL_FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A small tree with one of each fault: the checks above report each, with its path."""
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.setuptools.package-dir]
        "distillguard.model" = "model"
        "distillguard.serving" = "serving"
        "distillguard.training" = "training"
    """))
    files = {
        "model/__init__.py": "",
        "model/a.py": "def f():\n    from ..serving import b   # lazy, still an edge\n    import onnxruntime\n",
        "serving/__init__.py": "",
        "serving/b.py": "from . import c\n",
        "serving/c.py": "from .b import x\nfrom ..model.a import _hidden\n",
        "training/__init__.py": "",
        "training/t.py": "from ..serving import b\nb._inner()\nfrom distillguard.serving import c\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    packages = installed_packages(tmp_path)
    modules = module_files(packages)
    imports = read_imports(modules)

    wrong = wrong_way_imports(imports, modules, packages, tmp_path)
    assert wrong == ["model/a.py:2: distillguard.model.a (rank 0) imports distillguard.serving.b (rank 1)"]
    assert import_cycles(import_graph(imports, modules)) == [
        ["distillguard.serving.b", "distillguard.serving.c", "distillguard.serving.b"]]
    private = private_imports(imports, modules, packages, tmp_path)
    assert private == ["serving/c.py:2: distillguard.serving.c uses private distillguard.model.a._hidden",
                       "training/t.py:2: distillguard.training.t uses private distillguard.serving.b._inner"]
    assert any(i.src == "distillguard.model.a" and i.target == "onnxruntime" for i in imports)


# ----------------------------------------------------------------------------- processes

def _modules_of(code: str, *args: str) -> set[str]:
    """Run `code` in a fresh interpreter; it writes sorted(sys.modules) as JSON to argv[1]."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "modules.json"
        r = subprocess.run([sys.executable, "-c", code, str(out), *args], capture_output=True, text=True,
                           timeout=120, cwd=d)
        assert r.returncode == 0, r.stdout + r.stderr
        return set(json.loads(out.read_text()))


SCORER = """
import json, sys
import grpc
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.serving.server import ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc

srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(max_sessions=100))
try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        r = pb_grpc.ScorerStub(channel).Score(pb.ScoreRequest(
            account_id="acct-1", event_id="e1", ts=1_780_000_000.0, prompt_tokens=120,
            max_tokens=1024, template_hash="00000000000000aa"), timeout=30)
        assert r.label and r.events_in_session == 1, r
finally:
    srv.stop(0)
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""

# numba imports the scipy package when scipy is installed (a version check in its
# __init__) and scipy.linalg's BLAS bindings on its first compilation: what a process that
# only compiles one numba function holds. The scorer may hold that much and no more.
NUMBA_ONLY = """
import json, sys
import numba

@numba.njit
def one(x):
    return x + 1

one(1)
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""

SERVE_HELP = """
import contextlib, io, json, sys
from distillguard.cli import main

with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        main(["serve", "--help"])
    except SystemExit as e:
        assert e.code == 0, e.code
assert "--model" in help_text.getvalue()
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""


def _top(mods: set[str], names) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in names)


def test_the_scorer_process_imports_neither_torch_lightning_nor_scipy():
    scorer = _modules_of(SCORER)
    assert "distillguard.serving.server" in scorer and "onnxruntime" in scorer   # it did run the scorer
    assert not _top(scorer, set(SCORER_FORBIDDEN) - {"scipy"})
    # scipy: nothing of it beyond what numba loads by itself (no scipy.special, .optimize).
    numba_scipy = set(_top(_modules_of(NUMBA_ONLY), {"scipy"}))
    extra = sorted(set(_top(scorer, {"scipy"})) - numba_scipy)
    assert not extra, f"the scorer imports scipy modules numba does not: {extra}"
    assert "scipy.special" not in scorer and "scipy.optimize" not in scorer


def test_serve_help_does_not_import_torch():
    mods = _modules_of(SERVE_HELP)
    assert not _top(mods, SCORER_FORBIDDEN)
