"""The analytic ReLU transfer: measured error <= tol inside the box, structure, bad input.

References: ``KernelModel.predict`` (numpy) and scikit-learn's ``KernelRidge.predict`` /
``rbf_kernel``, all independent of the torch network.
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics.pairwise import rbf_kernel
from torch import nn

from motifpipe.baselines import KernelModel
from motifpipe.errors import MotifpipeError
from motifpipe.relu import (
    plan_relu,
    predict,
    relu_architecture,
    relu_network,
    relu_report,
    relu_skeleton,
)

N_HELD_OUT = 10_000


def _random_model(rng, D: int, m: int = 8) -> KernelModel:
    """A Gaussian model with centres in [-1, 1]^D and N(0, 1) coefficients."""
    return KernelModel("gaussian", float(rng.uniform(1.0, 4.0)), rng.uniform(-1, 1, (m, D)),
                       rng.normal(size=m), float(rng.normal()))


def _held_out(net, rng) -> np.ndarray:
    """N_HELD_OUT uniform points in the network's box, plus the box's two corners."""
    lo, hi = net.relu_plan.lo, net.relu_plan.hi
    return np.vstack([rng.uniform(lo, hi, (N_HELD_OUT, len(lo))), lo, hi])


def _krr(rng, n: int = 30, gamma: float = 6.0, alpha: float = 0.1):
    """(KernelRidge, KernelModel, X) fitted on a smooth 2-D target in [0, 1]^2."""
    X = rng.random((n, 2))
    y = np.sin(4 * X[:, 0]) * np.cos(3 * X[:, 1]) + 0.1 * rng.normal(size=n)
    kr = KernelRidge(kernel="rbf", gamma=gamma, alpha=alpha).fit(X, y)
    return kr, KernelModel("gaussian", gamma, X, kr.dual_coef_, 0.0), X


@pytest.mark.parametrize("tol", [1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("D", [1, 2, 3])
def test_max_error_within_tol_on_random_models(D, tol):
    rng = np.random.default_rng(10 * D + int(-np.log10(tol)))
    model = _random_model(rng, D)
    net = relu_network(model, tol)
    X = _held_out(net, rng)
    out = predict(net, X)
    err = np.abs(out - model.predict(X))
    assert err.max() <= tol
    sk = rbf_kernel(X, model.centers, gamma=model.gamma) @ model.coef + model.intercept
    assert np.abs(out - sk).max() <= tol
    assert net.relu_plan.bound <= tol  # the guarantee itself respects tol
    assert relu_report(net, model, X)["fidelity"]["max_abs"] == pytest.approx(err.max())


@pytest.mark.parametrize("D", [1, 2])
def test_bound_is_tight_for_one_centre(D):
    """With one centre nothing cancels: the measured error reaches the bound (not wasteful)."""
    rng = np.random.default_rng(20 + D)
    model = KernelModel("gaussian", 2.0, np.zeros((1, D)), np.ones(1), 0.0)
    net = relu_network(model, 1e-2)
    X = _held_out(net, rng)
    err = np.abs(predict(net, X) - model.predict(X)).max()
    assert 0.9 * net.relu_plan.bound <= err <= net.relu_plan.bound * (1 + 1e-9)


@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_krr_against_sklearn_and_model(tol):
    rng = np.random.default_rng(7)
    kr, model, X = _krr(rng)
    net = relu_network(model, tol, domain=(X.min(0), X.max(0)))
    Xt = _held_out(net, rng)
    out = predict(net, Xt)
    assert np.abs(out - kr.predict(Xt)).max() <= tol
    assert np.abs(out - model.predict(Xt)).max() <= tol


def test_guarantee_holds_with_large_cancelling_coefficients():
    """A lightly regularised fit: sum |a_j| is in the thousands, the net grows accordingly."""
    rng = np.random.default_rng(3)
    kr, model, X = _krr(rng, n=25, gamma=8.0, alpha=1e-6)
    assert np.abs(model.coef).sum() > 1000
    net = relu_network(model, 1e-1)
    Xt = _held_out(net, rng)
    assert np.abs(predict(net, Xt) - kr.predict(Xt)).max() <= 1e-1


def test_explicit_domain_larger_than_centres():
    rng = np.random.default_rng(4)
    model = _random_model(rng, 2)
    lo, hi = np.array([-3.0, -2.0]), np.array([2.0, 4.0])
    net = relu_network(model, 1e-2, domain=(lo, hi))
    X = rng.uniform(lo, hi, (N_HELD_OUT, 2))
    assert np.abs(predict(net, X) - model.predict(X)).max() <= 1e-2


def test_constant_model_and_flat_coordinate():
    """All coefficients zero, and a coordinate where every centre agrees."""
    C = np.array([[0.0, 1.0], [1.0, 1.0]])
    model = KernelModel("gaussian", 1.0, C, np.zeros(2), 2.5)
    net = relu_network(model, 1e-3)
    X = _held_out(net, np.random.default_rng(5))
    np.testing.assert_allclose(predict(net, X), 2.5, atol=1e-12)
    flat = KernelModel("gaussian", 1.0, C, np.array([1.0, -0.5]), 0.0)
    net = relu_network(flat, 1e-3)
    X = _held_out(net, np.random.default_rng(6))
    assert np.abs(predict(net, X) - flat.predict(X)).max() <= 1e-3


def test_only_linear_and_relu_layers_and_output_shape():
    rng = np.random.default_rng(8)
    model = _random_model(rng, 2)
    net = relu_network(model, 1e-2)
    assert type(net) is nn.Sequential
    kinds = [type(mod) for mod in net]
    assert set(kinds[:-1]) <= {nn.Linear, nn.ReLU} and kinds[-1] is nn.Flatten
    assert kinds[:-1] == [nn.Linear, nn.ReLU] * 3 + [nn.Linear]
    assert all(p.dtype == torch.float64 for p in net.parameters())
    out = net(torch.zeros(5, 2, dtype=torch.float64))
    assert out.shape == (5,)
    arch = relu_architecture(net)
    assert arch["depth"] == 4 and arch["dim"] == 2
    assert arch["widths"] == list(net.relu_plan.widths)
    assert arch["n_params"] == net.relu_plan.n_params == sum(p.numel() for p in net.parameters())


def test_parameter_count_grows_as_tol_shrinks():
    model = _random_model(np.random.default_rng(9), 2)
    counts = [plan_relu(model, tol).n_params for tol in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    # Width of the profile layer grows like tol^(-1/2): a factor ~sqrt(10) per decade.
    w3 = [plan_relu(model, tol).widths[2] for tol in (1e-3, 1e-5)]
    assert 5 < w3[1] / w3[0] < 20


def test_cap_error_names_the_needed_count():
    model = _random_model(np.random.default_rng(11), 2)
    needed = plan_relu(model, 1e-3).n_params
    with pytest.raises(MotifpipeError, match="max_params=1,000") as info:
        relu_network(model, 1e-3, max_params=1000)
    msg = str(info.value)
    assert "\n" not in msg
    assert int(re.search(r"needs ([\d,]+) parameters", msg).group(1).replace(",", "")) == needed
    assert relu_network(model, 1e-3, max_params=needed).relu_plan.n_params == needed


@pytest.mark.parametrize("tol", [0, -1e-3, float("nan"), float("inf"), "small", None])
def test_bad_tol(tol):
    model = _random_model(np.random.default_rng(12), 1)
    with pytest.raises(MotifpipeError, match="tol must be a finite number > 0"):
        relu_network(model, tol)


def test_unsupported_kernel_names_supported_ones():
    model = _random_model(np.random.default_rng(13), 2)
    model.kernel = "laplace"
    with pytest.raises(MotifpipeError, match="'laplace' is not supported; supported kernels: "
                                             "gaussian"):
        relu_network(model, 1e-2)


@pytest.mark.parametrize("model, match", [
    (KernelRidge(kernel="rbf"), "not a fitted kernel model"),
    (SimpleNamespace(kernel="gaussian", gamma=1.0, centers=None, coef=None, intercept=0.0),
     r"not a fitted kernel model \(missing centers, coef\)"),
    (KernelModel("gaussian", 1.0, np.zeros((3, 2)), np.zeros(2), 0.0),
     "do not form a fitted model"),
    (KernelModel("gaussian", 1.0, np.zeros((0, 2)), np.zeros(0), 0.0),
     "do not form a fitted model"),
    (KernelModel("gaussian", 0.0, np.zeros((3, 2)), np.zeros(3), 0.0), "gamma must be"),
    (KernelModel("gaussian", 1.0, np.full((3, 2), np.nan), np.zeros(3), 0.0), "non-finite"),
    (SimpleNamespace(kernel="gaussian"), "missing gamma, centers, coef, intercept"),
    (KernelModel("gaussian", "wide", np.zeros((3, 2)), np.zeros(3), 0.0), "invalid kernel model"),
])
def test_unfitted_or_invalid_model(model, match):
    with pytest.raises(MotifpipeError, match=match):
        relu_network(model, 1e-2)


@pytest.mark.parametrize("domain, match", [
    ((np.zeros(3), np.ones(3)), "shapes"),
    ((np.ones(2), np.zeros(2)), "lo <= hi"),
    ((np.zeros(2), np.array([1.0, np.inf])), "finite"),
    (3.0, "pair"),
])
def test_bad_domain(domain, match):
    model = _random_model(np.random.default_rng(14), 2)
    with pytest.raises(MotifpipeError, match=match):
        relu_network(model, 1e-2, domain=domain)


def test_bad_max_params():
    model = _random_model(np.random.default_rng(15), 2)
    with pytest.raises(MotifpipeError, match="max_params must be a positive int"):
        relu_network(model, 1e-2, max_params=0)


def test_skeleton_loads_the_state_dict():
    """save/load only needs dim and widths: the weights rebuild the same function."""
    rng = np.random.default_rng(16)
    model = _random_model(rng, 2)
    net = relu_network(model, 1e-2)
    arch = relu_architecture(net)
    back = relu_skeleton(arch["dim"], arch["widths"])
    back.load_state_dict(net.state_dict())
    X = _held_out(net, rng)[:500]
    np.testing.assert_array_equal(predict(back, X), predict(net, X))


def test_report_needs_points():
    model = _random_model(np.random.default_rng(17), 2)
    net = relu_network(model, 1e-1)
    with pytest.raises(MotifpipeError, match="held-out points"):
        relu_report(net, model, np.zeros((0, 2)))
