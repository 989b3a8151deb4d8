"""Attribution methods (sensaudit.methods) against closed forms, a per-row autograd loop and
Captum, batched on any chunking.

Closed forms, with b the baseline:
- linear y = w.x: gradient w; gradient x input, integrated gradients: w (x - b) (exact for any
  number of steps); SmoothGrad: w (the gradient is the same at every noisy copy).
- quadratic y = x'Ax: integrated gradients (x - b) * ((A + A')(b + x) / 2), since the gradient
  (A + A')z is linear along the path and its mean is its value at the midpoint; complete.
- separable cubic y = sum c_j x_j^3: integrated gradients c_j (x_j^3 - b_j^3), exact from two
  Gauss-Legendre points (the gradient is quadratic along the path), not from one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from models import MLP, Linear, Quadratic
from torch import nn

import sensaudit
from sensaudit import ConfigError
from sensaudit.methods import METHODS
from sensaudit.methods.integrated_gradients import IntegratedGradients as OurIG
from sensaudit.methods.integrated_gradients import gauss_legendre
from sensaudit.methods.smoothgrad import (
    NOISE_TABLE_ROWS,
    GaussianNoise,
    SmoothGrad,
    splitmix64_torch,
)
from sensaudit.stats.accumulators import splitmix64

CLOSE = dict(rtol=1e-12, atol=1e-12)
# Captum's InputXGradient sets requires_grad on the tensor it is given, and says so.
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")
ATTRIBUTION_METHODS = ["gradient_x_input", "integrated_gradients", "smoothgrad"]


class Cubic(nn.Module):
    """y = sum_j c_j x_j^3  ->  dy/dx_j = 3 c_j x_j^2; integrated gradients from b:
    c_j (x_j^3 - b_j^3)."""

    def __init__(self, n_features: int = 4):
        super().__init__()
        self.c = nn.Parameter(torch.linspace(-1.0, 1.5, n_features, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.c * x**3).sum(1)


def _baselines(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named baselines computed here, independently of sensaudit.pipeline.baselines."""
    values = x.numpy()
    return {"mean": torch.from_numpy(values.mean(0)), "zero": torch.zeros(x.shape[1],
                                                                         dtype=torch.float64),
            "median": torch.from_numpy(np.median(values, axis=0))}


# --- closed forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["mean", "zero", "median", "tensor"])
@pytest.mark.parametrize("method", ["gradient", *ATTRIBUTION_METHODS])
def test_linear_model_every_method_gives_w_times_distance_from_baseline(x, method, baseline):
    model = Linear()
    w = model.w.detach()
    b = (torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64) if baseline == "tensor"
         else _baselines(x)[baseline])
    given = b.tolist() if baseline == "tensor" else baseline
    got = sensaudit.attribute(model, x, method=method, baseline=given, samples=7, steps=3)
    assert got.shape == (11, 1, 4) and got.dtype == torch.float64
    if method in ("gradient", "smoothgrad"):  # the linear model's gradient, at any point
        expected = w.expand(11, 1, 4)
    else:
        expected = (w * (x - b))[:, None, :]
    torch.testing.assert_close(got, expected, **CLOSE)


@pytest.mark.parametrize("steps", [1, 2, 50])
def test_quadratic_integrated_gradients_is_the_midpoint_gradient_times_distance(x, steps):
    model = Quadratic()
    a = model.A.detach()
    b = torch.tensor([0.3, -0.2, 1.0, 0.5], dtype=torch.float64)
    method = OurIG(steps=steps)
    method.prepare(b, torch.ones(4, dtype=torch.float64))
    got = method.attribute(model, x)
    expected = (x - b) * (((b + x) / 2) @ (a + a.T).T)
    torch.testing.assert_close(got.values[:, 0, :], expected, **CLOSE)
    # Complete: the attributions add up to f(x) - f(b), to rounding.
    f_b = (b @ a @ b).reshape(1)
    torch.testing.assert_close(got.baseline_scores, f_b, **CLOSE)
    torch.testing.assert_close(got.values.sum(2), got.scores - f_b, **CLOSE)


def test_cubic_integrated_gradients_exact_from_two_points_not_one(x):
    model = Cubic()
    c = model.c.detach()
    b = _baselines(x)["mean"]
    expected = (c * (x**3 - b**3))[:, None, :]
    two = sensaudit.attribute(model, x, method="integrated_gradients", steps=2)
    torch.testing.assert_close(two, expected, **CLOSE)
    one = sensaudit.attribute(model, x, method="integrated_gradients", steps=1)
    assert (one - expected).abs().max() > 1e-3  # the midpoint rule misses a quadratic gradient


