"""Convex baselines: exact kernel ridge, SVR, Nyström and random-feature ridge.

Shapes: ``n`` training points, ``D`` input dimension, ``m`` centres, ``F`` features,
``k`` spectral components, ``L`` grid lambdas.

Lambda convention (every solver): the objective is per-sample,

    min_f  (1/n) * sum_i (y_i - b - f(x_i))^2 + lam * ||f||^2,

so exact KRR solves ``(K + n*lam*I) a = y - b``: scikit-learn's ``KernelRidge(alpha)``
is ``alpha = n * lam``, and SVR's ``C`` is ``1 / (2 * n * lam)``. The intercept ``b``
is the training mean of ``y`` (targets are centred, the penalty never touches b),
except for SVR, whose intercept is libsvm's.

Selection runs the whole lambda grid from one spectral decomposition per gamma
(closed-form leave-one-out, GCV or validation error, see ``_path_scores``). Above
``selection_max_n`` training points the gamma search runs on a seeded subsample and
lambda is re-selected on all the data at the chosen gamma (docs/baselines.md).

Top-level imports stay numpy/scipy/stdlib; torch (Nyström, or any solver on a GPU)
and scikit-learn (SVR) are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dsyrk

from motifpipe.errors import MotifpipeError
from motifpipe.io import load_arrays, save_arrays

FORMAT_VERSION = 1

#: Defaults of the config's ``baseline:`` section (mirrors workflow/schemas/config.schema.yaml).
DEFAULTS: dict = {
    "kind": "krr",
    "kernel": "gaussian",
    "gamma_factors": [0.25, 0.5, 1, 2, 4, 8, 16],
    "lambda_grid": [1.0e-6, 1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1],
    "selection": "loo",
    "jitter": 1.0e-8,
    "device": "auto",
    "selection_max_n": 5000,
    "select_centers": 1000,
    "centers": 1000,
    "features": 1000,
    "epsilon": 0.1,
    "C": None,
    "auto_threshold": 5000,
}

_KINDS = ("krr", "svr", "nystrom", "rff", "auto")
_BLOCK_ENTRIES = 4_000_000  # rows per kernel block = this / m: a 32 MB float64 block


# ---------------------------------------------------------------------------
# Fitted forms
# ---------------------------------------------------------------------------


@dataclass
class KernelModel:
    """``f(x) = sum_j coef[j] * exp(-gamma * ||x - centers[j]||^2) + intercept``.

    centers: (m, D) float64; coef: (m,) float64.
    """

    kernel: str
    gamma: float
    centers: np.ndarray
    coef: np.ndarray
    intercept: float
    info: dict = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """X: (n, D) -> (n,) float64, in row blocks to bound memory."""
        X = _checked_columns(X, self.centers.shape[1])
        step = _block_rows(self.centers.shape[0])
        parts = [gaussian_kernel(X[i : i + step], self.centers, self.gamma) @ self.coef
                 for i in range(0, X.shape[0], step)]
        return (np.concatenate(parts) if parts else np.empty(0)) + self.intercept


@dataclass
class FeatureModel:
    """Random-Fourier-feature ridge: ``f(x) = cos(x @ W.T + phase) @ coef + intercept``.

    W: (F, D) frequencies drawn from N(0, 2*gamma*I), so that
    E[2 cos(w.x + p) cos(w.x' + p)] = exp(-gamma ||x - x'||^2); phase: (F,) uniform on
    [0, 2*pi); coef: (F,) already includes the sqrt(2/F) feature scale. A ``cos``
    transfer is Linear(W, phase) -> cos -> Linear(coef, intercept), exactly.
    """

    kernel: str
    gamma: float
    W: np.ndarray
    phase: np.ndarray
    coef: np.ndarray
    intercept: float
    info: dict = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """X: (n, D) -> (n,) float64."""
        X = _checked_columns(X, self.W.shape[1])
        step = _block_rows(self.W.shape[0])
        parts = [np.cos(X[i : i + step] @ self.W.T + self.phase) @ self.coef
                 for i in range(0, X.shape[0], step)]
        return (np.concatenate(parts) if parts else np.empty(0)) + self.intercept


def _block_rows(m: int) -> int:
    return max(1, _BLOCK_ENTRIES // max(1, m))


def _checked_columns(X, D: int) -> np.ndarray:
    X = _as_matrix(X, "X")
    if X.shape[1] != D:
        raise MotifpipeError(f"predict: X has {X.shape[1]} columns, model expects {D}")
    return X


# ---------------------------------------------------------------------------
# Kernels and array backends (numpy on CPU, torch for Nyström and on GPUs)
# ---------------------------------------------------------------------------


def gaussian_kernel(A: np.ndarray, B: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma * ||a - b||^2): A (p, D), B (q, D) -> (p, q) float64."""
    sq = A @ B.T  # one (p, q) buffer, updated in place: memory traffic dominates here
    sq *= -2.0
    sq += np.einsum("ij,ij->i", A, A)[:, None]
    sq += np.einsum("ij,ij->i", B, B)[None, :]
    np.maximum(sq, 0.0, out=sq)  # cancellation can leave tiny negatives
    sq *= -gamma
    return np.exp(sq, out=sq)


def median_gamma(X: np.ndarray, rng: np.random.Generator, max_points: int = 1000) -> float:
    """Median heuristic 1 / median ||x - x'||^2 over pairs of a subsample. X: (n, D)."""
    n = X.shape[0]
    S = X[np.sort(rng.choice(n, size=max_points, replace=False))] if n > max_points else X
    sq = np.einsum("ij,ij->i", S, S)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (S @ S.T), 0.0)
    med = float(np.median(d2[np.triu_indices(S.shape[0], k=1)]))
    if not med > 0.0:
        raise MotifpipeError("baseline: training inputs are mostly identical; no median heuristic")
    return 1.0 / med


