"""One tiny simulated data set and one tiny trained bundle per test session, shared."""
from pathlib import Path

import pytest

from distillguard.model.network import NetworkConfig
from distillguard.training.train import TrainConfig

TINY_NET = NetworkConfig(window=16, d_model=16, n_head=2, n_layer=2, d_ff=32, ple_bins=8, attention_span=8)


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
    """A real redis-server on a free loopback port for the whole session (no fakes), the one
    every Redis test uses (through `redis_url`). Missing redis-server fails the tests:
    `make test` and .ci/run install it."""
    from distillguard.serving.harness import RedisServer, RedisServerMissing

    try:
        srv = RedisServer().start()
    except RedisServerMissing as e:
        pytest.fail(str(e), pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test (its config restored after it: a test
    may `CONFIG SET maxmemory`)."""
    import redis

    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    conf = r.config_get("maxmemory*")
    yield redis_server.url
    r.config_set("maxmemory", conf["maxmemory"])
    r.config_set("maxmemory-policy", conf["maxmemory-policy"])
    r.close()