def test_gauss_legendre_rule_on_zero_one():
    for steps in (1, 2, 5, 50):
        nodes, weights = gauss_legendre(steps)
        assert ((nodes > 0) & (nodes < 1)).all()
        assert weights.sum() == pytest.approx(1.0, abs=1e-14)
        # Exact for polynomials up to degree 2 steps - 1: integral of a^d over [0, 1].
        for degree in range(2 * steps):
            assert (weights * nodes**degree).sum() == pytest.approx(1 / (degree + 1), abs=1e-13)
    assert gauss_legendre(1)[0].tolist() == [0.5]


def test_smoothgrad_of_a_linear_multi_output_model_is_its_gradient(x):
    model = nn.Linear(4, 3).double()
    got = sensaudit.attribute(model, x, method="smoothgrad", samples=20, noise=3.0)
    torch.testing.assert_close(got, model.weight.detach().expand(11, 3, 4), **CLOSE)


# --- batched == per-row loop == Captum, on a nonlinear multi-output model ---------------------


def _per_row_gradient(model: nn.Module, point: torch.Tensor) -> torch.Tensor:
    """[outputs, features] by autograd, one row at a time."""
    return torch.autograd.functional.jacobian(lambda z: model(z[None, :])[0], point)


def test_integrated_gradients_equal_a_per_row_loop_and_captum(x):
    model = MLP()
    b = _baselines(x)["median"]
    steps = 16
    batched = sensaudit.attribute(model, x, method="integrated_gradients", baseline="median",
                                  steps=steps)
    nodes, weights = gauss_legendre(steps)
    loop = torch.stack([
        sum(float(w) * _per_row_gradient(model, b + float(a) * (row - b))
            for a, w in zip(nodes, weights, strict=True)) * (row - b)
        for row in x])
    torch.testing.assert_close(batched, loop, **CLOSE)
    captum = torch.stack([IntegratedGradients(model).attribute(
        x, baselines=b[None, :], target=i, n_steps=steps, method="gausslegendre")
        for i in range(3)], dim=1)
    # Captum casts its quadrature weights to float32 (captum 0.9, integrated_gradients.py):
    # agreement to float32's precision is all it can give.
    torch.testing.assert_close(batched, captum, rtol=1e-6, atol=1e-8)


def test_gradient_x_input_equals_captum_input_x_gradient_from_zero(x):
    model = MLP()
    batched = sensaudit.attribute(model, x, method="gradient_x_input", baseline="zero")
    captum = torch.stack([InputXGradient(model).attribute(x, target=i) for i in range(3)], 1)
    torch.testing.assert_close(batched, captum, **CLOSE)


def test_smoothgrad_equals_a_per_row_loop_and_captum_noise_tunnel(x, monkeypatch):
    model = MLP()
    samples, noise, seed = 6, 0.3, 17
    std = x.std(0)
    batched = sensaudit.attribute(model, x, method="smoothgrad", samples=samples, noise=noise,
                                  seed=seed)
    # The same noise, drawn for row numbers 1..11, scaled by noise x each feature's std.
    eps = GaussianNoise(seed, 4).draw(np.arange(1, 12), samples) * noise * std
    loop = torch.stack([torch.stack([_per_row_gradient(model, x[r] + eps[r, s])
                                     for s in range(samples)]).mean(0) for r in range(11)])
    torch.testing.assert_close(batched, loop, **CLOSE)

    # Captum draws its own noise with torch.normal (row r's copies next to each other):
    # hand it ours, so that the two compute the same average.
    def same_noise(mean, std_expanded):
        return eps.reshape(-1, 4)

    monkeypatch.setattr(torch, "normal", same_noise)
    tunnel = NoiseTunnel(Saliency(model))
    captum = torch.stack([tunnel.attribute(x, nt_type="smoothgrad", nt_samples=samples,
                                           stdevs=1.0, target=i, abs=False)
                          for i in range(3)], dim=1)
    torch.testing.assert_close(batched, captum, **CLOSE)


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_any_chunking_gives_the_same_attributions(x, method):
    model = MLP()
    declared = METHODS[method].Options
    keys = [f.name for f in dataclasses.fields(declared)] if declared is not None else []
    options = {key: value for key, value in {"samples": 5, "steps": 4}.items() if key in keys}
    whole = METHODS[method].from_settings(sensaudit.AuditSettings(
        method=method, method_options=options, batch_size=3))
    parts = METHODS[method].from_settings(sensaudit.AuditSettings(
        method=method, method_options=options, batch_size=7))
    for m in (whole, parts):
        m.prepare(_baselines(x)["mean"], x.std(0))
    rows = np.arange(1, 12, dtype=np.int64) * 10  # the rows' numbers in the data
    expected = whole.attribute_rows(model, x, rows)
    index = [[0, 5, 9], [1, 2, 3, 4], [6, 7, 8, 10]]  # not contiguous
    for part in index:
        got = parts.attribute_rows(model, x[part], rows[part])
        torch.testing.assert_close(got.values, expected.values[part], **CLOSE)
        torch.testing.assert_close(got.scores, expected.scores[part], **CLOSE)


