"""Analytic transfer of a fitted kernel model into a neural network.

``rbf`` (exact). A Gaussian-kernel model ``f_K(x) = sum_j a_j k(x, c_j) + b`` becomes

    f(x) = k(x, C) L^{-T} w + b,   L = chol(K(C, C) + jitter I),

with ``w = L^T a``. The net's output equals ``f_K`` up to rounding, for any jitter,
because ``L^{-T} L^T = I``. Why this parameterisation: the raw dual coefficients
``a`` of a lightly regularised fit reach 10^2-10^3 and cancel each other, so moving a
centre by 1e-3 moves ``f`` by O(1) and float32 retraining explodes. ``L`` is
recomputed from the *current* centres and width at every forward pass (as in
whitened sparse Gaussian processes), so ``w`` has the RKHS norm of ``f_K``
(``|w|^2 = a^T K a``), the whitened features are bounded on the data, and moving a
centre moves where its value sits instead of breaking a cancellation. The kernel
algebra runs in float64 whatever the parameters' dtype, because the Cholesky factor
of a Gaussian kernel matrix is too ill-conditioned for float32.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from motifpipe.errors import MotifpipeError
from motifpipe.io import load_arrays, save_arrays

DEFAULT_JITTER = 1e-8
SUPPORTED_KERNELS = ("gaussian",)


class RBFNet(nn.Module):
    """Gaussian units with a whitened linear head; maps ``(n, D) -> (n,)``.

    Parameters: ``centers`` (m, D), ``log_gamma`` (), ``w`` (m,), ``bias`` ().
    """

    def __init__(self, centers: torch.Tensor, gamma: float, w: torch.Tensor,
                 bias: float, jitter: float = DEFAULT_JITTER):
        super().__init__()
        m, _ = centers.shape
        assert w.shape == (m,), f"head has shape {tuple(w.shape)}, expected ({m},)"
        self.centers = nn.Parameter(centers.clone())
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma), dtype=centers.dtype))
        self.w = nn.Parameter(w.clone())
        self.bias = nn.Parameter(torch.tensor(float(bias), dtype=centers.dtype))
        self.register_buffer("jitter", torch.tensor(float(jitter), dtype=torch.float64))

    @property
    def gamma(self) -> torch.Tensor:
        return self.log_gamma.exp()

    def kernel(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``exp(-gamma ||x - c||^2)`` in float64: (n, D), (m, D) -> (n, m)."""
        d2 = torch.cdist(x.double(), c.double(), compute_mode="donot_use_mm_for_euclid_dist")
        return torch.exp(-self.gamma.double() * d2.square())

    def chol(self) -> torch.Tensor:
        """Lower Cholesky factor of ``K(C, C) + jitter I``: (m, m), float64."""
        c = self.centers
        kmm = self.kernel(c, c)
        eye = torch.eye(len(c), dtype=kmm.dtype, device=kmm.device)
        return torch.linalg.cholesky(kmm + self.jitter * eye)

    def coef(self) -> torch.Tensor:
        """Dual coefficients ``a = L^{-T} w`` of the current centres: (m,), float64.

        Solving for ``a`` once per forward pass costs O(m^2) beyond the Cholesky,
        instead of whitening every input's features at O(n m^2).
        """
        w = self.w.double().unsqueeze(1)
        return torch.linalg.solve_triangular(self.chol().T, w, upper=True).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.kernel(x, self.centers) @ self.coef() + self.bias.double()
        return out.to(self.w.dtype)

    def rkhs_norm2(self) -> torch.Tensor:
        """``|w|^2``: the squared RKHS norm of the net's function (when jitter -> 0)."""
        return self.w.square().sum()


class CosNet(nn.Module):
    """``Linear -> cos -> Linear``, ``(n, D) -> (n,)``: exact for random-Fourier-feature ridge."""

    def __init__(self, dim: int, features: int):
        super().__init__()
        self.features = nn.Linear(dim, features)
        self.head = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cos(self.features(x))).squeeze(-1)


