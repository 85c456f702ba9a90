"""Transfer fidelity against the baseline's own predict (an independent numpy path)."""

import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge

from conftest import random_kernel_model
from motifpipe import transfer
from motifpipe.baselines import KernelModel
from motifpipe.errors import MotifpipeError


@pytest.mark.parametrize("seed", range(5))
def test_rbf_is_exact_for_random_models(seed):
    rng = np.random.default_rng(seed)
    model = random_kernel_model(rng)
    X = rng.random((500, 3))
    net = transfer.to_network(model)
    fid64 = transfer.fidelity(net, model, X)
    assert fid64["max_abs"] <= 1e-10 * (1 + np.abs(model.predict(X)).max())
    fid32 = transfer.fidelity(net.float(), model, X)
    assert fid32["max_rel"] <= 1e-5


def test_rbf_matches_sklearn_kernel_ridge():
    rng = np.random.default_rng(0)
    X, y = rng.random((80, 2)), rng.normal(size=80)
    kr = KernelRidge(kernel="rbf", gamma=7.0, alpha=1e-3).fit(X, y)
    model = KernelModel("gaussian", 7.0, X, kr.dual_coef_, 0.0)
    net = transfer.to_network(model)
    Xt = rng.random((200, 2))
    with torch.no_grad():
        out = net(torch.as_tensor(Xt)).numpy()
    np.testing.assert_allclose(out, kr.predict(Xt), atol=1e-9)


def test_whitened_head_carries_the_rkhs_norm():
    """A lightly regularised fit has huge cancelling coefficients; the head does not."""
    rng = np.random.default_rng(1)
    X = rng.random((100, 2))
    y = np.sin(6 * X[:, 0]) + 0.1 * rng.normal(size=100)
    kr = KernelRidge(kernel="rbf", gamma=10.0, alpha=1e-4).fit(X, y)
    model = KernelModel("gaussian", 10.0, X, kr.dual_coef_, 0.0)
    net = transfer.to_network(model)
    K = np.exp(-10.0 * ((X[:, None] - X[None]) ** 2).sum(-1))
    K[np.diag_indices_from(K)] += transfer.DEFAULT_JITTER  # |w|^2 = a^T (K + jitter I) a
    rkhs2 = model.coef @ K @ model.coef
    assert float(net.rkhs_norm2().detach()) == pytest.approx(rkhs2, rel=1e-6)
    assert np.abs(model.coef).max() > 100
    assert np.abs(model.coef).max() > 10 * float(net.w.detach().abs().max())


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    model = random_kernel_model(rng)
    net = transfer.to_network(model)
    transfer.save_network(net, tmp_path / "net.st")
    back, meta = transfer.load_network(tmp_path / "net.st")
    X = torch.as_tensor(rng.random((50, 3)))
    with torch.no_grad():
        torch.testing.assert_close(back(X), net(X))
    assert meta["architecture"]["units"] == 50


def test_load_rejects_wrong_shapes(tmp_path):
    from motifpipe.io import load_arrays, save_arrays

    net = transfer.MLP(3, 2, 8)
    transfer.save_network(net, tmp_path / "mlp.st")
    arrays, meta = load_arrays(tmp_path / "mlp.st")
    arrays["0.weight"] = np.zeros((9, 3))
    save_arrays(tmp_path / "bad.st", arrays, meta)
    with pytest.raises(MotifpipeError, match=r"'0.weight' has shape \(9, 3\)"):
        transfer.load_network(tmp_path / "bad.st")


def test_scratch_has_the_transfer_architecture(small_ds, kernel_model):
    X, _, _ = small_ds.part("train")
    net = transfer.to_network(kernel_model)
    scratch = transfer.random_rbf(X, len(kernel_model.coef), seed=0)
    assert transfer.architecture(scratch) == transfer.architecture(net)
    again = transfer.random_rbf(X, len(kernel_model.coef), seed=0)
    torch.testing.assert_close(again.centers, scratch.centers)


def test_unsupported_kernel_is_named():
    model = KernelModel("laplace", 1.0, np.zeros((2, 2)), np.zeros(2), 0.0)
    with pytest.raises(MotifpipeError, match="'laplace'.*supported kernels: gaussian"):
        transfer.to_network(model)


