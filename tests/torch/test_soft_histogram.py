"""Tests for nextstat.torch.SoftHistogram: limits, mass, gradients, dtype/device, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, ndtr

from nextstat.torch import SoftHistogram

MODES = ["kde", "sigmoid"]
EDGES = np.linspace(0.0, 1.0, 11)


def _events(n=400, seed=0, margin=0.01, dtype=torch.float64):
    """Scores in [0, 1] at least ``margin`` away from every edge of EDGES, random weights."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, 4 * n)
    x = x[np.min(np.abs(x[:, None] - EDGES[None, :]), axis=1) > margin][:n]
    w = rng.uniform(0.1, 2.0, n)
    return torch.tensor(x, dtype=dtype), torch.tensor(w, dtype=dtype)


def _reference(x, w, edges, h, mode):
    """Closed form from the docstring, in NumPy."""
    lo, hi = edges[:-1][None, :], edges[1:][None, :]
    x = x[:, None]
    if mode == "kde":
        k = ndtr((hi - x) / h) - ndtr((lo - x) / h)
    else:
        k = expit((x - lo) / h) - expit((x - hi) / h)
    return w @ k


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bandwidth", [0.2, 0.05, 0.01])
def test_matches_closed_form(mode, bandwidth):
    x, w = _events(seed=1)
    out = SoftHistogram(torch.tensor(EDGES), bandwidth, mode)(x, w)
    expected = _reference(x.numpy(), w.numpy(), EDGES, bandwidth, mode)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_converges_to_hard_histogram(mode):
    x, w = _events(margin=0.01, seed=2)
    hard = np.histogram(x.numpy(), EDGES, weights=w.numpy())[0]
    errors = [
        np.abs(SoftHistogram(EDGES, h, mode)(x, w).numpy() - hard).max()
        for h in (0.05, 0.01, 0.002)
    ]
    assert errors[0] > errors[1] > errors[2]
    # kde: events >= 0.01 from an edge, h = 1e-4 -> tail mass Phi(-100) ~ 0
    # sigmoid: tail mass ~ exp(-100) per event
    np.testing.assert_allclose(
        SoftHistogram(EDGES, 1e-4, mode)(x, w).numpy(), hard, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("mode", MODES)
def test_total_mass_is_sum_of_weights_inside_range(mode):
    # events >= 0.3 inside [-1, 2]; kernel width 0.02 -> >= 15 sigma away
    x = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    w = torch.rand(101, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    hist = SoftHistogram(torch.linspace(-1.0, 2.0, 7), 0.02, mode)(x, w)
    torch.testing.assert_close(hist.sum(), w.sum(), rtol=1e-12, atol=0.0)
    # events outside the range are dropped
    out = SoftHistogram(torch.linspace(-1.0, 2.0, 7), 0.02, mode)(x + 10.0, w)
    assert out.abs().max() < 1e-12


def test_unit_weights_by_default():
    x, _ = _events(seed=4)
    soft_hist = SoftHistogram(EDGES, 0.05)
    torch.testing.assert_close(soft_hist(x), soft_hist(x, torch.ones_like(x)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bandwidth", [0.05, 0.3])
def test_gradcheck(mode, bandwidth):
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(15, dtype=torch.float64, generator=gen).requires_grad_()
    w = torch.rand(15, dtype=torch.float64, generator=gen).requires_grad_()
    soft_hist = SoftHistogram(EDGES[::2], bandwidth, mode)
    assert torch.autograd.gradcheck(soft_hist, (x, w))
    assert torch.autograd.gradgradcheck(soft_hist, (x, w))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_auto_bandwidth_batched(mode):
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(3, 12, dtype=torch.float64, generator=gen).requires_grad_()
    w = torch.rand(3, 12, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(SoftHistogram(EDGES, "auto", mode), (x, w))


def test_gradient_against_closed_form():
    x, w = _events(n=50, seed=7)
    x.requires_grad_()
    h = 0.05
    SoftHistogram(EDGES, h, "kde")(x, w)[3].backward()
    lo, hi = EDGES[3], EDGES[4]
    pdf = lambda z: np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)  # noqa: E731
    xn, wn = x.detach().numpy(), w.numpy()
    expected = wn * (pdf((lo - xn) / h) - pdf((hi - xn) / h)) / h
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_auto_bandwidth_rule():
    soft_hist = SoftHistogram(EDGES, "auto")
    # wide spread, many events: the clip at 0.5 * min bin width = 0.05 applies
    x, w = _events(n=400, seed=8)
    torch.testing.assert_close(soft_hist(x, w), SoftHistogram(EDGES, 0.05)(x, w))
    # narrow spread: 1.06 * sigma * n_eff^(-1/5) between the clips
    x = torch.tensor([0.45, 0.55] * 50, dtype=torch.float64)
    h = 1.06 * 0.05 * 100**-0.2
    assert 0.005 < h < 0.05
    torch.testing.assert_close(soft_hist(x), SoftHistogram(EDGES, h)(x))
    # identical scores or zero weights: the lower clip 0.05 * min bin width
    x = torch.full((10,), 0.42, dtype=torch.float64)
    torch.testing.assert_close(soft_hist(x), SoftHistogram(EDGES, 0.005)(x))
    assert soft_hist(x, torch.zeros_like(x)).abs().max() == 0.0
    # batched rows get their own bandwidth
    rows = torch.stack([torch.tensor([0.45, 0.55] * 50), torch.linspace(0, 1, 100)]).double()
    out = soft_hist(rows)
    torch.testing.assert_close(out[0], soft_hist(rows[0]))
    torch.testing.assert_close(out[1], soft_hist(rows[1]))


@pytest.mark.parametrize(
    ("scores_dtype", "weights_dtype", "out_dtype"),
    [
        (torch.float32, None, torch.float32),
        (torch.float64, None, torch.float64),
        (torch.float32, torch.float64, torch.float64),
        (torch.float64, torch.float32, torch.float64),
        (torch.float32, torch.int64, torch.float32),
    ],
)
def test_dtype_follows_inputs(scores_dtype, weights_dtype, out_dtype):
    x = torch.linspace(0.05, 0.95, 20, dtype=scores_dtype)
    w = None if weights_dtype is None else torch.ones(20, dtype=weights_dtype)
    out = SoftHistogram(EDGES, 0.05)(x, w)
    assert out.dtype == out_dtype
    assert out.shape == (10,)
    assert out.device == x.device


def test_float32_close_to_float64():
    x, w = _events(n=2000, seed=9)
    soft_hist = SoftHistogram(EDGES, 0.01, "kde")
    out32 = soft_hist(x.float(), w.float())
    out64 = soft_hist(x, w)
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_follows_inputs_cuda():
    x, w = _events(n=100, seed=10)
    soft_hist = SoftHistogram(EDGES, 0.05)  # buffers stay on CPU
    out = soft_hist(x.cuda(), w.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), soft_hist(x, w))


def test_meta_device_follows_inputs():
    x = torch.empty(7, dtype=torch.float64, device="meta")
    out = SoftHistogram(EDGES, 0.05)(x)
    assert out.device.type == "meta"
    assert out.shape == (10,)


def test_module_attributes():
    soft_hist = SoftHistogram([0, 1, 3], bandwidth=0.1, mode="sigmoid")
    assert soft_hist.n_bins == 2
    assert soft_hist.bin_edges.dtype == torch.float64
    assert "bin_edges" in soft_hist.state_dict()
    assert repr(soft_hist) == "SoftHistogram(n_bins=2, bandwidth=0.1, mode='sigmoid')"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bin_edges": [0.0]}, r"bin_edges: expected shape \[B \+ 1\] with B >= 1, got \[1\]"),
        ({"bin_edges": [[0.0, 1.0]]}, r"bin_edges: expected shape .* got \[1, 2\]"),
        ({"bin_edges": [0.0, 0.5, 0.5]}, "bin_edges: expected strictly increasing"),
        ({"bin_edges": [1.0, 0.0]}, "bin_edges: expected strictly increasing"),
        ({"bin_edges": [0.0, float("inf")]}, "bin_edges: expected finite"),
        ({"bin_edges": ["a", "b"]}, "bin_edges: expected a real numeric dtype"),
        ({"bandwidth": 0.0}, "bandwidth: expected a finite value > 0, got 0.0"),
        ({"bandwidth": -1.0}, "bandwidth: expected a finite value > 0"),
        ({"bandwidth": float("nan")}, "bandwidth: expected a finite value > 0"),
        ({"bandwidth": "silverman"}, 'bandwidth: expected a positive float or "auto"'),
        ({"bandwidth": True}, "bandwidth: expected a positive float"),
        ({"bandwidth": torch.tensor(0.1)}, "bandwidth: expected a positive float"),
        ({"mode": "gauss"}, 'mode: expected "kde" or "sigmoid", got \'gauss\''),
    ],
)
def test_init_bad_args(kwargs, match):
    args = {"bin_edges": EDGES, **kwargs}
    with pytest.raises(ValueError, match=match):
        SoftHistogram(**args)


@pytest.mark.parametrize(
    ("scores", "weights", "match"),
    [
        (np.array([0.1, 0.2]), None, "scores: expected a torch.Tensor, got ndarray"),
        (torch.tensor([1, 2]), None, "scores: expected a floating-point dtype, got torch.int64"),
        (torch.tensor(0.5), None, r"scores: expected shape \[\.\.\., N\]"),
        (
            torch.rand(3),
            torch.rand(4),
            r"weights: expected shape \[3\] \(same as scores\), got \[4\]",
        ),
        (torch.rand(3), [1.0, 1.0, 1.0], "weights: expected a torch.Tensor or None, got list"),
        (torch.rand(3), torch.ones(3, dtype=torch.complex64), "weights: expected a real dtype"),
        (torch.rand(3), torch.ones(3, device="meta"), "weights: expected device cpu"),
    ],
)
def test_forward_bad_args(scores, weights, match):
    with pytest.raises(ValueError, match=match):
        SoftHistogram(EDGES)(scores, weights)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", ["scores", "weights"])
def test_non_finite_scores_or_weights_are_refused_by_name(bad, which):
    sh = SoftHistogram(bin_edges=torch.linspace(0, 1, 5), bandwidth=0.1, mode="kde")
    scores = torch.rand(20, dtype=torch.float64)
    weights = torch.ones(20, dtype=torch.float64)
    (scores if which == "scores" else weights)[3] = bad
    with pytest.raises(ValueError, match=f"{which}: expected finite values"):
        sh(scores, weights)
    assert torch.isfinite(sh(torch.rand(20, dtype=torch.float64))).all()