class _NumpyBackend:
    """float64 numpy/scipy (OpenBLAS) on the CPU."""

    name, device = "numpy", "cpu"

    def asarray(self, a):
        return np.ascontiguousarray(a, dtype=np.float64)

    def numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def kernel(self, A, B, gamma):
        return gaussian_kernel(A, B, gamma)

    def cos_features(self, X, W, phase, scale):
        Z = X @ W.T
        Z += phase
        return np.cos(Z, out=Z) * scale

    def zeros(self, *shape):
        return np.zeros(shape)

    def gram_zeros(self, m):
        return np.zeros((m, m), order="F")  # Fortran order lets syrk update it in place

    def gram_add(self, G, Cb):
        """G += Cb.T @ Cb on the upper triangle only (syrk: half the flops of a matmul)."""
        if Cb.flags.f_contiguous:  # pass whichever layout BLAS can read without a copy
            return dsyrk(1.0, Cb, beta=1.0, c=G, trans=1, overwrite_c=1)
        return dsyrk(1.0, Cb.T, beta=1.0, c=G, trans=0, overwrite_c=1)

    def symmetrize_upper(self, G):
        return np.triu(G) + np.triu(G, 1).T

    def cholesky(self, A):
        """Lower Cholesky factor, or None when A is not numerically positive definite."""
        # A is symmetric, so A.T is the same matrix in the Fortran order LAPACK factors in
        # place: no n x n copy. Its upper factor U (A = U^T U) read transposed is L.
        F = A.T if A.flags.c_contiguous else A
        try:
            return scipy.linalg.cholesky(F, lower=False, overwrite_a=True, check_finite=False).T
        except np.linalg.LinAlgError:
            return None

    def solve_lower(self, L, B, transpose=False):
        return scipy.linalg.solve_triangular(L, B, lower=True, trans=int(transpose),
                                             check_finite=False)

    def eigh(self, A):
        """(eigenvalues ascending (k,), eigenvectors (k, k)) of a symmetric A."""
        with _blas_threads(1 if A.shape[0] <= 2000 else None):
            return scipy.linalg.eigh(A, check_finite=False, driver="evd")

    def svd(self, A):
        with _blas_threads(1 if min(A.shape) <= 2000 else None):  # as eigh: bidiagonalisation
            return scipy.linalg.svd(A, full_matrices=False, check_finite=False)

    def add_diag(self, A, value):
        A[np.diag_indices_from(A)] += value
        return A

    def take(self, A, idx):
        return A[idx]


class _TorchBackend:
    """float64 torch on ``device`` ("cpu" or "cuda"); small eigenproblems go to LAPACK."""

    name = "torch"

    def __init__(self, device: str):
        import torch

        self.torch, self.device = torch, device
        # On the CPU, hand syrk and eigh to scipy (same memory, faster there); on a GPU,
        # everything stays in torch. Tests switch this off to run the GPU code on a CPU.
        self.host_lapack = device == "cpu"

    def asarray(self, a):
        return self.torch.as_tensor(np.asarray(a, dtype=np.float64), device=self.device)

    def numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy() if isinstance(a, self.torch.Tensor) else np.asarray(a)

    def kernel(self, A, B, gamma):
        sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :]
        sq.addmm_(A, B.T, alpha=-2.0).clamp_(min=0.0).mul_(-gamma)
        return sq.exp_()

    def cos_features(self, X, W, phase, scale):
        return (X @ W.T).add_(phase).cos_().mul_(scale)

    def zeros(self, *shape):
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def gram_zeros(self, m):
        if self.host_lapack:  # a Fortran-ordered buffer that syrk updates in place
            return self.torch.from_numpy(np.zeros((m, m), order="F"))
        return self.zeros(m, m)

    def gram_add(self, G, Cb):
        if self.host_lapack:  # same memory as numpy: syrk, half the flops of addmm
            _NumpyBackend().gram_add(G.numpy(), Cb.numpy())
            return G
        return G.addmm_(Cb.T, Cb)

    def symmetrize_upper(self, G):
        if not self.host_lapack:
            return G  # addmm_ filled the whole matrix
        return self.torch.triu(G) + self.torch.triu(G, 1).T

    def cholesky(self, A):
        L, info = self.torch.linalg.cholesky_ex(A)
        return L if int(info) == 0 else None

    def solve_lower(self, L, B, transpose=False):
        M = L.T if transpose else L
        return self.torch.linalg.solve_triangular(M, B, upper=transpose)

    def eigh(self, A):
        if self.host_lapack:  # scipy's divide-and-conquer was faster here than torch's
            s, Q = _NumpyBackend().eigh(self.numpy(A))
            return self.asarray(s), self.asarray(Q)
        return self.torch.linalg.eigh(A)

    def svd(self, A):
        U, s, Vt = self.torch.linalg.svd(A, full_matrices=False)
        return U, s, Vt

    def add_diag(self, A, value):
        A.diagonal().add_(value)
        return A

    def take(self, A, idx):
        return A[self.torch.as_tensor(idx, device=A.device)]


