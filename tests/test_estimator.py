"""MotifMimicryRegressor: scikit-learn's estimator checks, Pipeline, GridSearchCV,
determinism, tiny data, bad input, quietness and the lazy package export.

scikit-learn checks expected to fail: none (EXPECTED_FAILED_CHECKS is empty; a check
that had to fail by design would be listed there with its reason). One check is skipped
by scikit-learn itself: check_array_api_input needs SCIPY_ARRAY_API=1, and the estimator
does not claim array-API support (torch runs on numpy float64 input instead).
The class inherits (RegressorMixin, BaseEstimator) in that order: check_mixin_order
fails the reverse. Everything runs on the CPU (baseline device and accelerator pinned)
so that predictions are bit-reproducible; one test, skipped without CUDA, fits on a GPU.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from motifpipe.estimator import MotifMimicryRegressor

# One gamma and one lambda: the baseline fit costs one eigendecomposition.
SMALL = {"gamma_factors": [1.0], "lambda_grid": [1e-3], "device": "cpu"}
CPU = {"accelerator": "cpu"}

#: check name -> reason, for scikit-learn checks that fail by design. Empty: all pass.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def small(**kwargs) -> MotifMimicryRegressor:
    params = {"max_epochs": 2, "baseline_params": SMALL, "train_params": CPU} | kwargs
    return MotifMimicryRegressor(**params)


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (120, 2))
    y = np.sin(3 * X[:, 0]) + np.where(X[:, 1] > 0, 1.0, 0.0) + 0.05 * rng.normal(size=120)
    return X, y


@parametrize_with_checks([small()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_import_motifpipe_stays_free_of_torch_and_sklearn():
    code = ("import sys, motifpipe\n"
            "heavy = {'torch', 'pytorch_lightning', 'sklearn'} & set(sys.modules)\n"
            "assert not heavy, heavy\n"
            "from motifpipe import MotifMimicryRegressor\n"
            "assert MotifMimicryRegressor.__module__ == 'motifpipe.estimator'\n"
            "heavy = {'torch', 'pytorch_lightning'} & set(sys.modules)\n"
            "assert not heavy, heavy\n"
            "assert 'MotifMimicryRegressor' in dir(motifpipe)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    import motifpipe

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        motifpipe.nope  # noqa: B018


def test_fit_chains_the_workflow_functions(xy, monkeypatch):
    """Same code as the workflow: fit_baseline -> to_network -> train_arm (mimicry arm)."""
    from motifpipe import train

    calls = {}
    real = train.train_arm

    def spy(net, data, cfg, seed, **kwargs):
        calls.update(cfg=cfg, seed=seed, kwargs=kwargs, split=np.bincount(data.split))
        return real(net, data, cfg, seed, **kwargs)

    monkeypatch.setattr(train, "train_arm", spy)
    X, y = xy
    est = small(random_state=3, lr=2e-3).fit(X, y)
    assert calls["kwargs"]["transferred"] is True
    assert calls["kwargs"]["penalty"] == est.baseline_.info["lam"] == 1e-3
    assert calls["kwargs"]["time_offset_s"] >= est.baseline_.info["fit_time_s"]
    assert calls["seed"] == est.seed_ == 3
    assert calls["cfg"]["lr"] == 2e-3 and calls["cfg"]["protocol"] == "adam"
    assert calls["split"].tolist() == [120 - 24, 24] and est.n_validation_ == 24
    # The transfer is exact, and epoch 0 of the curve is the transferred network.
    assert est.fidelity_["max_rel"] < 1e-10 and est.fidelity_["32_max_rel"] < 1e-5
    assert [r["epoch"] for r in est.history_] == list(range(est.n_epochs_ + 1))
    assert est.history_[0]["time_s"] >= est.baseline_.info["fit_time_s"]
    assert est.history_[0]["val_mse"] == pytest.approx(est.baseline_.info["val_mse"], rel=1e-4)


def test_returned_network_is_the_best_validation_epoch(xy):
    """A destructive learning rate cannot make the estimator worse than its baseline."""
    X, y = xy
    est = small(random_state=0, lr=10.0, transfer_lr=1.0, max_epochs=2).fit(X, y)
    best = min(r["val_mse"] for r in est.history_)
    assert est.history_[est.best_epoch_]["val_mse"] == best <= est.history_[0]["val_mse"]


def test_same_random_state_same_predictions(xy):
    X, y = xy
    a, b = (small(random_state=7).fit(X, y).predict(X) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c = small(random_state=8).fit(X, y).predict(X)
    assert not np.array_equal(a, c)  # another seed draws another validation split


def test_fit_leaves_global_random_states_alone(xy):
    import random

    X, y = xy
    np.random.seed(5)  # noqa: NPY002 - the legacy global state is what is checked
    random.seed(5)
    torch.manual_seed(5)
    expected = (np.random.rand(), random.random(), float(torch.rand(1)))  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    random.seed(5)
    torch.manual_seed(5)
    small(random_state=0).fit(X, y)
    assert (np.random.rand(), random.random(), float(torch.rand(1))) == expected  # noqa: NPY002


def test_predict_dtype_and_float32_input(xy):
    X, y = xy
    est = small(random_state=0).fit(X, y)
    pred = est.predict(X)
    assert pred.shape == (len(X),) and pred.dtype == np.float64
    assert next(est.network_.parameters()).dtype.is_floating_point
    np.testing.assert_allclose(est.predict(X.astype(np.float32)),
                               est.predict(X.astype(np.float32).astype(np.float64)), rtol=0)
    assert est.score(X, y) > 0.8


def test_pipeline_and_pickle(xy):
    X, y = xy
    pipe = make_pipeline(StandardScaler(), small(random_state=0)).fit(X, y)
    assert pipe.score(X, y) > 0.8
    again = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(again.predict(X), pipe.predict(X))


def test_grid_search(xy):
    X, y = xy
    grid = GridSearchCV(small(random_state=0, max_epochs=1),
                        {"baseline_params": [SMALL, {**SMALL, "lambda_grid": [1e-1]}]},
                        cv=2).fit(X, y)
    assert grid.best_params_["baseline_params"]["lambda_grid"] == [1e-3]  # less smoothing
    assert grid.best_estimator_.baseline_.info["lam"] == 1e-3
    assert grid.score(X, y) > 0.8


@pytest.mark.parametrize("n", [2, 3, 5])
def test_tiny_data_validates_on_the_training_data(n):
    rng = np.random.default_rng(n)
    X, y = rng.normal(size=(n, 1)), rng.normal(size=n)
    est = small(random_state=0).fit(X, y)
    assert est.predict(X).shape == (n,)
    # ceil(0.2 * n) rows are held out if at least 2 remain to train the baseline on
    assert est.n_validation_ == (0 if n == 2 else 1)
    assert small(random_state=0, validation_fraction=0.0).fit(X, y).n_validation_ == 0


def test_other_protocols_and_lr_search(xy):
    X, y = xy
    for protocol in ("freeze_then_unfreeze", "lbfgs"):
        est = small(random_state=0, protocol=protocol, max_epochs=1).fit(X, y)
        assert est.score(X, y) > 0.8
    est = small(random_state=0, max_epochs=1,
                train_params={**CPU, "lr_search": [1e-3, 1e-2], "lr_search_epochs": 1})
    assert est.fit(X, y).lr_ in (1e-3, 1e-2)


@pytest.mark.parametrize("baseline, extra", [("svr", {}), ("nystrom", {"centers": 30})])
def test_other_baselines(xy, baseline, extra):
    X, y = xy
    est = small(random_state=0, baseline=baseline, baseline_params={**SMALL, **extra})
    est.fit(X, y)
    assert est.baseline_.info["solver"] == baseline and est.score(X, y) > 0.7


def test_dataframe_feature_names(xy):
    pd = pytest.importorskip("pandas")
    X, y = xy
    frame = pd.DataFrame(X, columns=["a", "b"])
    est = small(random_state=0).fit(frame, y)
    assert est.feature_names_in_.tolist() == ["a", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_frame = est.predict(frame)
    with pytest.warns(UserWarning, match="feature names"):
        np.testing.assert_array_equal(from_frame, est.predict(X))
    with pytest.raises(ValueError, match="feature names"):
        est.predict(frame[["b", "a"]])


def test_fit_is_quiet(xy, capfd):
    X, y = xy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small(random_state=0).fit(X, y).predict(X)
    assert [str(w.message) for w in caught] == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_a_gpu(xy):
    """accelerator and baseline device auto: the GPU path (bf16-mixed training)."""
    X, y = xy
    est = MotifMimicryRegressor(max_epochs=3, random_state=0,
                                baseline_params={**SMALL, "device": "auto"}).fit(X, y)
    assert est.baseline_.info["device"] == "cuda"
    assert est.fidelity_["32_max_rel"] < 1e-5 and est.score(X, y) > 0.8
    assert next(est.network_.parameters()).device.type == "cpu"


def test_unfitted_estimator_raises_not_fitted():
    with pytest.raises(NotFittedError):
        MotifMimicryRegressor().predict(np.zeros((2, 2)))


@pytest.mark.parametrize("param, value", [
    ("baseline", "lasso"), ("transfer", "sigmoid"), ("protocol", "sgd"), ("max_epochs", 0),
    ("max_epochs", 2.5), ("batch_size", 0), ("lr", -1.0), ("transfer_lr", float("nan")),
    ("validation_fraction", 1.0), ("patience", 0), ("max_time_s", 0),
    ("baseline_params", {"kind": "svr"}), ("baseline_params", {"gamma": 1.0}),
    ("baseline_params", [1]), ("train_params", {"lr": 1.0}), ("train_params", {"foo": 1}),
    ("train_params", {"precision": "8-bit"}), ("transfer_params", {"nope": 1}),
    ("random_state", -1),
])
def test_invalid_params_raise_value_error_naming_them(xy, param, value):
    X, y = xy
    est = small(**{param: value})
    with pytest.raises(ValueError, match=param):
        est.fit(X[:20], y[:20])


def test_relu_transfer_within_tol(xy):
    X, y = xy
    est = small(random_state=0, transfer="relu", transfer_params={"tol": 0.05}).fit(X, y)
    assert est.fidelity_["max_abs"] <= 0.05
    assert est.predict(X).shape == (len(X),) and est.score(X, y) > 0.8


def test_failed_fidelity_check_fails_the_fit(xy):
    X, y = xy
    with pytest.raises(ValueError, match="transfer_params.*max_rel_error"):
        small(transfer_params={"max_rel_error": 1e-30}).fit(X, y)


def test_defaults_mirror_the_config_schema():
    from conftest import ROOT
    from motifpipe import estimator, train
    from motifpipe.config import load_schema

    props = load_schema(ROOT / "workflow/schemas/config.schema.yaml")["properties"]
    schema_transfer = {k: v["default"] for k, v in props["transfer"]["properties"].items()}
    assert schema_transfer == {"kind": "rbf", **estimator.TRANSFER_DEFAULTS}
    assert set(props["transfer"]["properties"]["kind"]["enum"]) == set(estimator.TRANSFERS)
    train_props = props["train"]["properties"]
    assert set(train_props["protocol"]["enum"]) == set(estimator.PROTOCOLS)
    assert set(props["baseline"]["properties"]["kind"]["enum"]) == set(estimator.BASELINES)
    assert set(estimator._NAMED) <= set(train.DEFAULTS)
    # The estimator's own defaults are the workflow's.
    est = MotifMimicryRegressor()
    for key in ("max_epochs", "lr", "transfer_lr", "patience", "max_time_s", "protocol"):
        assert getattr(est, key) == train.DEFAULTS[key], key


def test_baseline_errors_become_value_errors():
    X = np.ones((6, 2))  # identical points: no median heuristic for the kernel width
    with pytest.raises(ValueError, match="identical"):
        small().fit(X, np.arange(6.0))
    with pytest.raises(ValueError, match="transfers with transfer='cos'"):
        small(baseline="rff").fit(np.random.default_rng(0).normal(size=(8, 2)), np.ones(8))


def test_random_features_transfer_through_cos():
    rng = np.random.default_rng(0)
    X = rng.random((120, 2))
    y = np.sin(4 * X[:, 0]) + 0.05 * rng.normal(size=120)
    est = small(baseline="rff", transfer="cos",
                baseline_params={"features": 64, "gamma_factors": [1.0],
                                 "lambda_grid": [1e-3]}).fit(X, y)
    assert est.fidelity_["max_abs"] < 1e-6
    assert est.predict(X).shape == (120,)