def _cos_network(model) -> CosNet:
    """Copy a fitted ``FeatureModel`` (W (F, D), phase (F,), coef (F,)) into a CosNet."""
    W = torch.as_tensor(np.asarray(model.W, dtype=np.float64))
    net = CosNet(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        net.features.weight.copy_(W)
        net.features.bias.copy_(torch.as_tensor(np.asarray(model.phase, dtype=np.float64)))
        net.head.weight.copy_(torch.as_tensor(np.asarray(model.coef, dtype=np.float64))[None])
        net.head.bias.fill_(float(model.intercept))
    return net


class MLP(nn.Sequential):
    """A plain ReLU MLP ``(n, D) -> (n,)`` with ``depth`` hidden layers of ``width`` units."""

    def __init__(self, dim: int, depth: int = 3, width: int = 128):  # the `mlp:` defaults
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(dim if i == 0 else width, width), nn.ReLU()]
        layers.append(nn.Linear(width if depth else dim, 1))
        super().__init__(*layers)
        self.dim, self.depth, self.width = dim, depth, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-1)


def _relu_stack(dims: list[int]) -> nn.Sequential:
    """Linear/ReLU layers through ``dims``, no activation after the last Linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers)


class DeepSets(nn.Module):
    """Permutation-invariant ``(n, m*k) -> (n,)``: ``rho(pool_i phi(x_i))`` (Zaheer et al.).

    A row is a set of ``m`` points in R^k stored point-major (as the ``invariant``
    generator writes it); ``phi`` (k -> width) is applied to each point, the pooled
    (n, width) features go through ``rho`` (width -> 1). Reordering the points of a
    row leaves the output unchanged up to float rounding.
    """

    def __init__(self, m: int, k: int, width: int = 64, phi_depth: int = 2,
                 rho_depth: int = 2, pool: str = "mean"):
        super().__init__()
        if pool not in ("mean", "sum"):
            raise MotifpipeError(f"deepsets.pool {pool!r} is not one of ['mean', 'sum']")
        self.m, self.k, self.width = m, k, width
        self.phi_depth, self.rho_depth, self.pool = phi_depth, rho_depth, pool
        # phi ends in a ReLU: pooling non-negative features keeps the sum informative.
        self.phi = nn.Sequential(_relu_stack([k] + [width] * phi_depth), nn.ReLU())
        self.rho = _relu_stack([width] * rho_depth + [1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == self.m * self.k, (x.shape, self.m, self.k)
        feats = self.phi(x.reshape(*x.shape[:-1], self.m, self.k))  # (n, m, width)
        pooled = feats.mean(-2) if self.pool == "mean" else feats.sum(-2)
        return self.rho(pooled).squeeze(-1)


def from_sklearn(est):
    """A fitted scikit-learn ``KernelRidge(kernel="rbf")`` or ``SVR(kernel="rbf")`` as a
    :class:`motifpipe.baselines.KernelModel`; other objects are returned unchanged."""
    from motifpipe.baselines import KernelModel

    name = type(est).__name__
    if name not in ("KernelRidge", "SVR"):
        return est
    if getattr(est, "kernel", None) != "rbf":
        raise MotifpipeError(f"{name}(kernel={est.kernel!r}) cannot be transferred; "
                             "supported: kernel='rbf' (Gaussian)")
    if name == "KernelRidge":
        if not hasattr(est, "dual_coef_"):
            raise MotifpipeError("KernelRidge is not fitted; call fit() before transferring")
        X = np.asarray(est.X_fit_, dtype=np.float64)
        gamma = est.gamma if est.gamma is not None else 1.0 / X.shape[1]
        coef = np.asarray(est.dual_coef_, dtype=np.float64).reshape(len(X), -1)
        if coef.shape[1] != 1:
            raise MotifpipeError("KernelRidge with several targets cannot be transferred")
        return KernelModel("gaussian", float(gamma), X, coef[:, 0], 0.0, {"solver": name})
    if not hasattr(est, "support_vectors_"):
        raise MotifpipeError("SVR is not fitted; call fit() before transferring")
    return KernelModel("gaussian", float(est._gamma), np.asarray(est.support_vectors_, float),
                       np.asarray(est.dual_coef_, float)[0], float(est.intercept_[0]),
                       {"solver": name})


def to_network(model, kind: str = "rbf", tol: float | None = None,
               jitter: float = DEFAULT_JITTER, domain=None) -> nn.Module:
    """Build the network that computes a fitted Gaussian kernel model (float64).

    ``model``: a :class:`motifpipe.baselines.KernelModel`, or a fitted scikit-learn
    ``KernelRidge``/``SVR`` with ``kernel="rbf"``. ``kind="rbf"`` is exact;
    ``kind="cos"`` is exact for a random-feature ``FeatureModel``;
    ``kind="relu"`` is a plain Linear/ReLU network within ``tol`` of the model on
    ``domain`` (``(lo, hi)`` arrays; see :mod:`motifpipe.relu`).
    """
    model = from_sklearn(model)
    if kind not in ("rbf", "relu", "cos"):
        raise MotifpipeError(
            f"transfer kind {kind!r} is not supported; supported: rbf, relu, cos")
    is_rff = hasattr(model, "W") and hasattr(model, "phase")
    if is_rff != (kind == "cos"):
        raise MotifpipeError(
            "a random-feature (rff) baseline transfers with transfer.kind 'cos' only"
            if is_rff else "transfer.kind 'cos' needs a random-feature (rff) baseline")
    if kind == "cos":
        return _cos_network(model)
    if getattr(model, "kernel", None) not in SUPPORTED_KERNELS:
        raise MotifpipeError(
            f"kernel {getattr(model, 'kernel', None)!r} cannot be transferred to {kind!r}; "
            f"supported kernels: {', '.join(SUPPORTED_KERNELS)}"
        )
    if kind == "relu":
        from motifpipe.relu import relu_network

        if tol is None:
            raise MotifpipeError("transfer kind 'relu' needs a tolerance (transfer.tol)")
        return relu_network(model, tol, domain)
    centers = torch.as_tensor(np.asarray(model.centers, dtype=np.float64))
    coef = torch.as_tensor(np.asarray(model.coef, dtype=np.float64))
    net = RBFNet(centers, float(model.gamma), torch.zeros_like(coef), model.intercept, jitter)
    with torch.no_grad():
        net.w.copy_(net.chol().T @ coef)
    return net


def random_rbf(X: np.ndarray, m: int, seed: int, jitter: float = DEFAULT_JITTER) -> RBFNet:
    """The ``scratch`` arm: same architecture as the transfer, randomly initialised.

    Centres uniform in the bounding box of ``X`` (n, D); width from the median
    heuristic of those centres; head small and random.
    """
    g = torch.Generator().manual_seed(seed)
    X_t = torch.as_tensor(X, dtype=torch.float64)
    lo, hi = X_t.min(0).values, X_t.max(0).values
    centers = lo + (hi - lo) * torch.rand(m, X_t.shape[1], generator=g, dtype=torch.float64)
    d2 = torch.pdist(centers).square()
    gamma = 1.0 / float(d2.median()) if len(d2) else 1.0
    w = 0.01 * torch.randn(m, generator=g, dtype=torch.float64)
    return RBFNet(centers, gamma, w, 0.0, jitter)


def reinitialise(net: nn.Module, X: np.ndarray, seed: int) -> nn.Module:
    """The ``scratch`` arm: a fresh, randomly initialised net of ``net``'s architecture."""
    if isinstance(net, RBFNet):
        return random_rbf(X, len(net.centers), seed, float(net.jitter))
    torch.manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    return net