def _blas_threads(limit: int | None):
    """Cap BLAS threads for a block. Small eigendecompositions are memory bound (LAPACK's
    tridiagonal reduction): measured on 2 busy cores, 1 thread ran eigh(1000) 8x faster
    than 2 threads spinning against other processes."""
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # ships with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


def _cuda_available() -> bool:
    """True when torch sees a CUDA device; skips importing torch on machines without a driver."""
    if not os.path.exists("/proc/driver/nvidia/version"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _backend(device: str, want_torch: bool):
    """Pick the array backend: torch when asked (Nyström) or on a GPU, numpy otherwise."""
    if device == "cuda" or (device == "auto" and _cuda_available()):
        if device == "cuda" and not _cuda_available():
            raise MotifpipeError("baseline.device: 'cuda' requested but no CUDA device is visible")
        return _TorchBackend("cuda")
    return _TorchBackend("cpu") if want_torch else _NumpyBackend()


# ---------------------------------------------------------------------------
# Input checks and per-fit context
# ---------------------------------------------------------------------------


def _as_matrix(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise MotifpipeError(f"baseline: {name} must be 2-D (n, D), got shape {X.shape}")
    return X


def _check_data(X, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    X = _as_matrix(X, "X" if name == "train" else f"X_{name}")
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if X.shape[0] != y.shape[0]:
        raise MotifpipeError(
            f"baseline: {name} X has {X.shape[0]} rows but y has {y.shape[0]} values"
        )
    if not np.all(np.isfinite(X)):
        raise MotifpipeError(f"baseline: non-finite value in {name} inputs X")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise MotifpipeError(f"baseline: non-finite {name} target y[{bad[0]}] = {y[bad[0]]}")
    return X, y


def _resolve_cfg(cfg: dict | None) -> dict:
    """Merge cfg over DEFAULTS; check values the schema cannot (or a direct call skipped)."""
    c = dict(DEFAULTS)
    c.update(cfg or {})
    unknown = sorted(set(c) - set(DEFAULTS))
    if unknown:
        raise MotifpipeError(f"baseline: unknown key {unknown[0]!r}")
    if c["kind"] not in _KINDS:
        raise MotifpipeError(f"baseline.kind: unknown baseline {c['kind']!r}")
    if c["kernel"] != "gaussian":
        raise MotifpipeError(f"baseline.kernel: unsupported kernel {c['kernel']!r}")
    for key in ("gamma_factors", "lambda_grid"):
        grid = [] if c[key] is None else list(c[key])
        if not grid:
            raise MotifpipeError(f"baseline.{key}: empty grid")
        c[key] = [float(v) for v in grid]
    for g in c["gamma_factors"]:
        if not (math.isfinite(g) and g > 0):
            raise MotifpipeError(f"baseline.gamma_factors: gamma factor {g} must be > 0")
    for lam in c["lambda_grid"]:
        if not (math.isfinite(lam) and lam >= 0):
            raise MotifpipeError(f"baseline.lambda_grid: lambda {lam} must be >= 0")
    _check_choice(c, "selection", ("loo", "gcv", "val"))
    _check_choice(c, "device", ("auto", "cpu", "cuda"))
    for key, ok in (("jitter", lambda v: v > 0), ("epsilon", lambda v: v >= 0),
                    ("C", lambda v: v > 0)):
        v = c[key]
        if v is not None and not (math.isfinite(float(v)) and ok(float(v))):
            raise MotifpipeError(f"baseline.{key}: {v} is out of range")
    for key in ("selection_max_n", "select_centers", "centers", "features", "auto_threshold"):
        if int(c[key]) < 1:
            raise MotifpipeError(f"baseline.{key}: {c[key]} must be >= 1")
    return c


def _check_choice(c: dict, key: str, allowed: tuple) -> None:
    if c[key] not in allowed:
        raise MotifpipeError(f"baseline.{key}: {c[key]!r} is not one of {', '.join(allowed)}")


@dataclass
class _Ctx:
    """What one fit carries around: config, random stream, backend, warn-once flag."""

    cfg: dict
    rng: np.random.Generator
    bk: object
    warned: bool = False

    def warn(self, message: str) -> None:
        """Warn at most once per fit (a grid of singular systems is one problem, not many)."""
        if not self.warned:
            self.warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=4)


def _shifts(ctx: _Ctx, lams: np.ndarray, n: int, floor: bool) -> np.ndarray:
    """Diagonal shifts t = n*lam. floor=True (dual systems) lifts t < jitter to jitter, warned."""
    t = n * lams
    if floor and np.any(t < ctx.cfg["jitter"]):
        ctx.warn(f"baseline: lambda {lams.min():g} leaves the kernel system singular; "
                 f"adding jitter {ctx.cfg['jitter']:g} to the diagonal")
        t = np.maximum(t, ctx.cfg["jitter"])
    return t


def _cholesky_jittered(ctx: _Ctx, make: Callable, base: float):
    """Lower Cholesky factor of A + j*I, A = make() (m, m): j = base (silent), then growing
    x100 (warned). A is rebuilt per attempt rather than copied: for exact KRR it is n x n
    and a failed factorisation overwrites it."""
    bk, j = ctx.bk, base
    for _ in range(8):
        L = bk.cholesky(bk.add_diag(make(), j))
        if L is not None:
            return L
        j = max(j * 100.0, ctx.cfg["jitter"])
        ctx.warn(f"baseline: kernel matrix is singular (duplicate points?); adding jitter {j:g}")
    raise MotifpipeError("baseline: kernel matrix stays singular after adding jitter")


# ---------------------------------------------------------------------------
# Spectral path: every lambda from one decomposition
# ---------------------------------------------------------------------------


@dataclass
class _Spectrum:
    """A fitted-value operator H(t) = U diag(S/(S+t)) U^T for a family of ridge shifts t.

    S: (k,) eigenvalues (>0 kept); u: (k,) = U^T yc; yperp2 = ||yc - U u||^2.
    Rows R where LOO residuals are evaluated: U_R (r, k), yperp_R (r,), levperp_R (r,)
    = 1 - ||U_R[i]||^2; full=True when U spans R^n (dual form, exact kernel).
    A_val: (n_val, k) with validation predictions A_val @ (u / (S + t)).
    coef_map: (m, k) with fitted coefficients coef_map @ (u / (S + t)).
    """

    S: np.ndarray
    u: np.ndarray
    yperp2: float
    n: int
    coef_map: object
    full: bool = False
    U_R: np.ndarray | None = None
    yperp_R: np.ndarray | None = None
    levperp_R: np.ndarray | None = None
    y_R: np.ndarray | None = None
    A_val: np.ndarray | None = None

    def coef(self, bk, t: float) -> np.ndarray:
        return bk.numpy(self.coef_map) @ (self.u / (self.S + t))


def _path_scores(sp: _Spectrum, shifts: np.ndarray, criterion: str, r_val=None) -> np.ndarray:
    """Selection score per shift (lower is better): (L,) float64, inf where undefined.

    loo: mean over rows R of the closed-form leave-one-out residual
         e_i = (y_i - f_i) / (1 - H_ii), written so that t cancels when U spans R^n.
    gcv: (RSS/n) / (1 - tr(H)/n)^2.    val: mean squared validation error.
    """
    inv = 1.0 / (sp.S[:, None] + shifts[None, :])  # (k, L): every lambda at once
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if criterion == "loo":
            out = _loo_scores(sp, shifts, inv)
        elif criterion == "gcv":
            rss = ((shifts * inv * sp.u[:, None]) ** 2).sum(0) + sp.yperp2
            dof = 1.0 - (sp.S[:, None] * inv).sum(0) / sp.n
            out = np.where(dof > 1e-12, (rss / sp.n) / dof**2, np.inf)
        else:
            out = ((r_val[:, None] - sp.A_val @ (sp.u[:, None] * inv)) ** 2).mean(0)
    out[~np.isfinite(out)] = np.inf
    return out


def _loo_scores(sp: _Spectrum, shifts: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Mean squared closed-form LOO residual over rows R for each shift: (L,)."""
    U2 = sp.U_R**2
    if sp.full:  # (I - H) = t (K + tI)^-1: e_i = a_i / [(K + tI)^-1]_ii, t cancels
        return (((sp.U_R @ (sp.u[:, None] * inv)) / (U2 @ inv)) ** 2).mean(0)
    num = sp.U_R @ (shifts * sp.u[:, None] * inv) + sp.yperp_R[:, None]
    den = U2 @ (shifts * inv) + sp.levperp_R[:, None]
    e2 = (num / den) ** 2
    # t = 0 (least squares within the span): an interpolated point has no LOO residual
    e2[:, (shifts == 0) & np.any(sp.levperp_R <= 1e-9)] = np.inf
    return e2.mean(0)


def _spectrum_dual(ctx: _Ctx, K, yc: np.ndarray, K_val=None) -> _Spectrum:
    """Spectrum of the exact n x n kernel matrix K (shifts are floored by jitter, so every
    eigenvalue is kept and U = Q spans R^n). K_val: (n_val, n) for validation scoring."""
    bk = ctx.bk
    s, Q = bk.eigh(K)
    s, Q = np.maximum(bk.numpy(s), 0.0), bk.numpy(Q)  # K is PSD: negatives are rounding
    u = Q.T @ yc
    sp = _Spectrum(S=s, u=u, yperp2=0.0, n=yc.shape[0], coef_map=Q, full=True, U_R=Q, y_R=yc)
    if K_val is not None:
        sp.A_val = bk.numpy(K_val) @ Q
    return sp


def _spectrum_primal(ctx: _Ctx, feats: Callable, m: int, X, yc: np.ndarray, rows, X_val,
                     whiten=None, cut: float = 1e-12) -> _Spectrum:
    """Spectrum of ridge regression on m features Phi = feats(X): (n, m), accumulated in
    row blocks (memory O(block*m + m^2 + |rows|*m)). For Nyström, feats already applies
    the whitening L^-1 and ``whiten`` = L maps feature weights w to centre weights L^-T w.

    X: (n, D) backend array; rows: sorted indices where LOO residuals are evaluated
    (None: all).
    """
    bk = ctx.bk
    G, z = bk.gram_zeros(m), bk.zeros(m)
    yt = bk.asarray(yc)
    step = _block_rows(m)
    loo = ctx.cfg["selection"] == "loo"
    blocks = []  # the LOO rows of Phi, kept on the way rather than recomputed
    for i in range(0, X.shape[0], step):
        Pb = feats(X[i : i + step])
        G = bk.gram_add(G, Pb)
        z += Pb.T @ yt[i : i + step]
        if loo and rows is None:
            blocks.append(bk.numpy(Pb))
        elif loo:
            lo, hi = np.searchsorted(rows, [i, i + step])
            blocks.append(bk.numpy(bk.take(Pb, rows[lo:hi] - i)))
    S, V = bk.eigh(bk.symmetrize_upper(G))
    S, V = bk.numpy(S), bk.numpy(V)
    keep = S > cut * max(float(S.max()), 1e-300)  # pseudo-inverse semantics at lam = 0
    S, V = S[keep], V[:, keep]
    root = np.sqrt(S)
    u = (V.T @ bk.numpy(z)) / root
    T = V if whiten is None else bk.numpy(bk.solve_lower(whiten, bk.asarray(V), transpose=True))
    sp = _Spectrum(S=S, u=u, yperp2=max(float(yc @ yc - u @ u), 0.0), n=yc.shape[0],
                   coef_map=T * root)
    if loo:
        U_R = np.concatenate(blocks) @ (V / root)
        sp.U_R, sp.y_R = U_R, (yc if rows is None else yc[rows])
        sp.yperp_R = sp.y_R - U_R @ u
        sp.levperp_R = np.clip(1.0 - (U_R**2).sum(1), 0.0, 1.0)
    if X_val is not None:
        sp.A_val = bk.numpy(feats(X_val)) @ (V * root)
    return sp


# ---------------------------------------------------------------------------
# Grid search over gamma, and the two-stage scheme for large n
# ---------------------------------------------------------------------------


@dataclass
class _Choice:
    gamma: float
    factor: float
    lam: float
    shift: float
    score: float
    spectrum: _Spectrum


def _search(ctx: _Ctx, gammas, lams: np.ndarray, shifts: np.ndarray, build: Callable,
            r_val, curve: list, stage: str) -> _Choice:
    """Score every (gamma, lam); build(gamma) -> _Spectrum. Appends rows to ``curve``."""
    best, first = None, len(curve)
    for factor, gamma in gammas:
        sp = build(gamma)
        scores = _path_scores(sp, shifts, ctx.cfg["selection"], r_val)
        for j, lam in enumerate(lams):
            curve.append({"gamma_factor": factor, "gamma": gamma, "lam": float(lam),
                          "score": float(scores[j]), "stage": stage})
            if best is None or scores[j] < best.score:
                best = _Choice(gamma, factor, float(lam), float(shifts[j]), float(scores[j]), sp)
    if not np.isfinite(best.score) and len(curve) - first > 1:
        raise MotifpipeError("baseline: every grid point gave an undefined selection score "
                             "(lambda = 0 with as many features as points?)")
    return best


def _gammas(ctx: _Ctx, X: np.ndarray) -> tuple[list, float]:
    g0 = median_gamma(X, ctx.rng)
    return [(f, f * g0) for f in ctx.cfg["gamma_factors"]], g0


def _subsample(ctx: _Ctx, n: int, at_least: int = 0) -> np.ndarray:
    """Sorted seeded row subset for the gamma search; all rows when n is small."""
    size = min(n, max(int(ctx.cfg["selection_max_n"]), at_least))
    return np.arange(n) if size >= n else np.sort(ctx.rng.choice(n, size=size, replace=False))


def _feature_select(ctx, X, yc, X_val, r_val, m: int, make_feats: Callable,
                    whiten: Callable, info: dict) -> _Choice:
    """Two-stage selection for feature solvers (Nyström, RFF) with m features.

    Stage 1 scores every (gamma, lam) on the subsample R; stage 2 (only when R is
    not all of X) rebuilds the spectrum on all rows at the chosen gamma, keeps LOO
    rows R, and re-selects lam since its best value depends on n.
    make_feats(gamma, L) -> feats(X_block); whiten(gamma) -> (m, m) factor L or None.
    """
    bk, n = ctx.bk, X.shape[0]
    gammas, g0 = _gammas(ctx, X)
    R = _subsample(ctx, n, at_least=2 * m)
    lams = np.asarray(ctx.cfg["lambda_grid"])
    Xt, Xv = bk.asarray(X), (bk.asarray(X_val) if ctx.cfg["selection"] == "val" else None)
    XR, curve = bk.take(Xt, R), []

    def build(rows_X, y, rows):
        def spectrum(g):
            L = whiten(g)
            return _spectrum_primal(ctx, make_feats(g, L), m, rows_X, y, rows, Xv, L)
        return spectrum

    sub = R.shape[0] < n
    stage1 = build(XR, yc[R], None)
    best = _search(ctx, gammas, lams, _shifts(ctx, lams, R.shape[0], False), stage1,
                   r_val, curve, "subsample" if sub else "full")
    if sub:
        full = build(Xt, yc, R)
        best = _search(ctx, [(best.factor, best.gamma)], lams, _shifts(ctx, lams, n, False),
                       full, r_val, curve, "full")
    info.update(median_gamma=g0, curve=curve, selection_rows=int(R.shape[0]))
    return best


# ---------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------


def _fit_krr(X, y, X_val, y_val, ctx: _Ctx) -> KernelModel:
    """Exact KRR: select (gamma, lam), then one Cholesky solve of (K + n*lam*I) a = yc.

    Up to ``select_centers`` points the selection is exact (one eigendecomposition of
    K per gamma); above, it uses the same closed forms on a Nyström approximation with
    ``select_centers`` centres, and only the final solve is exact.
    """
    bk, c, n = ctx.bk, ctx.cfg, X.shape[0]
    b = float(y.mean())
    yc, r_val = y - b, (y_val - b if c["selection"] == "val" else None)
    lams = np.asarray(c["lambda_grid"])
    info = {"solver": "krr", "selection": c["selection"], "backend": bk.name, "device": bk.device}
    if n <= c["select_centers"]:
        gammas, g0 = _gammas(ctx, X)
        Xt, Xv = bk.asarray(X), bk.asarray(X_val)
        build = lambda g: _spectrum_dual(  # noqa: E731
            ctx, bk.kernel(Xt, Xt, g), yc, bk.kernel(Xv, Xt, g) if r_val is not None else None)
        curve: list = []
        best = _search(ctx, gammas, lams, _shifts(ctx, lams, n, True), build, r_val, curve, "full")
        info.update(median_gamma=g0, curve=curve, selection_approx="exact")
    else:
        m = int(c["select_centers"])
        best = _nystrom_select(X, yc, X_val, r_val, ctx, m, info)
        info.pop("center_index")
        info["selection_approx"] = f"nystrom({m})"
        best.shift = float(_shifts(ctx, np.array([best.lam]), n, True)[0])
    coef = _dual_solve(ctx, X, yc, best.gamma, best.shift)
    info.update(gamma=best.gamma, gamma_factor=best.factor, lam=best.lam, score=best.score)
    return KernelModel("gaussian", float(best.gamma), X.copy(), coef, b, info)


def _dual_solve(ctx: _Ctx, X: np.ndarray, yc: np.ndarray, gamma: float, shift: float):
    """a = (K + shift*I)^-1 yc by Cholesky (jitter on failure); a: (n,) numpy."""
    bk = ctx.bk
    Xt = bk.asarray(X)
    L = _cholesky_jittered(ctx, lambda: bk.add_diag(bk.kernel(Xt, Xt, gamma), shift), 0.0)
    w = bk.solve_lower(L, bk.asarray(yc)[:, None])
    return bk.numpy(bk.solve_lower(L, w, transpose=True))[:, 0]


def _nystrom_select(X, yc, X_val, r_val, ctx: _Ctx, m: int, info: dict) -> _Choice:
    """Draw m centres uniformly (seeded) and run the two-stage Nyström selection."""
    n = X.shape[0]
    if m > n:
        raise MotifpipeError(f"baseline.centers: {m} centres > {n} training points")
    centres = np.sort(ctx.rng.choice(n, size=m, replace=False))
    Z = ctx.bk.asarray(X[centres])
    bk, jit = ctx.bk, ctx.cfg["jitter"]

    def make_feats(g, L):  # whitened kernel columns k(x, Z) L^-T, computed per block
        return lambda Xb: bk.solve_lower(L, bk.kernel(Xb, Z, g).T).T

    best = _feature_select(
        ctx, X, yc, X_val, r_val, m, make_feats,
        whiten=lambda g: _cholesky_jittered(ctx, lambda: bk.kernel(Z, Z, g), jit), info=info)
    info["center_index"] = centres
    return best


def _fit_nystrom(X, y, X_val, y_val, ctx: _Ctx) -> KernelModel:
    """Nyström KRR: ridge on m whitened kernel columns k(x, Z) L^-T, W = k(Z, Z) = L L^T.

    Equivalent to a = (C^T C + n*lam*W)^-1 C^T yc with C = k(X, Z) (Rudi et al., 2015).
    """
    b = float(y.mean())
    yc, r_val = y - b, (y_val - b if ctx.cfg["selection"] == "val" else None)
    m = int(ctx.cfg["centers"])
    info = {"solver": "nystrom", "selection": ctx.cfg["selection"], "backend": ctx.bk.name,
            "device": ctx.bk.device, "centers": m}
    best = _nystrom_select(X, yc, X_val, r_val, ctx, m, info)
    centres = info.pop("center_index")
    coef = best.spectrum.coef(ctx.bk, best.shift)
    info.update(gamma=best.gamma, gamma_factor=best.factor, lam=best.lam, score=best.score)
    return KernelModel("gaussian", float(best.gamma), X[centres].copy(), coef, b, info)


def _fit_rff(X, y, X_val, y_val, ctx: _Ctx) -> FeatureModel:
    """Random-Fourier-feature ridge with F features; lam = 0 is the minimum-norm solution.

    One N(0, I) draw serves every gamma (W = sqrt(2 gamma) * Z): common random numbers
    make the gamma comparison paired. With F >= n/2 or a zero lambda the spectrum comes
    from a thin SVD of the (n, F) features, otherwise from their F x F Gram matrix.
    """
    bk, c, n = ctx.bk, ctx.cfg, X.shape[0]
    F = int(c["features"])
    b = float(y.mean())
    yc, r_val = y - b, (y_val - b if c["selection"] == "val" else None)
    Z = ctx.rng.standard_normal((F, X.shape[1]))
    phase = ctx.rng.uniform(0.0, 2.0 * np.pi, size=F)
    scale = math.sqrt(2.0 / F)
    Zt, Pt = bk.asarray(Z), bk.asarray(phase)

    def make_feats(g, _L=None):
        Wg = Zt * math.sqrt(2.0 * g)
        return lambda Xb: bk.cos_features(Xb, Wg, Pt, scale)

    info = {"solver": "rff", "selection": c["selection"], "backend": bk.name,
            "device": bk.device, "features": F}
    # The SVD keeps full precision in the small singular values that ridgeless fits near
    # F = n depend on; the Gram route squares them but costs n*F^2 instead of ~4x that.
    if 2 * F >= n or min(c["lambda_grid"]) == 0.0:
        best = _rff_svd_select(ctx, X, yc, X_val, r_val, make_feats, info)
    else:
        best = _feature_select(ctx, X, yc, X_val, r_val, F, make_feats, lambda g: None, info)
    coef = best.spectrum.coef(bk, best.shift) * scale
    info.update(gamma=best.gamma, gamma_factor=best.factor, lam=best.lam, score=best.score)
    W = Z * math.sqrt(2.0 * best.gamma)
    return FeatureModel("gaussian", float(best.gamma), W, phase, coef, b, info)


def _rff_svd_select(ctx, X, yc, X_val, r_val, make_feats, info) -> _Choice:
    """Thin SVD of the n x F feature matrix per gamma: exact pseudo-inverse at lam = 0."""
    bk, n = ctx.bk, X.shape[0]
    gammas, g0 = _gammas(ctx, X)
    lams = np.asarray(ctx.cfg["lambda_grid"])
    Xt = bk.asarray(X)
    Xv = bk.asarray(X_val) if r_val is not None else None

    def build(g):
        feats = make_feats(g)
        U, s, Vt = (bk.numpy(a) for a in bk.svd(feats(Xt)))
        keep = s > max(U.shape[0], Vt.shape[1]) * np.finfo(float).eps * s.max()
        U, s, Vt = U[:, keep], s[keep], Vt[keep]
        u = U.T @ yc
        sp = _Spectrum(S=s**2, u=u, yperp2=max(float(yc @ yc - u @ u), 0.0), n=n,
                       coef_map=Vt.T * s, full=U.shape[1] == n, U_R=U, y_R=yc,
                       yperp_R=yc - U @ u, levperp_R=np.clip(1.0 - (U**2).sum(1), 0.0, 1.0))
        if Xv is not None:
            sp.A_val = bk.numpy(feats(Xv)) @ sp.coef_map
        return sp

    curve: list = []
    best = _search(ctx, gammas, lams, _shifts(ctx, lams, n, False), build, r_val, curve, "full")
    info.update(median_gamma=g0, curve=curve, selection_rows=n)
    return best


def _fit_svr(X, y, X_val, y_val, ctx: _Ctx) -> KernelModel:
    """epsilon-SVR by libsvm (scikit-learn); C = 1/(2 n lam) unless ``C`` is set.

    No closed form exists for SVR's LOO error, so the grid is scored on the
    validation split whatever ``selection`` says (recorded in info).
    """
    from sklearn.svm import SVR

    c, n = ctx.cfg, X.shape[0]
    if X_val.shape[0] == 0:
        raise MotifpipeError("baseline.kind: 'svr' selects on the validation split, which is empty")
    gammas, g0 = _gammas(ctx, X)
    lams = [None] if c["C"] is not None else c["lambda_grid"]
    curve, best = [], None
    for factor, gamma in gammas:
        for lam in lams:
            # lam = 0 would be C = inf: libsvm needs a finite C, 1e8 is hard-margin in practice
            C = float(c["C"]) if lam is None else min(1.0 / (2.0 * n * max(lam, 1e-300)), 1e8)
            svr = SVR(kernel="rbf", gamma=gamma, C=C, epsilon=float(c["epsilon"]))
            svr.fit(X, y)
            score = float(np.mean((svr.predict(X_val) - y_val) ** 2))
            curve.append({"gamma_factor": factor, "gamma": gamma, "lam": lam, "C": C,
                          "score": score, "stage": "full"})
            if best is None or score < best[0]:
                best = (score, factor, gamma, lam, C, svr)
    score, factor, gamma, lam, C, svr = best
    info = {"solver": "svr", "selection": "val", "backend": "libsvm", "device": "cpu",
            "gamma": gamma, "gamma_factor": factor, "lam": lam, "C": C,
            "epsilon": float(c["epsilon"]), "score": score, "median_gamma": g0,
            "curve": curve, "n_support": int(svr.support_.shape[0])}
    return KernelModel("gaussian", float(gamma), np.array(svr.support_vectors_, dtype=np.float64),
                       np.array(svr.dual_coef_[0], dtype=np.float64),
                       float(svr.intercept_[0]), info)


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

_SOLVERS = {"krr": _fit_krr, "svr": _fit_svr, "nystrom": _fit_nystrom, "rff": _fit_rff}


def fit_baseline(X, y, X_val, y_val, cfg: dict | None, seed: int) -> KernelModel | FeatureModel:
    """Fit the configured convex baseline, hyper-parameter selection included.

    X: (n, D), y: (n,) training data; X_val: (n_val, D), y_val: (n_val,) validation
    data (selection uses it only for ``selection: val`` and SVR; ``info['val_mse']``
    always). cfg: the config's ``baseline:`` mapping (missing keys take DEFAULTS).
    ``info['fit_time_s']`` is the wall time of the whole call, selection included.
    Returns a KernelModel (krr, svr, nystrom) or a FeatureModel (rff).
    """
    t0 = time.perf_counter()
    c = _resolve_cfg(cfg)
    X, y = _check_data(X, y, "train")
    X_val, y_val = _check_data(X_val, y_val, "val")
    if X_val.shape[1] != X.shape[1]:
        raise MotifpipeError(f"baseline: X_val has {X_val.shape[1]} columns but X has {X.shape[1]}")
    if X.shape[0] < 2:
        raise MotifpipeError(f"baseline: need at least 2 training points, got {X.shape[0]}")
    if c["selection"] == "val" and X_val.shape[0] == 0:
        raise MotifpipeError("baseline.selection: 'val' needs a non-empty validation set")
    kind = c["kind"]
    if kind == "auto":
        kind = "krr" if X.shape[0] <= c["auto_threshold"] else "nystrom"
    if kind == "nystrom" and int(c["centers"]) > X.shape[0]:
        raise MotifpipeError(f"baseline.centers: {c['centers']} centres > {X.shape[0]} "
                             "training points")
    ctx = _Ctx(c, np.random.default_rng(seed), _backend(c["device"], kind == "nystrom"))
    model = _SOLVERS[kind](X, y, X_val, y_val, ctx)
    model.info.update(kind=c["kind"], seed=int(seed), n_train=int(X.shape[0]),
                      fit_time_s=time.perf_counter() - t0)
    if c["kind"] == "auto":
        model.info["auto_choice"] = kind
    if X_val.shape[0]:
        model.info["val_mse"] = float(np.mean((model.predict(X_val) - y_val) ** 2))
    return model


# ---------------------------------------------------------------------------
# Persistence: safetensors arrays + JSON metadata, dispatched on meta["form"]
# ---------------------------------------------------------------------------

_FORMS = {
    "kernel": (KernelModel, ("centers", "coef")),
    "features": (FeatureModel, ("W", "phase", "coef")),
}


def save_model(model: KernelModel | FeatureModel, path) -> None:
    """Write arrays as safetensors and everything else as JSON metadata (no pickling)."""
    form = "features" if isinstance(model, FeatureModel) else "kernel"
    arrays = {k: np.asarray(getattr(model, k), dtype=np.float64) for k in _FORMS[form][1]}
    meta = {"form": form, "format_version": FORMAT_VERSION, "kernel": model.kernel,
            "gamma": float(model.gamma), "intercept": float(model.intercept), "info": model.info}
    save_arrays(path, arrays, meta)


def load_model(path) -> KernelModel | FeatureModel:
    """Read a model written by :func:`save_model` (KernelModel or FeatureModel by ``form``)."""
    arrays, meta = load_arrays(path)
    form = meta.get("form")
    if form not in _FORMS:
        raise MotifpipeError(f"{path}: not a motifpipe baseline model (form={form!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise MotifpipeError(f"{path}: model format {meta['format_version']} is newer than "
                             f"this motifpipe ({FORMAT_VERSION})")
    cls, names = _FORMS[form]
    try:
        fields = {k: np.asarray(arrays[k], dtype=np.float64) for k in names}
        return cls(kernel=meta["kernel"], gamma=float(meta["gamma"]),
                   intercept=float(meta["intercept"]), info=meta.get("info", {}), **fields)
    except KeyError as exc:
        raise MotifpipeError(f"{path}: baseline model file lacks {exc}") from None
