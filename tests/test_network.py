"""Invariant 2: torch == onnxruntime at several batch sizes and lengths, padded rows included."""
import numpy as np
import pytest
import torch

from distillguard.model.network import NetworkConfig, ScoringGraph, SessionTransformer
from distillguard.serving.bundle import ort_session
from distillguard.training.export import export_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = SessionTransformer(NetworkConfig(window=16)).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(net, path)
    return net, ort_session(path)


@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("length", [1, 5, 16])
def test_torch_matches_onnxruntime(exported, batch, length):
    net, sess = exported
    g = torch.Generator().manual_seed(batch * 100 + length)
    x = torch.randn(batch, length, net.cfg.n_features, generator=g)
    if batch > 1:   # a right-padded row: zeros after its valid prefix
        x[0, max(1, length // 2):] = 0
    want = ScoringGraph(net)(x).detach().numpy()
    got = sess.run(["probs"], {"x": x.numpy()})[0]
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_right_padding_does_not_change_valid_positions(exported):
    net, sess = exported
    x = np.random.default_rng(0).standard_normal((1, 6, net.cfg.n_features)).astype(np.float32)
    padded = np.concatenate([x, np.zeros((1, 10, net.cfg.n_features), np.float32)], axis=1)
    a = sess.run(["probs"], {"x": x})[0]
    b = sess.run(["probs"], {"x": padded})[0][:, :6]
    np.testing.assert_allclose(a, b, atol=1e-6)
