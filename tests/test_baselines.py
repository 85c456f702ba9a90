"""Tests of motifpipe.baselines against independent references (scikit-learn, numpy
pseudo-inverses, explicit refits, brute-force k-fold search)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

try:
    import motifpipe  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from motifpipe import baselines as B
from motifpipe.errors import MotifpipeError

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
GF = [0.25, 0.5, 1, 2, 4, 8, 16]
LG = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def make_data(n=120, d=3, seed=0, noise=0.1):
    """Smooth target plus noise: X (n, d) uniform on [-1, 1]^d, y (n,)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, d))
    y = np.sin(2 * X[:, 0]) + X[:, 1 % d] ** 2 + noise * rng.standard_normal(n)
    return X, y


def wavy(n, seed, noise=0.3):
    """2-D target with a clear optimum on the (gamma, lambda) grid."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, np.sin(3 * X[:, 0]) * np.cos(2 * X[:, 1]) + noise * rng.standard_normal(n)


def one_point(kind, lam=1e-3, factor=1.0, **extra):
    return {"kind": kind, "gamma_factors": [factor], "lambda_grid": [lam], **extra}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny matrices: BLAS threads only add contention (the suite shares 2 cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def data():
    X, y = make_data(150)
    Xv, yv = make_data(60, seed=1)
    return X, y, Xv, yv


# --------------------------------------------------------------------------- krr


@pytest.mark.parametrize("lam", [1e-6, 1e-3, 1e-1])
def test_krr_matches_sklearn_kernel_ridge(data, lam):
    from sklearn.kernel_ridge import KernelRidge

    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, one_point("krr", lam, 2.0), seed=0)
    ref = KernelRidge(kernel="rbf", gamma=m.gamma, alpha=lam * X.shape[0]).fit(X, y - y.mean())
    np.testing.assert_allclose(m.predict(Xv), ref.predict(Xv) + y.mean(), rtol=0, atol=1e-8)


def test_krr_selected_model_matches_sklearn(data):
    from sklearn.kernel_ridge import KernelRidge

    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {}, seed=0)
    ref = KernelRidge(kernel="rbf", gamma=m.gamma, alpha=m.info["lam"] * X.shape[0])
    ref.fit(X, y - y.mean())
    np.testing.assert_allclose(m.predict(Xv), ref.predict(Xv) + y.mean(), rtol=0, atol=1e-8)


def test_info_fields_and_curve(data):
    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {"gamma_factors": [0.5, 1, 2], "lambda_grid": [1e-4, 1e-2]}, 0)
    for key in ("solver", "lam", "gamma", "fit_time_s", "curve", "val_mse", "score", "n_train"):
        assert key in m.info
    assert m.info["solver"] == "krr" and m.info["fit_time_s"] > 0
    assert len(m.info["curve"]) == 6
    best = min(m.info["curve"], key=lambda r: r["score"])
    assert best["gamma"] == m.gamma and best["lam"] == m.info["lam"]
    assert m.intercept == pytest.approx(y.mean())
    assert m.centers.dtype == np.float64 and m.coef.shape == (X.shape[0],)


@pytest.mark.parametrize("selection", ["loo", "gcv", "val"])
def test_selection_criteria_give_good_models(data, selection):
    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {"selection": selection}, seed=0)
    assert np.isfinite(m.predict(Xv)).all()
    assert m.info["val_mse"] < 0.2 * np.var(yv)


def _explicit_loo(Phi_or_K, yc, t, dual):
    """Mean squared LOO residual by n refits with the same shift t."""
    n, errs = yc.shape[0], []
    for i in range(n):
        keep = np.arange(n) != i
        if dual:
            K = Phi_or_K
            a = np.linalg.solve(K[np.ix_(keep, keep)] + t * np.eye(n - 1), yc[keep])
            errs.append((yc[i] - K[i, keep] @ a) ** 2)
        else:
            P = Phi_or_K[keep]
            w = np.linalg.solve(P.T @ P + t * np.eye(P.shape[1]), P.T @ yc[keep])
            errs.append((yc[i] - Phi_or_K[i] @ w) ** 2)
    return np.mean(errs)


def _ctx(**cfg):
    return B._Ctx(B._resolve_cfg(cfg), np.random.default_rng(0), B._NumpyBackend())


@pytest.mark.parametrize("t", [1e-4, 0.05, 3.0])
def test_loo_closed_form_equals_explicit_refits_dual(t):
    X, y = make_data(25, d=2, seed=3)
    yc = y - y.mean()  # LOO of the centred problem: the intercept is held at the full mean
    K = B.gaussian_kernel(X, X, 1.3)
    sp = B._spectrum_dual(_ctx(), K, yc)
    score = B._path_scores(sp, np.array([t]), "loo")[0]
    assert score == pytest.approx(_explicit_loo(K, yc, t, dual=True), rel=1e-7)


@pytest.mark.parametrize("t", [0.0, 0.01, 1.0])
def test_loo_closed_form_equals_explicit_refits_features(t):
    X, y = make_data(30, d=2, seed=4)
    yc = y - y.mean()
    rng = np.random.default_rng(0)
    W, ph = rng.standard_normal((8, 2)), rng.uniform(0, 2 * np.pi, 8)
    feats = lambda Xb: np.cos(Xb @ W.T + ph)  # noqa: E731
    sp = B._spectrum_primal(_ctx(), feats, 8, X, yc, np.arange(30), None)
    score = B._path_scores(sp, np.array([t]), "loo")[0]
    assert score == pytest.approx(_explicit_loo(feats(X), yc, t, dual=False), rel=1e-7)


def test_gcv_matches_direct_formula():
    X, y = make_data(40, d=2, seed=5)
    yc, t = y - y.mean(), 0.2
    K = B.gaussian_kernel(X, X, 0.7)
    H = K @ np.linalg.inv(K + t * np.eye(40))
    direct = np.mean((yc - H @ yc) ** 2) / (1 - np.trace(H) / 40) ** 2
    score = B._path_scores(B._spectrum_dual(_ctx(), K, yc), np.array([t]), "gcv")[0]
    assert score == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_selection_within_one_grid_step_of_kfold(seed):
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV, KFold

    X, y = wavy(200, seed)
    m = B.fit_baseline(X, y, X[:0], y[:0], {"gamma_factors": GF, "lambda_grid": LG}, 0)
    g0, nf = m.info["median_gamma"], 160  # nf: training rows per fold, for alpha = n * lam
    grid = {"gamma": [f * g0 for f in GF], "alpha": [lam * nf for lam in LG]}
    gs = GridSearchCV(KernelRidge(kernel="rbf"), grid, cv=KFold(5, shuffle=True, random_state=0),
                      scoring="neg_mean_squared_error").fit(X, y - y.mean())
    bg = int(np.argmin(np.abs(np.array(grid["gamma"]) - gs.best_params_["gamma"])))
    bl = int(np.argmin(np.abs(np.array(grid["alpha"]) - gs.best_params_["alpha"])))
    assert abs(GF.index(m.info["gamma_factor"]) - bg) <= 1
    assert abs(LG.index(m.info["lam"]) - bl) <= 1


def test_krr_approximate_selection_path(data):
    from sklearn.kernel_ridge import KernelRidge

    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {"select_centers": 60}, seed=0)
    exact = B.fit_baseline(X, y, Xv, yv, {}, seed=0)
    assert m.info["selection_approx"] == "nystrom(60)"
    assert m.info["val_mse"] <= 1.05 * exact.info["val_mse"]
    ref = KernelRidge(kernel="rbf", gamma=m.gamma, alpha=m.info["lam"] * X.shape[0])
    ref.fit(X, y - y.mean())  # the final fit stays exact
    np.testing.assert_allclose(m.predict(Xv), ref.predict(Xv) + y.mean(), rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- nystrom / rff / svr


@pytest.mark.parametrize("selection", ["loo", "gcv", "val"])
def test_nystrom_with_all_centres_equals_krr(data, selection):
    X, y, Xv, yv = data
    cfg = one_point("nystrom", 1e-3, centers=X.shape[0], jitter=1e-12, selection=selection)
    mn = B.fit_baseline(X, y, Xv, yv, cfg, seed=0)
    mk = B.fit_baseline(X, y, Xv, yv, {**cfg, "kind": "krr"}, seed=0)
    np.testing.assert_allclose(mn.predict(Xv), mk.predict(Xv), rtol=0, atol=1e-7)
    assert mn.info["score"] == pytest.approx(mk.info["score"], rel=1e-6)
    assert mn.info["backend"] == "torch"


def test_nystrom_selects_and_predicts(data):
    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {"kind": "nystrom", "centers": 40}, seed=0)
    assert m.centers.shape == (40, 3) and m.coef.shape == (40,)
    assert m.info["val_mse"] < 0.2 * np.var(yv)


def test_two_stage_selection_on_subsample():
    X, y = make_data(600, seed=2)
    Xv, yv = make_data(100, seed=3)
    m = B.fit_baseline(X, y, Xv, yv, {"kind": "nystrom", "centers": 50, "selection_max_n": 100}, 0)
    stages = {r["stage"] for r in m.info["curve"]}
    assert stages == {"subsample", "full"} and m.info["selection_rows"] == 100
    full = [r for r in m.info["curve"] if r["stage"] == "full"]
    assert len(full) == 6 and {r["gamma"] for r in full} == {m.gamma}
    assert m.info["val_mse"] < 0.2 * np.var(yv)


def test_rff_approaches_krr_as_features_grow(data):
    X, y, Xv, yv = data
    krr = B.fit_baseline(X, y, Xv, yv, one_point("krr", 1e-3), seed=0).predict(Xv)
    errs = [np.abs(B.fit_baseline(X, y, Xv, yv, one_point("rff", 1e-3, features=F), 0)
                   .predict(Xv) - krr).max() for F in (100, 1000, 10000)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.05


@pytest.mark.parametrize("F", [20, 300])
def test_rff_ridgeless_is_minimum_norm_least_squares(data, F):
    X, y, Xv, yv = data  # F < n: least squares; F > n: minimum-norm interpolation
    m = B.fit_baseline(X, y, Xv, yv, one_point("rff", 0.0, features=F), seed=0)
    Phi = np.cos(X @ m.W.T + m.phase)
    np.testing.assert_allclose(m.coef, np.linalg.pinv(Phi) @ (y - y.mean()), rtol=1e-6, atol=1e-8)
    assert np.isfinite(m.predict(Xv)).all()


@pytest.mark.parametrize("selection", ["loo", "gcv", "val"])
def test_rff_gram_path_agrees_with_svd_path(data, selection, monkeypatch):
    X, y, Xv, yv = data  # F < n/2 and lam > 0 take the Gram route; force the SVD route too
    cfg = {"kind": "rff", "features": 30, "gamma_factors": [1, 2], "lambda_grid": [1e-3, 1e-2],
           "selection": selection}
    a = B.fit_baseline(X, y, Xv, yv, cfg, seed=0)
    monkeypatch.setattr(B, "_feature_select", lambda ctx, X, yc, Xv_, rv, m, mf, w, info:
                        B._rff_svd_select(ctx, X, yc, Xv_, rv, mf, info))
    b = B.fit_baseline(X, y, Xv, yv, cfg, seed=0)
    assert (a.gamma, a.info["lam"]) == (b.gamma, b.info["lam"])
    np.testing.assert_allclose(a.predict(Xv), b.predict(Xv), rtol=0, atol=1e-9)
    np.testing.assert_allclose([r["score"] for r in a.info["curve"]],
                               [r["score"] for r in b.info["curve"]], rtol=1e-8)


def test_svr_matches_sklearn(data):
    from sklearn.svm import SVR

    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {"kind": "svr", "gamma_factors": [1, 2],
                                      "lambda_grid": [1e-3, 1e-2]}, seed=0)
    ref = SVR(kernel="rbf", gamma=m.gamma, C=m.info["C"], epsilon=0.1).fit(X, y)
    np.testing.assert_allclose(m.predict(Xv), ref.predict(Xv), rtol=0, atol=1e-8)
    assert m.info["C"] == pytest.approx(1 / (2 * X.shape[0] * m.info["lam"]))
    assert m.centers.shape[0] == m.info["n_support"] < X.shape[0]


def test_svr_fixed_C(data):
    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {"kind": "svr", "C": 3.0, "gamma_factors": [1]}, 0)
    assert m.info["C"] == 3.0 and len(m.info["curve"]) == 1


@pytest.mark.parametrize("n, choice", [(100, "krr"), (200, "nystrom")])
def test_auto_switches_on_size(n, choice):
    X, y = make_data(n)
    m = B.fit_baseline(X, y, X[:10], y[:10], {"kind": "auto", "auto_threshold": 150,
                                                "centers": 30}, 0)
    assert m.info["auto_choice"] == choice == m.info["solver"] and m.info["kind"] == "auto"


def _gpu_code_on_cpu():
    bk = B._TorchBackend("cpu")
    bk.host_lapack = False  # the torch-only branches a GPU takes
    return bk


@pytest.mark.parametrize("kind, extra", [
    ("krr", {}), ("krr", {"select_centers": 100}),            # exact / approximate selection
    ("nystrom", {"centers": 60}),
    ("rff", {"features": 50}), ("rff", {"features": 100}),    # Gram / SVD route
])
@pytest.mark.parametrize("selection", ["loo", "val"])
def test_torch_backends_match_numpy_backend(data, kind, extra, selection):
    X, y, Xv, yv = data  # the torch code that runs on a GPU, exercised on the CPU
    cfg = B._resolve_cfg({"kind": kind, "selection": selection, "gamma_factors": [1, 2], **extra})
    fit = {"krr": B._fit_krr, "nystrom": B._fit_nystrom, "rff": B._fit_rff}[kind]
    results = []
    for bk in (B._NumpyBackend(), B._TorchBackend("cpu"), _gpu_code_on_cpu()):
        ctx = B._Ctx(cfg, np.random.default_rng(0), bk)
        results.append(fit(X, y, Xv, yv, ctx).predict(Xv))
    np.testing.assert_allclose(results[1], results[0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(results[2], results[0], rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", ["krr", "nystrom", "rff", "svr"])
def test_save_load_roundtrip(tmp_path, data, kind):
    X, y, Xv, yv = data
    m = B.fit_baseline(X, y, Xv, yv, {"kind": kind, "centers": 30, "features": 40,
                                      "gamma_factors": [1, 2], "lambda_grid": [1e-3]}, 0)
    path = tmp_path / "model.safetensors"
    B.save_model(m, path)
    m2 = B.load_model(path)
    assert type(m2) is type(m)
    np.testing.assert_array_equal(m2.predict(Xv), m.predict(Xv))
    assert m2.info["lam"] == m.info["lam"] and m2.gamma == m.gamma
    assert m2.info["curve"] == m.info["curve"]


def test_deterministic(data):
    X, y, Xv, yv = data
    for kind in ("krr", "nystrom", "rff"):
        cfg = {"kind": kind, "centers": 30, "features": 40}
        a, b = (B.fit_baseline(X, y, Xv, yv, cfg, seed=5) for _ in range(2))
        np.testing.assert_array_equal(a.coef, b.coef)


def test_load_rejects_foreign_file(tmp_path):
    from motifpipe.io import save_arrays

    p = tmp_path / "x.safetensors"
    save_arrays(p, {"a": np.zeros(2)}, {"form": "dataset"})
    with pytest.raises(MotifpipeError, match="form='dataset'"):
        B.load_model(p)


def test_schema_defaults_match_module_defaults():
    yaml = pytest.importorskip("yaml")
    props = yaml.safe_load(SCHEMA.read_text())["properties"]["baseline"]["properties"]
    assert set(props) == set(B.DEFAULTS)
    for key, sub in props.items():
        assert sub.get("default") == B.DEFAULTS[key], key


# --------------------------------------------------------------------------- bad input


def test_duplicates_and_zero_lambda_warn_and_stay_finite():
    X, y = make_data(40, d=2)
    X = np.vstack([X, X[:10]])
    y = np.concatenate([y, y[:10] + 0.05])
    with pytest.warns(RuntimeWarning, match="jitter"):
        m = B.fit_baseline(X, y, X, y, {"lambda_grid": [0.0]}, seed=0)
    assert np.isfinite(m.coef).all() and np.isfinite(m.predict(X)).all()


@pytest.mark.parametrize("kind", ["nystrom", "rff"])
def test_duplicates_stay_finite_for_feature_solvers(kind):
    X, y = make_data(40, d=2)
    X, y = np.vstack([X, X]), np.concatenate([y, y + 0.05])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = B.fit_baseline(X, y, X, y, {"kind": kind, "lambda_grid": [0.0, 1e-3],
                                        "centers": 80, "features": 100}, 0)
    assert np.isfinite(m.coef).all() and np.isfinite(m.predict(X)).all()


def test_zero_lambda_warns_once():
    X, y = make_data(30, d=2)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        B.fit_baseline(X, y, X, y, {"lambda_grid": [0.0, 1e-3], "gamma_factors": [1, 2]}, 0)
    assert len([w for w in rec if "jitter" in str(w.message)]) == 1


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"lambda_grid": []}, "lambda_grid: empty grid"),
        ({"gamma_factors": []}, "gamma_factors: empty grid"),
        ({"gamma_factors": [0.0]}, "gamma factor 0.0"),
        ({"gamma_factors": [-1.0]}, "gamma factor -1.0"),
        ({"lambda_grid": [-1e-3]}, "lambda -0.001"),
        ({"kind": "nope"}, "baseline.kind"),
        ({"kind": "nystrom", "centers": 1000}, "centers: 1000 centres > 150"),
        ({"selection": "kfold"}, "baseline.selection"),
        ({"jitter": 0}, "baseline.jitter"),
        ({"centres": 5}, "unknown key 'centres'"),
    ],
)
def test_bad_config_raises_one_line(data, cfg, match):
    X, y, Xv, yv = data
    with pytest.raises(MotifpipeError, match=match) as exc:
        B.fit_baseline(X, y, Xv, yv, cfg, seed=0)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_target_raises(data, bad):
    X, y, Xv, yv = data
    y = y.copy()
    y[7] = bad
    with pytest.raises(MotifpipeError, match=rf"y\[7\] = {bad}"):
        B.fit_baseline(X, y, Xv, yv, {}, seed=0)


def test_cuda_request_without_gpu_is_a_user_error(data):
    if B._cuda_available():
        pytest.skip("a GPU is present")
    X, y, Xv, yv = data
    with pytest.raises(MotifpipeError, match="baseline.device"):
        B.fit_baseline(X, y, Xv, yv, {"device": "cuda"}, seed=0)


# --------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_approximate_krr_selection_close_to_exact_at_3000():
    X, y = make_data(3000, d=5, seed=7)
    Xv, yv = make_data(1000, d=5, seed=8)
    cfg = {"gamma_factors": [0.25, 0.5, 1, 2, 4], "lambda_grid": [1e-6, 1e-5, 1e-4, 1e-3]}
    approx = B.fit_baseline(X, y, Xv, yv, cfg, seed=0)
    exact = B.fit_baseline(X, y, Xv, yv, {**cfg, "select_centers": 3000}, seed=0)
    assert approx.info["selection_approx"] == "nystrom(1000)"
    assert approx.info["val_mse"] <= 1.05 * exact.info["val_mse"]


@pytest.mark.slow
def test_nystrom_two_stage_matches_single_stage_choice():
    X, y = make_data(20000, d=5, seed=9)
    Xv, yv = make_data(2000, d=5, seed=10)
    two = B.fit_baseline(X, y, Xv, yv, {"kind": "nystrom", "centers": 500}, seed=0)
    one = B.fit_baseline(X, y, Xv, yv, {"kind": "nystrom", "centers": 500,
                                        "selection_max_n": 20000}, seed=0)
    assert two.info["selection_rows"] == 5000 and one.info["selection_rows"] == 20000
    assert two.info["val_mse"] <= 1.05 * one.info["val_mse"]
