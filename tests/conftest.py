"""One tiny simulated data set and one tiny trained bundle per test session, shared."""
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillguard.model.network import NetworkConfig
from distillguard.training.train import TrainConfig

TINY_NET = NetworkConfig(window=16, d_model=16, n_head=2, n_layer=1, d_ff=32, ple_bins=8)


def tiny_train_config(tmp: Path, seed: int = 0, epochs: int = 2) -> TrainConfig:
    return TrainConfig(seed=seed, epochs=epochs, batch_size=64, network=TINY_NET,
                       checkpoint_dir=str(tmp / f"ckpt-{seed}-{epochs}"))


def bundle_variant(src: Path, dst: Path, **fields) -> Path:
    """A copy of a bundle with some metadata fields replaced: same weights, another
    content hash (registry and comparison tests need distinct bundles cheaply)."""
    import json
    import shutil

    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta.update(fields)
    (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory) -> tuple[Path, Path]:
    from distillguard.training.simulate import SimConfig, simulate, write

    d = tmp_path_factory.mktemp("sim")
    ev, lab = simulate(SimConfig(seed=11, accounts=240, days=3.0))
    return write(ev, lab, d)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, sim_data) -> Path:
    from distillguard.training.train import train

    d = tmp_path_factory.mktemp("bundle")
    train(sim_data[0], sim_data[1], d / "bundle", tiny_train_config(d), progress=False)
    return d / "bundle"


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free loopback port for the whole session (no fakes).
    Missing redis-server fails the tests: `make test` and .ci/run install it."""
    from distillguard.serving.redis_server import RedisServer, RedisServerMissing

    try:
        srv = RedisServer().start()
    except RedisServerMissing as e:
        pytest.fail(str(e), pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


_SERVING = re.compile(r"serving \S+ on 127\.0\.0\.1:(\d+)")
_METRICS = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


def start_serve(*args, timeout: float = 60.0, **popen_kw):
    """`distillguard ARGS` (a `serve` command line) as a real process, stdout and stderr in
    one pipe: waits for its "serving ... on 127.0.0.1:PORT" line and returns (process,
    port, the lines read so far); a server that exits or stays silent fails the test."""
    p = subprocess.Popen([sys.executable, "-m", "distillguard.cli", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, **popen_kw)
    lines = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line and p.poll() is not None:
            break
        lines.append(line)
        m = _SERVING.search(line)
        if m:
            return p, int(m.group(1)), lines
    p.kill()
    p.wait()
    raise AssertionError("server did not start:\n" + "".join(lines))


def metrics_port(lines) -> int:
    """The /metrics port a `serve --metrics-port 0` process printed."""
    for line in lines:
        m = _METRICS.search(line)
        if m:
            return int(m.group(1))
    raise AssertionError("no metrics line in:\n" + "".join(lines))
