"""The wheel is the product: built from the checkout, installed in a fresh venv outside it,
it serves `--help` and batch-scores a file with the packaged default bundle (gRPC stubs and
bundle inside the wheel), and carries nothing but the distillguard packages."""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# Building the wheel (build isolation fetches setuptools) and the installed run: ~25 s on 2 cores.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# Not the checkout's own build products, caches or local data: the wheel is built from a
# copy so that building writes nothing (build/, *.egg-info) into the checkout. The
# __pycache__ folders are copied on purpose: the wheel must leave them out.
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "data", "runs",
                                     "reports", "bench", "lightning_logs", ".pytest_cache")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=COPY_IGNORE)
    # Build isolation: pip installs the [build-system] requirements (setuptools from PyPI)
    # into a throwaway environment, as on any machine that builds the project.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)])
    (whl,) = (tmp / "dist").glob("distillguard-*.whl")
    return whl


def test_wheel_holds_the_packages_stubs_and_bundle_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"distillguard", next(t for t in top if t.endswith(".dist-info"))}, top
    for must in ("distillguard/v1/scorer_pb2.py", "distillguard/v1/scorer_pb2_grpc.py", "distillguard/v1/scorer.proto",
                 "distillguard/serving/default_bundle/model.onnx", "distillguard/serving/default_bundle/metadata.json",
                 "distillguard/model/features.py", "distillguard/serving/server.py", "distillguard/training/export.py",
                 "distillguard/cli/__init__.py"):
        assert must in names, must
    # Every module of every mapped folder, subpackages included (a package missing from
    # pyproject's `packages` would install from a checkout and be absent from the wheel).
    import tomllib
    root = Path(__file__).resolve().parents[1]
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for pkg, folder in mapping.items():
        for f in (root / folder).rglob("*.py"):
            rel = f.relative_to(root / folder).as_posix()
            assert f"{pkg.replace('.', '/')}/{rel}" in names, f"{folder}/{rel} is not in the wheel"
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
    assert not any(".venv" in n or "__pycache__" in n or n.endswith((".pyc", ".nbi", ".nbc")) for n in names)


def test_installed_wheel_serves_help_and_scores_with_the_packaged_bundle(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    # Installed before the .pth below exists: pip then sees no distillguard to replace (the
    # dependency directories hold this checkout's editable install, which it must not touch).
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # The dependencies (torch, onnxruntime, grpcio, ...) come from this interpreter's
    # site-packages directories instead of a second download. Directories named in a .pth are
    # put on sys.path but their own .pth files are not run, so the editable install's finder
    # stays inactive and `distillguard` resolves to the wheel's copy.
    deps = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    deps += [p for p in (sysconfig.get_path("purelib"), sysconfig.get_path("platlib")) if p not in deps]
    (site / "_deps.pth").write_text("".join(f"{p}\n" for p in deps))

    work = tmp_path / "work"          # cwd outside the checkout
    work.mkdir()
    shutil.copy(REPO / "examples" / "events.csv", work / "events.csv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")

    where = _run([str(py), "-c", "import distillguard.serving as s, distillguard.v1.scorer_pb2 as pb; "
                  "print(s.__file__); print(pb.__file__); print(s.DEFAULT_BUNDLE)"], cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site / "distillguard") for p in where), where

    cli = venv / "bin" / "distillguard"
    helped = _run([str(cli), "serve", "--help"], cwd=work, env=env)
    assert "--port" in helped.stdout
    _run([str(cli), "score", "--input", "events.csv", "--output", "out.parquet", "-q"], cwd=work, env=env)
    scores = pq.read_table(work / "out.parquet")
    assert scores.num_rows > 0
    assert {"session_id", "p_distillation_harvesting", "action"} <= set(scores.column_names)
    # numba's cache went to the user cache directory, not into the installed package.
    assert not list((site / "distillguard").rglob("*.nbi"))
    assert list((tmp_path / "cache" / "distillguard" / "numba").rglob("*.nbi"))
