"""Invariant 2: torch == onnxruntime at several batch sizes and lengths, padded rows included."""
import numpy as np
import pytest
import torch

from distillguard.model.network import NetworkConfig, ScoringGraph, SessionTransformer
from distillguard.serving.bundle import ort_session
from distillguard.training.export import export_onnx


LAYOUTS = {"linear-input": (0, 0), "ple-input": (8, 0), "sliding": (8, 6)}


def _random_band_bias(net):
    # Trained nets have distinct biases per distance; zeros would hide an indexing bug.
    g = torch.Generator().manual_seed(1)
    for block in net.blocks:
        if block.attn.rel is not None:
            block.attn.rel.data = torch.randn(block.attn.rel.shape, generator=g)


@pytest.fixture(scope="module", params=list(LAYOUTS), ids=list(LAYOUTS))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    ple, span = LAYOUTS[request.param]
    net = SessionTransformer(NetworkConfig(window=16, ple_bins=ple, attention_span=span)).eval()
    _random_band_bias(net)
    if ple:
        edges = torch.linspace(-2, 2, ple + 1)[:, None].repeat(1, net.cfg.n_features)
        edges[:, 0] = 0.0            # a constant feature: every bin has zero width
        net.set_ple_edges(edges)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(net, path)
    return net, ort_session(path)


@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("length", [1, 5, 16, 45])
def test_torch_matches_onnxruntime(exported, batch, length):
    net, sess = exported
    if length > net.cfg.window and not net.cfg.attention_span:
        pytest.skip("whole-window attention takes at most W rows")
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


def test_sliding_output_depends_on_its_receptive_field_only(exported):
    """What lets one pass over a session replace one window per event: in the sliding
    layout, output t over the whole session equals output t over its last R rows (and
    differs when fewer rows are given, so the test can fail)."""
    net, sess = exported
    if not net.cfg.attention_span:
        pytest.skip("whole-window layout")
    R = net.cfg.receptive_field
    assert R == net.cfg.n_layer * (net.cfg.attention_span - 1) + 1 <= net.cfg.window
    x = np.random.default_rng(3).standard_normal((2, 70, net.cfg.n_features)).astype(np.float32)
    full = sess.run(["probs"], {"x": x})[0]
    for t in (0, 3, R - 1, R, 33, 69):
        lo = max(0, t - R + 1)
        window = sess.run(["probs"], {"x": x[:, lo:t + 1]})[0][:, -1]
        np.testing.assert_allclose(window, full[:, t], atol=1e-5)
    short = sess.run(["probs"], {"x": x[:, 69 - R + 2:70]})[0][:, -1]
    assert np.abs(short - full[:, 69]).max() > 1e-4


def test_receptive_field_must_fit_the_window():
    with pytest.raises(ValueError, match="receptive field 33"):
        NetworkConfig(window=32, n_layer=2, attention_span=17)
    assert NetworkConfig(window=32, n_layer=2, attention_span=16).receptive_field == 31
