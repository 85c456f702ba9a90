"""Motif Mimicry as a scikit-learn estimator: :class:`MotifMimicryRegressor`.

``fit`` runs the workflow's three steps in memory, through the same functions the
Snakemake stages call (``motifpipe.stages``):

1. ``motifpipe.baselines.fit_baseline`` -- the convex kernel model, hyper-parameter
   selection included (``baseline`` and ``baseline_params`` form the config's
   ``baseline:`` section);
2. ``motifpipe.transfer.to_network`` -- the analytic transfer, with its fidelity
   measured on the validation rows, in float64 and float32 (``fidelity_``);
3. ``motifpipe.train.train_arm`` -- Lightning retraining of the transferred network as
   the workflow's ``mimicry`` arm: ``transferred=True``, the baseline's ridge lambda as
   the penalty, and the clock started at the baseline fit (``history_["time_s"]``).

Top-level imports are numpy and scikit-learn only; torch and Lightning are imported by
``fit``/``predict``, so ``from motifpipe import MotifMimicryRegressor`` stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
import random
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

#: Baseline kinds of ``motifpipe.baselines.fit_baseline`` (its config's ``kind``).
BASELINES = ("auto", "krr", "svr", "nystrom", "rff")
#: Transfer kinds the workflow's config accepts; ``to_network`` says which it builds.
TRANSFERS = ("rbf", "relu")
#: The mini-batch size when ``batch_size=None``: the default study's mimicry arm
#: (``arm_train.mimicry.batch_size`` in config/config.yaml). Every step of an RBF net
#: refactors the m x m kernel matrix of its centres, so few large steps win.
DEFAULT_BATCH_SIZE = 1024
#: A transfer whose max |net - baseline| / (1 + max |baseline|) exceeds this (the
#: workflow's ``transfer.max_rel_error`` default) is reported with a RuntimeWarning.
MAX_REL_ERROR = 1e-4
#: Entries of the widest layer's activations per prediction block (128 MiB in float64).
_PREDICT_ENTRIES = 1 << 24

# Keys of ``train_params`` and their checks; the named parameters own the other keys.
_TRAIN_CHECKS = {
    "warmup_epochs": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "weight_decay": ("a number >= 0", lambda v: _is_real(v) and v >= 0),
    "grad_clip": ("a number >= 0 (0 turns clipping off)", lambda v: _is_real(v) and v >= 0),
    "precision": ("one of auto, 32-true, 64-true, bf16-mixed, 16-mixed",
                  lambda v: v in ("auto", "32-true", "64-true", "bf16-mixed", "16-mixed")),
    "accelerator": ("one of auto, cpu, gpu", lambda v: v in ("auto", "cpu", "gpu")),
}


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return (isinstance(v, numbers.Real) and not isinstance(v, bool)
            and math.isfinite(float(v)))


class MotifMimicryRegressor(RegressorMixin, BaseEstimator):
    """Fit a kernel model, transfer it analytically into a network, retrain the network.

    Parameters
    ----------
    baseline : {"auto", "krr", "svr", "nystrom", "rff"}, default="auto"
        Convex baseline (``motifpipe.baselines``); ``auto`` is exact kernel ridge up to
        ``baseline_params["auto_threshold"]`` (5000) training points, Nyström above.
    transfer : str, default="rbf"
        Kind of analytic transfer (``motifpipe.transfer.to_network``): ``rbf`` is exact
        (Gaussian units with a whitened linear head).
    protocol : str, default="adam"
        Retraining protocol. ``adam``: Adam with learning-rate warm-up, transferred
        parameters (centres, width) at ``transfer_lr`` and the head at ``lr``. Other
        names are accepted once ``motifpipe.train`` offers them (a ``protocol`` key in
        ``motifpipe.train.DEFAULTS``).
    max_epochs : int, default=100
    batch_size : int or None, default=None
        Mini-batch size; None means 1024 (full batch below 1024 training points).
    lr : float, default=1e-3
        Learning rate of the head (and of all parameters of a non-RBF network).
    transfer_lr : float, default=1e-4
        Learning rate of the transferred centres and width.
    validation_fraction : float in [0, 1), default=0.2
        Share of the samples held out, drawn from ``random_state``, to select the
        baseline's hyper-parameters where its selection uses them (SVR, ``selection:
        val``), to measure the transfer's fidelity, to stop early and to pick the
        returned epoch. With 0, or when the split would leave fewer than 2 training
        points (tiny data sets), validation runs on the training data itself: early
        stopping and the best epoch then follow the training error.
    patience : int, default=20
        Early-stopping patience in epochs on the validation MSE.
    max_time_s : float, default=600
        Wall-clock limit of the retraining, in seconds.
    baseline_params : dict or None, default=None
        Further keys of the config's ``baseline:`` section (see
        ``motifpipe.baselines.DEFAULTS``), e.g. ``{"gamma_factors": [1.0],
        "lambda_grid": [1e-3]}`` for a quick fit. ``kind`` is set by ``baseline``.
    transfer_params : dict or None, default=None
        Keyword arguments of ``motifpipe.transfer.to_network`` (e.g. ``jitter``).
    train_params : dict or None, default=None
        Further keys of the config's ``train:`` section: ``warmup_epochs``,
        ``weight_decay``, ``grad_clip``, ``precision`` (``auto``: bf16-mixed on a GPU,
        32-true on CPU) and ``accelerator`` (``auto``, ``cpu`` or ``gpu``).
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, the baseline's subsampling and the training (batch
        order). An int is used as the workflow's ``seed`` itself. Same int, same data,
        on CPU: identical predictions. Fitting leaves the global random states of
        ``random``, numpy and torch as it found them.

    Attributes
    ----------
    baseline_ : motifpipe.baselines.KernelModel
        The fitted convex model (``baseline_.info``: solver, gamma, lam, selection).
    network_ : torch.nn.Module
        The retrained network, on the CPU, in float64, in eval mode; it carries the
        weights of the best validation epoch (epoch 0 is the transferred network).
    fidelity_ : dict
        ``max_abs``, ``rms``, ``max_rel`` of ``|net - baseline|`` on the validation rows
        for the transferred network in float64, and the same with a ``32_`` prefix in
        float32 (the training precision on CPU).
    history_ : list of dict
        The learning curve, one row per epoch (epoch 0 = transferred network):
        ``epoch``, ``time_s`` (clock started at the baseline fit), ``train_loss``,
        ``val_mse``.
    best_epoch_ : int
    n_epochs_ : int
        Epochs trained (early stopping or the time limit may end before max_epochs).
    n_validation_ : int
        Rows held out for validation; 0 when validation ran on the training data.
    seed_ : int
        The integer seed drawn from ``random_state``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names (a pandas DataFrame).
    """

    def __init__(self, baseline="auto", transfer="rbf", protocol="adam", max_epochs=100,
                 batch_size=None, lr=1e-3, transfer_lr=1e-4, validation_fraction=0.2,
                 patience=20, max_time_s=600, baseline_params=None, transfer_params=None,
                 train_params=None, random_state=None):
        self.baseline = baseline
        self.transfer = transfer
        self.protocol = protocol
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.transfer_lr = transfer_lr
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_time_s = max_time_s
        self.baseline_params = baseline_params
        self.transfer_params = transfer_params
        self.train_params = train_params
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def fit(self, X, y):
        """Fit the baseline on ``X`` (n, D), ``y`` (n,), transfer it, retrain; return self."""
        baseline_cfg, train_cfg = self._checked_params()
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True,
                             ensure_min_samples=2)
        seed = _draw_seed(self.random_state)
        X_tr, y_tr, X_val, y_val = _split(X, y, self.validation_fraction, seed)

        from motifpipe import baselines, train, transfer
        from motifpipe.data import Dataset
        from motifpipe.errors import MotifpipeError

        try:
            with _preserved_global_state():
                model = baselines.fit_baseline(X_tr, y_tr, X_val, y_val, baseline_cfg, seed)
                t0 = time.perf_counter()
                net = self._to_network(transfer, model)
                transfer_s = time.perf_counter() - t0
                fid = transfer.fidelity(net, model, X_val)
                fid32 = transfer.fidelity(copy.deepcopy(net).float(), model, X_val)
                data = Dataset(X=np.concatenate([X_tr, X_val]),
                               y=np.concatenate([y_tr, y_val]), f=None,
                               split=np.repeat(np.array([0, 1], dtype=np.int8),
                                               [len(y_tr), len(y_val)]),
                               meta={"source": type(self).__name__, "seed": seed})
                # As stages.run_train does for the mimicry arm: the baseline's lambda as
                # the penalty, and the clock started at the baseline fit.
                lam = model.info.get("lam", 0.0) or 0.0
                res = _quiet(train.train_arm, net, data, train_cfg, seed, transferred=True,
                             penalty=lam,
                             time_offset_s=model.info["fit_time_s"] + transfer_s)
        except MotifpipeError as exc:
            raise ValueError(str(exc)) from exc
        worst = max(fid["max_rel"], fid32["max_rel"])
        if worst > MAX_REL_ERROR:
            warnings.warn(f"transfer fidelity {worst:.2e} (max |net - baseline| / "
                          f"(1 + max|baseline|)) exceeds {MAX_REL_ERROR:g}; the retrained "
                          "network did not start from the baseline", RuntimeWarning,
                          stacklevel=2)
        keep = ("epoch", "time_s", "train_loss", "val_mse")
        self.baseline_ = model
        self.network_ = res["net"].double().eval()
        self.fidelity_ = {**fid, **{f"32_{k}": v for k, v in fid32.items()}}
        self.history_ = [{k: row[k] for k in keep} for row in res["curve"]]
        self.best_epoch_ = int(res["best_epoch"])
        self.n_epochs_ = int(res["epochs"])
        self.n_validation_ = 0 if X_val is X_tr else len(y_val)
        self.seed_ = seed
        return self

    def _to_network(self, transfer, model):
        kwargs = dict(self.transfer_params or {})
        if model.__class__.__name__ == "FeatureModel" and self.transfer == "rbf":
            raise ValueError(f"transfer='rbf' needs a kernel expansion; baseline="
                             f"{self.baseline!r} fits random Fourier features")
        try:
            return transfer.to_network(model, kind=self.transfer, **kwargs)
        except TypeError as exc:
            raise ValueError(f"transfer_params: {exc}") from exc

    def _checked_params(self) -> tuple[dict, dict]:
        """Check every constructor argument; return (baseline config, train config)."""
        from motifpipe.baselines import DEFAULTS as BASELINE_DEFAULTS

        name = type(self).__name__
        if self.baseline not in BASELINES:
            raise ValueError(f"{name}: baseline={self.baseline!r} is not one of "
                             f"{', '.join(BASELINES)}")
        if self.transfer not in TRANSFERS:
            raise ValueError(f"{name}: transfer={self.transfer!r} is not one of "
                             f"{', '.join(TRANSFERS)}")
        from motifpipe.train import DEFAULTS as TRAIN_DEFAULTS

        if not isinstance(self.protocol, str) or (
                self.protocol != "adam" and "protocol" not in TRAIN_DEFAULTS):
            raise ValueError(f"{name}: protocol={self.protocol!r} is not supported; "
                             "supported: adam")
        checks = [
            ("max_epochs", "an integer >= 1", _is_int(self.max_epochs) and self.max_epochs >= 1),
            ("batch_size", "None or an integer >= 1",
             self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1)),
            ("lr", "a number > 0", _is_real(self.lr) and self.lr > 0),
            ("transfer_lr", "a number > 0", _is_real(self.transfer_lr) and self.transfer_lr > 0),
            ("validation_fraction", "a number in [0, 1)",
             _is_real(self.validation_fraction) and 0 <= self.validation_fraction < 1),
            ("patience", "an integer >= 1", _is_int(self.patience) and self.patience >= 1),
            ("max_time_s", "a number > 0", _is_real(self.max_time_s) and self.max_time_s > 0),
        ]
        for param, expected, ok in checks:
            if not ok:
                raise ValueError(f"{name}: {param} must be {expected}, "
                                 f"got {getattr(self, param)!r}")
        params = {}
        for param in ("baseline_params", "transfer_params", "train_params"):
            value = getattr(self, param)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name}: {param} must be a dict or None, got {value!r}")
            params[param] = dict(value or {})
        baseline_cfg = params["baseline_params"]
        for key in baseline_cfg:
            if key == "kind":
                raise ValueError(f"{name}: baseline_params['kind']: choose the baseline with "
                                 "the baseline parameter")
            if key not in BASELINE_DEFAULTS:
                raise ValueError(f"{name}: baseline_params has unknown key {key!r}; known: "
                                 f"{', '.join(sorted(set(BASELINE_DEFAULTS) - {'kind'}))}")
        baseline_cfg["kind"] = self.baseline
        train_cfg = params["train_params"]
        for key, value in train_cfg.items():
            if key not in _TRAIN_CHECKS:
                raise ValueError(f"{name}: train_params has unknown key {key!r}; known: "
                                 f"{', '.join(_TRAIN_CHECKS)} (the others are parameters)")
            expected, ok = _TRAIN_CHECKS[key]
            if not ok(value):
                raise ValueError(f"{name}: train_params[{key!r}] must be {expected}, "
                                 f"got {value!r}")
        train_cfg.update(max_epochs=int(self.max_epochs), lr=float(self.lr),
                         batch_size=int(self.batch_size or DEFAULT_BATCH_SIZE),
                         transfer_lr=float(self.transfer_lr), patience=int(self.patience),
                         max_time_s=float(self.max_time_s))
        if "protocol" in TRAIN_DEFAULTS:  # motifpipe.train checks the name
            train_cfg["protocol"] = self.protocol
        return baseline_cfg, train_cfg

    # ------------------------------------------------------------------ predict

    def predict(self, X):
        """Predictions of the retrained network: X (n, D) -> (n,) float64."""
        import torch

        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        net = self.network_
        step = max(1, _PREDICT_ENTRIES // _widest(net))
        out = np.empty(X.shape[0], dtype=np.float64)
        with torch.no_grad():
            for i in range(0, X.shape[0], step):
                xb = torch.tensor(X[i : i + step], dtype=torch.float64)
                out[i : i + step] = net(xb).double().numpy()
        return out


# ---------------------------------------------------------------------- helpers


def _draw_seed(random_state) -> int:
    """An int random_state is the seed; otherwise draw one from the RandomState."""
    if _is_int(random_state):
        check_random_state(random_state)  # the ValueError for out-of-range ints
        return int(random_state)
    try:
        rs = check_random_state(random_state)
    except ValueError as exc:
        raise ValueError(f"random_state: {exc}") from None
    return int(rs.randint(np.iinfo(np.int32).max))


def _split(X: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """(X_train, y_train, X_val, y_val), validation rows drawn by ``seed``.

    Without a usable split (fraction 0, or fewer than 2 training rows left) the
    validation arrays *are* the training arrays.
    """
    n = len(y)
    n_val = math.ceil(fraction * n)
    if n_val == 0 or n - n_val < 2:
        return X, y, X, y
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return X[~val], y[~val], X[val], y[val]


def _widest(net) -> int:
    """The widest layer of ``net``: units of an RBF net, out_features of Linear layers."""
    from torch import nn

    widths = [mod.out_features for mod in net.modules() if isinstance(mod, nn.Linear)]
    centers = getattr(net, "centers", None)
    if centers is not None:
        widths.append(int(centers.shape[0]))
    return max(widths, default=1)


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` without Lightning's warnings about small data and loader workers."""
    with warnings.catch_warnings():
        for pattern in (".*log_every_n_steps.*", ".*smaller than the logging interval.*",
                        ".*does not have many workers.*", ".*`srun` command is available.*"):
            warnings.filterwarnings("ignore", message=pattern)
        return fn(*args, **kwargs)


@contextlib.contextmanager
def _preserved_global_state():
    """Restore what training sets globally: the random states of ``random``, numpy and
    torch (``pytorch_lightning.seed_everything``), its seed environment variables and
    torch's deterministic-algorithms flag (``Trainer(deterministic=True)``)."""
    import torch

    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what is reseeded
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
