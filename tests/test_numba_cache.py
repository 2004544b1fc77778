"""numba's compiled feature kernel is cached in the user cache directory, never in the
source tree or site-packages, and an unusable cache directory costs a recompile, not a crash."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillguard.model import features as F

MODEL_DIR = Path(F.__file__).resolve().parent

# Computes one three-event session's features and reports what the kernel's cache did.
SCRIPT = """
import json, numba, numpy as np
from distillguard.model import features as F
n = 3
ev = F.RawEvents(ts=np.array([1000.0, 1010.0, 1010.5]), prompt_tokens=np.array([100, 50, 80]),
                 completion_tokens=np.array([1000, 20, 5]), max_tokens=np.array([1000, 1000, -1]),
                 status=np.full(n, 200), template_key=np.array([7, 9, 7]),
                 elicits_reasoning=np.zeros(n, np.int8), browser_client=np.zeros(n, np.int8),
                 account_created_at=np.full(n, 1000.0 - 2 * 86400.0))
X = F.compute(F.empty_state(1), np.zeros(n, np.int64), ev)
print(json.dumps({"rows": X.tolist(), "hits": sum(F._kernel.stats.cache_hits.values()),
                  "numba_cache_dir": numba.config.CACHE_DIR}))
"""


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _run(tmp_path: Path, **env_over) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    # Python's own bytecode is not what is under test: without it any new file is numba's.
    env.update(PYTHONDONTWRITEBYTECODE="1", **env_over)
    before = _tree(MODEL_DIR)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert _tree(MODEL_DIR) == before, "the feature kernel wrote into the package directory"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cache_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_kernel_cache_goes_to_the_user_cache_dir_and_is_reused(tmp_path):
    xdg = tmp_path / "xdg"
    first = _run(tmp_path, XDG_CACHE_HOME=str(xdg))
    cached = _cache_files(xdg / "distillguard" / "numba")
    assert any(n.endswith(".nbi") for n in cached) and any(n.endswith(".nbc") for n in cached), cached
    assert first["hits"] == 0
    # The setting is scoped to the kernel's decoration: other numba code keeps its default.
    assert first["numba_cache_dir"] == ""
    second = _run(tmp_path, XDG_CACHE_HOME=str(xdg))
    assert second["hits"] >= 1, "the second process compiled again instead of loading the cache"
    assert second["rows"] == first["rows"]
    assert _cache_files(xdg / "distillguard" / "numba") == cached


def test_explicit_numba_cache_dir_is_respected(tmp_path):
    explicit, xdg = tmp_path / "explicit", tmp_path / "xdg"
    got = _run(tmp_path, NUMBA_CACHE_DIR=str(explicit), XDG_CACHE_HOME=str(xdg))
    assert _cache_files(explicit) and not xdg.exists()
    assert got["numba_cache_dir"] == str(explicit)


@pytest.mark.slow   # three cold compiles, ~15 s on 2 cores
def test_unusable_cache_dir_means_no_cache_not_a_crash(tmp_path):
    # A regular file where a directory should be: unwritable even for root (chmod is not).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    reference = _run(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))["rows"]
    for env in ({"XDG_CACHE_HOME": str(blocker)}, {"NUMBA_CACHE_DIR": str(blocker / "numba")}):
        got = _run(tmp_path, **env)   # _run also checks that numba did not fall back to the source tree
        assert got["rows"] == reference and got["hits"] == 0