def test_fitted_sklearn_models_transfer_exactly():
    from sklearn.svm import SVR

    rng = np.random.default_rng(3)
    X = rng.random((120, 2))
    y = np.sin(5 * X[:, 0]) + 0.1 * rng.normal(size=120)
    Xt = rng.random((300, 2))
    for est in (KernelRidge(kernel="rbf", gamma=4.0, alpha=1e-2).fit(X, y),
                SVR(kernel="rbf", gamma=4.0, C=10.0, epsilon=0.05).fit(X, y)):
        net = transfer.to_network(est)
        with torch.no_grad():
            out = net(torch.as_tensor(Xt)).numpy()
        np.testing.assert_allclose(out, est.predict(Xt), atol=1e-9, err_msg=type(est).__name__)


def test_unfitted_or_non_gaussian_sklearn_models_are_refused():
    from sklearn.svm import SVR

    with pytest.raises(MotifpipeError, match="KernelRidge is not fitted"):
        transfer.to_network(KernelRidge(kernel="rbf"))
    with pytest.raises(MotifpipeError, match=r"SVR\(kernel='linear'\).*supported: kernel='rbf'"):
        transfer.to_network(SVR(kernel="linear").fit(np.zeros((3, 1)), [0, 1, 0]))


def test_relu_kind_through_to_network_and_save_load(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.random((30, 2))
    kr = KernelRidge(kernel="rbf", gamma=3.0, alpha=1e-1).fit(X, np.cos(4 * X[:, 1]))
    box = (np.zeros(2), np.ones(2))  # the guarantee holds on this box
    net = transfer.to_network(kr, kind="relu", tol=0.05, domain=box)
    assert {type(m).__name__ for m in net} <= {"Linear", "ReLU", "Flatten"}
    Xt = rng.random((2000, 2))
    assert transfer.fidelity(net, kr, Xt)["max_abs"] <= 0.05
    transfer.save_network(net, tmp_path / "relu.st")
    back, meta = transfer.load_network(tmp_path / "relu.st")
    assert meta["architecture"]["kind"] == "relu"
    with torch.no_grad():
        torch.testing.assert_close(back(torch.as_tensor(Xt)), net(torch.as_tensor(Xt)))
    with pytest.raises(MotifpipeError, match="needs a tolerance"):
        transfer.to_network(kr, kind="relu")


def test_reinitialise_keeps_the_architecture():
    net = transfer.MLP(3, 2, 8)
    before = transfer.architecture(net)
    w0 = net[0].weight.detach().clone()
    fresh = transfer.reinitialise(net, np.zeros((5, 3)), seed=1)
    assert transfer.architecture(fresh) == before
    assert not torch.equal(fresh[0].weight, w0)


def test_cos_transfer_is_exact_for_random_features(tmp_path, small_ds):
    from motifpipe import baselines

    X, y, _ = small_ds.part("train")
    Xv, yv, _ = small_ds.part("val")
    rff = baselines.fit_baseline(X, y, Xv, yv, {"kind": "rff", "features": 64}, seed=0)
    net = transfer.to_network(rff, kind="cos")
    assert transfer.fidelity(net, rff, Xv)["max_abs"] < 1e-10
    assert transfer.architecture(net)["widths"] == [64]
    transfer.save_network(net, tmp_path / "cos.st")
    back, _ = transfer.load_network(tmp_path / "cos.st")
    assert transfer.fidelity(back.double(), rff, Xv)["max_abs"] < 1e-10
    with pytest.raises(MotifpipeError, match="transfers with transfer.kind 'cos' only"):
        transfer.to_network(rff)


def test_deepsets_is_permutation_invariant_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = transfer.DeepSets(m=5, k=3, width=16, pool="sum").double()
    x = torch.randn(7, 15, dtype=torch.float64)
    perm = x.reshape(7, 5, 3)[:, [3, 1, 4, 0, 2]].reshape(7, 15)
    assert net(x).shape == (7,)
    assert torch.allclose(net(x), net(perm), atol=1e-12)
    # a plain MLP on the same flattened input is not invariant: the test can fail
    mlp = transfer.MLP(15, 2, 16).double()
    assert not torch.allclose(mlp(x), mlp(perm), atol=1e-6)
    transfer.save_network(net, tmp_path / "ds.safetensors")
    back, _ = transfer.load_network(tmp_path / "ds.safetensors")
    assert transfer.architecture(back) == transfer.architecture(net)
    assert torch.equal(back(x), net(x))