def test_float32_models_are_attributed_in_float32(x):
    model = MLP().float()
    for method in ATTRIBUTION_METHODS:
        got = sensaudit.attribute(model, x.float(), method=method, samples=4, steps=8)
        want = sensaudit.attribute(MLP(), x, method=method, samples=4, steps=8)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


# --- SmoothGrad's noise: a function of (seed, row number, sample) -------------------------------


def test_torch_splitmix64_has_the_same_bits_as_the_uint64_original():
    values = np.random.default_rng(0).integers(0, 2**64 - 1, 50_000, dtype=np.uint64,
                                                endpoint=True)
    values[:3] = [0, 2**63, 2**64 - 1]
    with np.errstate(over="ignore"):
        expected = splitmix64(values)
    got = splitmix64_torch(torch.from_numpy(values.view(np.int64))).numpy().view(np.uint64)
    np.testing.assert_array_equal(got, expected)


def test_noise_is_a_function_of_seed_row_and_sample():
    noise = GaussianNoise(5, 3)
    rows = np.array([4, 9, 1000, 2**40])
    whole = noise.draw(rows, 8)
    assert whole.shape == (4, 8, 3)
    torch.testing.assert_close(GaussianNoise(5, 3).draw(rows[[2, 0]], 8), whole[[2, 0]],
                               rtol=0, atol=0)
    assert not torch.equal(GaussianNoise(6, 3).draw(rows, 8), whole)  # another seed
    assert not torch.equal(whole[0], whole[1])  # another row
    assert len({tuple(v) for v in whole.reshape(-1, 3).tolist()}) == 32  # all distinct


def test_noise_has_zero_mean_and_unit_variance_exactly_over_its_tables():
    noise = GaussianNoise(0, 5)
    a, b = noise.tables[0], noise.tables[1]
    assert a.shape == b.shape == (NOISE_TABLE_ROWS, 5)
    # Over every (i, j) combination: mean 0, and variance mean(a^2) + mean(b^2) = 1.
    torch.testing.assert_close(a.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-15,
                               rtol=0)
    torch.testing.assert_close(a.pow(2).mean(0) + b.pow(2).mean(0),
                               torch.ones(5, dtype=torch.float64), **CLOSE)
    drawn = noise.draw(np.arange(1, 20_001), 10)  # and the draws look standard normal
    assert drawn.mean().abs() < 0.01 and (drawn.std() - 1).abs() < 0.01


# --- the Python API ------------------------------------------------------------------------------


def test_attribute_is_exported_and_rejects_bad_input(x):
    model = Linear()
    with pytest.raises(ConfigError, match=rf"^method must be one of {', '.join(METHODS)} "
                                          r"\(got 'shap'\)$"):
        sensaudit.attribute(model, x, method="shap")
    with pytest.raises(ConfigError, match=r"^baseline has 3 values; x has 4 features$"):
        sensaudit.attribute(model, x, method="gradient_x_input", baseline=[1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match=r"^IntegratedGradientsOptions: steps must be an "
                                          r"integer from 1 to "
                                          r"10000 \(got 0, an int\)$"):
        sensaudit.attribute(model, x, method="integrated_gradients", steps=0)
    with pytest.raises(ConfigError, match=r"^AuditSettings: baseline must be one of mean, zero, "
                                          r"median, or a mapping"):
        sensaudit.attribute(model, x, baseline="average")
    with pytest.raises(ConfigError, match="needs at least 2 rows"):
        sensaudit.attribute(model, x[:1], method="smoothgrad")
    with pytest.raises(RuntimeError, match=r"call prepare\(baseline, std\) before attribute"):
        SmoothGrad().attribute(model, x)
