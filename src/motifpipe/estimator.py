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
import math
import numbers
import os
import random
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

#: Baseline kinds of ``motifpipe.baselines.fit_baseline`` (its config's ``kind``).
BASELINES = ("auto", "krr", "svr", "nystrom", "rff")
#: Transfer kinds of ``motifpipe.transfer.to_network``.
TRANSFERS = ("rbf", "relu", "cos")
#: The mini-batch size when ``batch_size=None``: the default study's mimicry arm
#: (``arm_train.mimicry.batch_size`` in config/config.yaml). Every step of an RBF net
#: refactors the m x m kernel matrix of its centres, so few large steps win.
DEFAULT_BATCH_SIZE = 1024
#: Defaults of the config's ``transfer:`` section other than ``kind`` (mirrors
#: workflow/schemas/config.schema.yaml; a test keeps them equal).
TRANSFER_DEFAULTS = {"tol": 1e-2, "max_rel_error": 1e-4}
#: Entries of the widest layer's activations per prediction block (128 MiB in float64).
_PREDICT_ENTRIES = 1 << 24

#: Retraining protocols of ``motifpipe.train`` (its config's ``protocol``).
PROTOCOLS = ("adam", "freeze_then_unfreeze", "lbfgs")
#: Value checks of ``train_params`` keys; a key of ``motifpipe.train.DEFAULTS`` without a
#: check here passes unchecked. The named parameters own the keys in ``_NAMED``.
_TRAIN_CHECKS = {
    "warmup_epochs": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "weight_decay": ("a number >= 0", lambda v: _is_real(v) and v >= 0),
    "grad_clip": ("a number >= 0 (0 turns clipping off)", lambda v: _is_real(v) and v >= 0),
    "precision": ("one of auto, 32-true, 64-true, bf16-mixed, 16-mixed",
                  lambda v: v in ("auto", "32-true", "64-true", "bf16-mixed", "16-mixed")),
    "accelerator": ("one of auto, cpu, gpu", lambda v: v in ("auto", "cpu", "gpu")),
    "freeze_epochs": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "lbfgs_max_iter": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "lr_search": ("a list of distinct numbers > 0",
                  lambda v: isinstance(v, list | tuple) and len(set(v)) == len(v)
                  and all(_is_real(x) and x > 0 for x in v)),
    "lr_search_epochs": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
}
_NAMED = ("max_epochs", "batch_size", "lr", "transfer_lr", "patience", "max_time_s",
          "protocol")


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
        ``rff`` (random-feature ridge) goes with ``transfer="cos"`` and only with it.
    transfer : {"rbf", "relu", "cos"}, default="rbf"
        Analytic transfer (``motifpipe.transfer.to_network``). ``rbf``: exact, Gaussian
        units with a whitened linear head. ``relu``: a plain Linear/ReLU network within
        ``transfer_params["tol"]`` of the baseline on the bounding box of the fitted
        ``X`` (no guarantee outside it).
    protocol : {"adam", "freeze_then_unfreeze", "lbfgs"}, default="adam"
        Retraining protocol (``motifpipe.train``). ``adam``: Adam with learning-rate
        warm-up, transferred parameters (centres, width) at ``transfer_lr`` and the head
        at ``lr``; ``freeze_then_unfreeze``: the head alone for
        ``train_params["freeze_epochs"]`` (5) epochs first; ``lbfgs``: full-batch L-BFGS
        at ``lr`` (small n).
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
        Keys of the config's ``transfer:`` section other than ``kind``: ``tol`` (1e-2,
        the ``relu`` tolerance) and ``max_rel_error`` (1e-4). The fit fails with a
        ValueError, as the workflow's transfer stage does, when the transferred network
        misses the baseline on the validation rows by more than these: max abs error
        over ``tol`` (relu); max |net - baseline| / (1 + max |baseline|) over
        ``max_rel_error`` in float64 or float32 (rbf).
    train_params : dict or None, default=None
        Further keys of the config's ``train:`` section (``motifpipe.train.DEFAULTS``)
        other than the named parameters above, e.g. ``warmup_epochs``, ``grad_clip``,
        ``lr_search``, ``precision`` (``auto``: bf16-mixed on a GPU, 32-true on CPU) or
        ``accelerator`` (``auto``, ``cpu`` or ``gpu``).
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
    lr_ : float
        The learning rate trained with: ``lr``, or the winner of
        ``train_params["lr_search"]`` (``transfer_lr`` then keeps its ratio to it).
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
        baseline_cfg, transfer_cfg, train_cfg = self._checked_params()
        seed = _draw_seed(self.random_state)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True,
                             ensure_min_samples=2)
        X_tr, y_tr, X_val, y_val = _split(X, y, self.validation_fraction, seed)

        from motifpipe import baselines, train, transfer
        from motifpipe.data import Dataset

        name = type(self).__name__
        with _preserved_global_state():
            with _as_value_error(f"{name}, baseline fit (baseline_params)"):
                model = baselines.fit_baseline(X_tr, y_tr, X_val, y_val, baseline_cfg, seed)
            # As stages.run_transfer: the relu construction's domain is the data's box,
            # and the fidelity is checked, in float64 and float32, before training.
            with _as_value_error(f"{name}, transfer (transfer_params)"):
                net, fid, fid32, transfer_s = transfer.measured_transfer(
                    model, {"kind": self.transfer, **transfer_cfg}, X_val,
                    (X.min(axis=0), X.max(axis=0)))
                transfer.check_fidelity({"kind": self.transfer, **transfer_cfg}, fid, fid32)
            data = Dataset(X=np.concatenate([X_tr, X_val]), y=np.concatenate([y_tr, y_val]),
                           f=None, split=np.repeat(np.array([0, 1], dtype=np.int8),
                                                   [len(y_tr), len(y_val)]),
                           meta={"source": name, "seed": seed})
            # As stages.run_train for the mimicry arm: the baseline's lambda is the
            # penalty, and the clock starts at the baseline fit.
            with _as_value_error(f"{name}, training"):
                res = _quiet(train.train_arm, net, data, train_cfg, seed, transferred=True,
                             penalty=model.info.get("lam", 0.0) or 0.0,
                             time_offset_s=model.info["fit_time_s"] + transfer_s)
        keep = ("epoch", "time_s", "train_loss", "val_mse")
        self.baseline_ = model
        self.network_ = res["net"].double().eval()
        self.fidelity_ = {**fid, **{f"32_{k}": v for k, v in fid32.items()}}
        self.history_ = [{k: row[k] for k in keep} for row in res["curve"]]
        self.best_epoch_ = int(res["best_epoch"])
        self.n_epochs_ = int(res["epochs"])
        self.lr_ = float(res.get("lr", self.lr))
        self.n_validation_ = 0 if X_val is X_tr else len(y_val)
        self.seed_ = seed
        return self

    def _checked_params(self) -> tuple[dict, dict, dict]:
        """Check every constructor argument; return the config's baseline, transfer and
        train sections."""
        from motifpipe.baselines import DEFAULTS as BASELINE_DEFAULTS

        name = type(self).__name__
        if self.baseline not in BASELINES:
            raise ValueError(f"{name}: baseline={self.baseline!r} is not one of "
                             f"{', '.join(BASELINES)}")
        if self.transfer not in TRANSFERS:
            raise ValueError(f"{name}: transfer={self.transfer!r} is not one of "
                             f"{', '.join(TRANSFERS)}")
        from motifpipe.train import DEFAULTS as TRAIN_DEFAULTS

        protocols = PROTOCOLS if "protocol" in TRAIN_DEFAULTS else ("adam",)
        if self.protocol not in protocols:
            raise ValueError(f"{name}: protocol={self.protocol!r} is not one of "
                             f"{', '.join(protocols)}")
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
        if (self.baseline == "rff") != (self.transfer == "cos"):
            raise ValueError(f"{name}: baseline={self.baseline!r} with transfer="
                             f"{self.transfer!r}: random-feature ridge (baseline='rff') "
                             "transfers with transfer='cos', and 'cos' needs baseline='rff'")
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
        transfer_cfg = params["transfer_params"]
        for key, value in transfer_cfg.items():
            if key not in TRANSFER_DEFAULTS:
                raise ValueError(f"{name}: transfer_params has unknown key {key!r}; known: "
                                 f"{', '.join(TRANSFER_DEFAULTS)}")
            if not (_is_real(value) and value > 0):
                raise ValueError(f"{name}: transfer_params[{key!r}] must be a number > 0, "
                                 f"got {value!r}")
        transfer_cfg = {**TRANSFER_DEFAULTS, **transfer_cfg}
        train_cfg = params["train_params"]
        known = sorted(set(TRAIN_DEFAULTS) - set(_NAMED))
        for key, value in train_cfg.items():
            if key not in known:
                why = "it is a parameter" if key in _NAMED else f"known: {', '.join(known)}"
                raise ValueError(f"{name}: train_params has unknown key {key!r} ({why})")
            expected, ok = _TRAIN_CHECKS.get(key, ("", lambda v: True))
            if not ok(value):
                raise ValueError(f"{name}: train_params[{key!r}] must be {expected}, "
                                 f"got {value!r}")
        train_cfg.update(max_epochs=int(self.max_epochs), lr=float(self.lr),
                         batch_size=int(self.batch_size or DEFAULT_BATCH_SIZE),
                         transfer_lr=float(self.transfer_lr), patience=int(self.patience),
                         max_time_s=float(self.max_time_s))
        if "protocol" in TRAIN_DEFAULTS:
            train_cfg["protocol"] = self.protocol
        return baseline_cfg, transfer_cfg, train_cfg

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
    try:
        rs = check_random_state(random_state)
    except ValueError as exc:
        raise ValueError(f"random_state: {exc}, got {random_state!r}") from None
    if _is_int(random_state):
        return int(random_state)
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


@contextlib.contextmanager
def _as_value_error(where: str):
    """motifpipe's user errors (bad data, bad settings) as scikit-learn's ValueError."""
    from motifpipe.errors import MotifpipeError

    try:
        yield
    except MotifpipeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


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
        # motifpipe.train filters these at import, but a filter added inside someone's
        # warnings.catch_warnings() (pytest runs every test in one) ends with it.
        for pattern in (".*does not have many workers.*", ".*LeafSpec.*",
                        ".*`srun` command is available.*"):
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