def fidelity(net: nn.Module, model, X: np.ndarray) -> dict[str, float]:
    """max and RMS of ``|net(x) - f_K(x)|`` on held-out points ``X`` (n, D)."""
    model = from_sklearn(model)
    ref = np.asarray(model.predict(X), dtype=np.float64)
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        out = net(torch.as_tensor(X, dtype=dtype)).double().numpy()
    err = np.abs(out - ref)
    max_abs = float(err.max())
    return {
        "max_abs": max_abs,
        "rms": float(np.sqrt(np.mean(err**2))),
        "max_rel": max_abs / (1.0 + float(np.abs(ref).max())),
    }


def measured_transfer(model, cfg: dict, X_val: np.ndarray,
                      domain) -> tuple[nn.Module, dict, dict, float]:
    """:func:`to_network` under a ``transfer:`` config, timed, with its fidelity.

    Returns the float64 net, its fidelity on ``X_val`` (n, D) in float64 and as a
    float32 copy, and the seconds the construction took. ``domain`` is ``(lo, hi)``
    for the ``relu`` bound. Check the result with :func:`check_fidelity`.
    """
    t0 = time.perf_counter()
    net = to_network(model, kind=cfg["kind"], tol=cfg.get("tol"), domain=domain)
    seconds = time.perf_counter() - t0
    fid64 = fidelity(net, model, X_val)
    fid32 = fidelity(copy.deepcopy(net).float(), model, X_val)
    return net, fid64, fid32, seconds


