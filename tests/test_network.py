"""Invariant 2: torch == onnxruntime at several batch sizes and lengths, padded rows included."""
import numpy as np
import pytest
import torch

from distillguard.model.network import NetworkConfig, ScoringGraph, SessionTransformer
from distillguard.serving.bundle import ort_session
from distillguard.training.export import export_onnx


@pytest.fixture(scope="module", params=[0, 8], ids=["linear-input", "ple-input"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    net = SessionTransformer(NetworkConfig(window=16, ple_bins=request.param)).eval()
    if request.param:
        edges = torch.linspace(-2, 2, request.param + 1)[:, None].repeat(1, net.cfg.n_features)
        edges[:, 0] = 0.0            # a constant feature: every bin has zero width
        net.set_ple_edges(edges)
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


def test_piecewise_linear_encoding_saturates_outside_the_training_range():
    """Beyond the last training quantile the encoding stops moving (a tree's last split),
    so an unseen extreme value cannot push the logits further than the largest seen one."""
    net = SessionTransformer(NetworkConfig(n_features=2, window=4, ple_bins=4)).eval()
    net.set_ple_edges(torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]]))
    x = torch.tensor([[[-10.0, 5.0], [1.5, 5.0], [4.0, 9.0], [400.0, -3.0]]])
    e = net.encode(x).view(1, 4, 4, 2)                     # (B, T, bins, F)
    assert e[0, 0, :, 0].tolist() == [0, 0, 0, 0]           # below the first edge
    assert e[0, 1, :, 0].tolist() == [1, 0.5, 0, 0]         # inside: filled bins then a fraction
    assert e[0, 2, :, 0].tolist() == e[0, 3, :, 0].tolist() == [1, 1, 1, 1]
    assert e[..., 1].abs().sum() == 0                       # constant feature: no signal, no NaN
    far = x.clone()
    far[0, 2, 0] = 4000.0                                   # far past the last edge
    with torch.no_grad():
        np.testing.assert_allclose(net(far).numpy(), net(x).numpy(), atol=1e-6)