def check_fidelity(cfg: dict, fid64: dict, fid32: dict) -> None:
    """Exact kinds: relative error in float64 and float32; relu: max abs error <= tol."""
    if cfg["kind"] == "relu":
        if fid64["max_abs"] > cfg["tol"]:
            raise MotifpipeError(f"relu transfer error {fid64['max_abs']:.2e} exceeds "
                                 f"transfer.tol={cfg['tol']:g}")
        return
    worst = max(fid64["max_rel"], fid32["max_rel"])
    if worst > cfg["max_rel_error"]:
        raise MotifpipeError(
            f"transfer fidelity {worst:.2e} (max |net - baseline| / (1 + max|baseline|)) "
            f"exceeds transfer.max_rel_error={cfg['max_rel_error']:g}"
        )


def architecture(net: nn.Module) -> dict:
    """Depth, widths and parameter count of a network, for reports and MLflow."""
    n_params = sum(p.numel() for p in net.parameters())
    if isinstance(net, RBFNet):
        m, dim = net.centers.shape
        return {"kind": "rbf", "dim": dim, "units": m, "depth": 1, "widths": [m],
                "n_params": n_params}
    if isinstance(net, MLP):
        return {"kind": "mlp", "dim": net.dim, "depth": net.depth,
                "widths": [net.width] * net.depth, "n_params": n_params}
    if isinstance(net, DeepSets):
        return {"kind": "deepsets", "dim": net.m * net.k, "m": net.m, "k": net.k,
                "depth": net.phi_depth + net.rho_depth, "widths": [net.width],
                "phi_depth": net.phi_depth, "rho_depth": net.rho_depth, "pool": net.pool,
                "n_params": n_params}
    if isinstance(net, CosNet):
        return {"kind": "cos", "dim": net.features.in_features, "depth": 2,
                "widths": [net.features.out_features], "n_params": n_params}
    if isinstance(net, nn.Sequential):
        from motifpipe.relu import relu_architecture

        return relu_architecture(net)
    raise TypeError(f"unknown network type {type(net).__name__}")


def save_network(net: nn.Module, path: str | Path, meta: dict | None = None) -> None:
    """Weights as safetensors (float64) plus the architecture in the metadata."""
    arrays = {k: v.detach().double().cpu().numpy().reshape(v.shape)
              for k, v in net.state_dict().items()}
    save_arrays(path, arrays, {"architecture": architecture(net), **(meta or {})})


def load_network(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a network saved by :func:`save_network`; no code is unpickled."""
    arrays, meta = load_arrays(path)
    arch = meta.get("architecture", {})
    if arch.get("kind") == "rbf":
        c = torch.as_tensor(arrays["centers"])
        net: nn.Module = RBFNet(c, 1.0, torch.zeros(len(c), dtype=c.dtype), 0.0)
    elif arch.get("kind") == "mlp":
        net = MLP(arch["dim"], arch["depth"], arch["widths"][0] if arch["widths"] else 1)
    elif arch.get("kind") == "cos":
        net = CosNet(arch["dim"], arch["widths"][0])
    elif arch.get("kind") == "deepsets":
        net = DeepSets(arch["m"], arch["k"], arch["widths"][0], arch["phi_depth"],
                       arch["rho_depth"], arch["pool"])
    elif arch.get("kind") == "relu":
        from motifpipe.relu import relu_skeleton

        net = relu_skeleton(arch["dim"], arch["widths"])
    else:
        raise MotifpipeError(f"{path}: unknown network architecture {arch.get('kind')!r}")
    net = net.double()  # saved in float64; training casts to its own precision
    state = net.state_dict()
    # safetensors stores 0-d tensors (log_gamma, bias) as shape (1,).
    arrays = {k: v.reshape(state[k].shape) if k in state and v.size == state[k].numel() == 1
              else v for k, v in arrays.items()}
    for key, value in arrays.items():
        if key not in state or tuple(state[key].shape) != value.shape:
            raise MotifpipeError(f"{path}: weight {key!r} has shape {value.shape}, "
                                 f"expected {tuple(state[key].shape) if key in state else None}")
    net.load_state_dict({k: torch.as_tensor(v).to(state[k].dtype) for k, v in arrays.items()})
    return net, meta
