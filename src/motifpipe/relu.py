"""Analytic transfer of a Gaussian kernel model into a plain deep ReLU network.

Goal. Given a fitted Gaussian kernel model

    f_K(x) = sum_j a_j exp(-gamma ||x - c_j||^2) + b,      j = 1..m, x in R^D,

build, without any training, an ``nn.Sequential`` of ``Linear`` and ``ReLU`` layers
whose output ``N(x)`` satisfies ``|N(x) - f_K(x)| <= tol`` for every ``x`` in a box
``[lo, hi]`` (the *domain*; default: the centres' bounding box enlarged by 5 % per side).

Construction (four Linear layers, three ReLU layers, then ``Flatten(0)``)
------------------------------------------------------------------------

1. Expand the square so that only ONE non-linear quantity is shared by all centres.
   Shift coordinates by the box midpoint, ``x' = x - mid``, ``c'_j = c_j - mid`` (the
   shift keeps the numbers small and avoids cancellation); then

       r_j(x) = ||x - c_j||^2 = q(x') - 2 c'_j . x' + ||c'_j||^2,   q(x') = sum_d x'_d^2.

   Only ``q`` needs approximating; the rest is linear in ``x'``.

2. Square by piecewise-linear (PL) interpolation. On ``[-R_d, R_d]`` (``R_d`` the
   half-width of the box) put ``n_d`` equal intervals of length ``h_d`` with knots
   ``t_0 = -R_d < t_1 < ...``. The PL interpolant of ``t^2`` is a sum of hinges,

       s_d(t) = t_0^2 + sum_k alpha_k ReLU(t - t_k),   alpha_0 = t_0 + t_1,  alpha_k = 2 h_d,

   and since ``t^2`` is convex with second derivative 2, ``0 <= s_d(t) - t^2 <= h_d^2/4``.
   Subtracting half of that, ``q~ = sum_d (s_d(x'_d) - h_d^2/8)``, gives

       |q~(x') - q(x')| <= eta_1 := sum_d h_d^2 / 8.                              (1)

   Layer 1 (``D -> W1``) computes the hinges ``ReLU(x'_d - t_k)``, ``k < n_d`` (the
   hinge at the right end never activates inside the box). Layer 2
   (``W1 -> 1 + D``) computes ``ReLU(q~)`` and passes ``x'_d + R_d = ReLU(x'_d - t_0)``
   through (>= 0 inside the box, so the ReLU is the identity there). Clipping ``q~`` at 0
   cannot increase the error in (1) because ``q >= 0``. Then
   ``r~_j = ReLU(q~) - 2 c'_j . x' + ||c'_j||^2`` obeys ``|r~_j - r_j| <= eta_1``.

3. The Gaussian profile ``g(u) = exp(-gamma u)``, ``u >= 0``, by a PL interpolant ``G``
   with ``K`` knots ``0 = u_0 < u_1 < ... < u_{K-1} = U``, constant before 0 and beyond U:

       G(u) = 1 - eta_G + sum_k beta_k ReLU(u - u_k),   beta = jumps of the slopes.

   ``g`` is convex with ``|g''(u)| = gamma^2 exp(-gamma u)``, so on an interval of length
   ``h`` starting at ``u_k`` the interpolant exceeds ``g`` by at most
   ``h^2 gamma^2 exp(-gamma u_k) / 8``; the knots are spaced so this is ``<= 2 eta_G``
   (intervals grow like ``exp(gamma u / 2)`` where ``g`` flattens out), and the shift by
   ``eta_G`` centres the error:  ``|G(u) - g(u)| <= eta_G`` on ``[0, U]``. The end point
   is ``U = min(U_max, ln(1 / (2 eta_G)) / gamma)``, with ``U_max`` the largest
   ``||x - c_j||^2`` over the box; beyond ``U``, ``0 < g(u) <= g(U) <= 2 eta_G`` and
   ``G = g(U) - eta_G``, so the bound holds for every ``u >= 0``:

       sup_{u >= 0} |G(u) - g(u)| <= eta_G.                                       (2)

   Every slope of ``G`` is a secant slope of ``g``, so ``G`` is ``gamma``-Lipschitz on the
   whole line (it is constant outside ``[0, U]``).
   Layer 3 (``1 + D -> m K``) computes ``ReLU(r~_j - u_k)`` for every centre ``j`` and
   knot ``k``; layer 4 (``m K -> 1``) the head
   ``sum_j a_j sum_k beta_k ReLU(r~_j - u_k) + b + (1 - eta_G) sum_j a_j``.

Error bound. For every ``x`` in the box, by the triangle inequality, the Lipschitz
constant of ``G`` and (1), (2):

    |N(x) - f_K(x)| <= sum_j |a_j| |G(r~_j) - g(r_j)|
                    <= sum_j |a_j| (|G(r~_j) - G(r_j)| + |G(r_j) - g(r_j)|)
                    <= A (gamma eta_1 + eta_G),          A = sum_j |a_j|.

The budget: ``A (gamma eta_1 + eta_G) = 0.99 tol``; the remaining 1 % is left for
float64 rounding (not itself bounded rigorously; measured rounding is ~1e-12 here).
The split ``gamma eta_1 = theta E``, ``eta_G = (1 - theta) E`` (``E = 0.99 tol / A``)
is chosen on a grid of ``theta`` to minimise the parameter count.

Size. ``h_d = sqrt(8 eta_1 / D)``, so layer 1 has ``W1 = sum_d ceil(2 R_d / h_d)`` units.
The profile knots are uniform steps in ``v = gamma u`` of ``4 sqrt(eta_G) exp(v_i / 2)``
per block ``[v_i, v_i + 0.25)`` (about 6 % more knots than the optimal spacing), so

    K - 1 ~ 2 (1 - exp(-gamma U / 2)) / (4 sqrt(eta_G)) <= min(gamma U, 2) / (4 sqrt(eta_G)),

and the parameter count is ``(D + 3) m K + 2 (D + 1) W1 + D + 2``: layer 3 is
``m K`` wide and grows like ``m sqrt(A / tol)``. The depth is fixed (4 Linear layers);
the tolerance sets the widths. Large dual coefficients (small ridge) raise ``A`` and
so the size. ``max_params`` is checked before anything is allocated.

Outside the box there is no guarantee. Weights are float64; cast to float32 and the
rounding (about 1e-7 * A * gamma U) may exceed small tolerances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from motifpipe.errors import MotifpipeError

SUPPORTED_KERNELS = ("gaussian",)
_FIELDS = ("kernel", "gamma", "centers", "coef", "intercept")
#: Fraction of ``tol`` kept back for floating-point rounding.
ROUNDING_RESERVE = 0.01
#: Width (in ``v = gamma u``) of the blocks of uniformly spaced profile knots.
_BLOCK = 0.25
#: Relative enlargement of the centres' bounding box per side (default domain).
_PAD = 0.05
#: Activations per chunk when evaluating a wide network (float64 entries): 16 MB, small
#: enough for the allocator to reuse the buffer instead of mapping fresh pages each time.
_CHUNK_ENTRIES = 1 << 21


@dataclass(frozen=True)
class ReluPlan:
    """Everything the network is built from; shapes: ``D`` dims, ``K`` profile knots."""

    lo: np.ndarray          # (D,) box lower corner
    hi: np.ndarray          # (D,) box upper corner
    n_sq: np.ndarray        # (D,) intervals of the t^2 interpolant per dimension
    u_knots: np.ndarray     # (K,) knots of the exp(-gamma u) interpolant, u_0 = 0
    eta_sq: float           # eta_1: max error of the squared norm
    eta_exp: float          # eta_G: max error of the profile
    sum_abs_coef: float     # A = sum_j |a_j|
    bound: float            # A (gamma eta_1 + eta_G): guaranteed max error in exact arithmetic
    widths: tuple[int, ...]  # hidden widths (W1, 1 + D, m K)
    n_params: int


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _check_model(model) -> tuple[float, np.ndarray, np.ndarray, float]:
    """(gamma, centers (m, D), coef (m,), intercept) of a fitted Gaussian KernelModel."""
    missing = [k for k in _FIELDS if getattr(model, k, None) is None]
    if missing:
        raise MotifpipeError(f"relu transfer: {type(model).__name__} is not a fitted kernel "
                             f"model (missing {', '.join(missing)})")
    kernel = model.kernel
    if kernel not in SUPPORTED_KERNELS:
        raise MotifpipeError(f"relu transfer: kernel {kernel!r} is not supported; "
                             f"supported kernels: {', '.join(SUPPORTED_KERNELS)}")
    try:
        gamma = float(model.gamma)
        C = np.asarray(model.centers, dtype=np.float64)
        a = np.asarray(model.coef, dtype=np.float64).reshape(-1)
        b = float(model.intercept)
    except (AttributeError, TypeError, ValueError) as exc:
        raise MotifpipeError(f"relu transfer: invalid kernel model ({exc})") from None
    if not (math.isfinite(gamma) and gamma > 0):
        raise MotifpipeError(f"relu transfer: gamma must be finite and > 0, got {gamma}")
    if C.ndim != 2 or C.shape[0] == 0 or C.shape[1] == 0 or a.shape != (C.shape[0],):
        raise MotifpipeError(f"relu transfer: centers {C.shape} and coef {a.shape} do not form "
                             "a fitted model (need (m, D) and (m,), m >= 1)")
    if not (np.isfinite(C).all() and np.isfinite(a).all() and math.isfinite(b)):
        raise MotifpipeError("relu transfer: non-finite value in centers, coef or intercept")
    return gamma, C, a, b


def _check_domain(domain, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box (lo, hi), each (D,); default: centres' bounding box enlarged by _PAD per side."""
    D = C.shape[1]
    if domain is None:
        lo, hi = C.min(0), C.max(0)
        pad = _PAD * (hi - lo)
        pad[pad == 0] = _PAD * max(1.0, float(np.abs(C).max()))  # a flat coordinate
        return lo - pad, hi + pad
    try:
        lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in domain)
    except (TypeError, ValueError):
        raise MotifpipeError("relu transfer: domain must be a pair (lo, hi) of arrays") from None
    if lo.shape != (D,) or hi.shape != (D,):
        raise MotifpipeError(f"relu transfer: domain corners have shapes {lo.shape}, "
                             f"{hi.shape}; the model needs ({D},)")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (lo <= hi).all()):
        raise MotifpipeError("relu transfer: domain needs finite corners with lo <= hi")
    return lo, hi


# ---------------------------------------------------------------------------
# Knots and sizes
# ---------------------------------------------------------------------------


def _square_intervals(half: np.ndarray, eta_sq: float) -> np.ndarray:
    """Intervals per dimension so that sum_d h_d^2 / 8 <= eta_sq. half: (D,) -> (D,) int."""
    h = math.sqrt(8.0 * eta_sq / len(half))
    return np.ceil(2.0 * half / h).astype(np.int64)


def _exp_blocks(gamma: float, u_end: float, eta_exp: float):
    """Blocks of uniform knots in v = gamma u: (starts, ends, intervals per block).

    In a block starting at v_i, a step dv gives an interpolation error of at most
    dv^2 exp(-v_i) / 8 (in v, g = exp(-v)); dv = 4 sqrt(eta) exp(v_i / 2) makes it 2 eta.
    """
    v_end = gamma * u_end
    starts = np.arange(0.0, v_end, _BLOCK)
    ends = np.minimum(starts + _BLOCK, v_end)
    step = 4.0 * math.sqrt(eta_exp) * np.exp(starts / 2.0)
    return starts, ends, np.ceil((ends - starts) / step).astype(np.int64)


def _exp_end(gamma: float, u_max: float, eta_exp: float) -> float:
    """U: where exp(-gamma U) <= 2 eta_exp, but never beyond the largest distance U_max."""
    return min(u_max, max(0.0, math.log(1.0 / (2.0 * eta_exp)) / gamma))


def _count_params(D: int, m: int, w1: int, k: int) -> int:
    """Parameters of Linear(D, w1), Linear(w1, 1+D), Linear(1+D, m k), Linear(m k, 1)."""
    w3 = m * k
    return (D + 1) * w1 + (w1 + 1) * (1 + D) + (D + 2) * w3 + (w3 + 1)


def _size(half, gamma, u_max, m, theta, budget) -> tuple[int, float, float]:
    """(n_params, eta_sq, eta_exp) for the split gamma eta_sq = theta E, eta_exp = (1-theta) E."""
    eta_sq, eta_exp = theta * budget / gamma, (1.0 - theta) * budget
    w1 = int(np.maximum(_square_intervals(half, eta_sq), 1).sum())
    k = int(_exp_blocks(gamma, _exp_end(gamma, u_max, eta_exp), eta_exp)[2].sum()) + 1
    return _count_params(len(half), m, w1, k), eta_sq, eta_exp


def plan_relu(model, tol: float, domain=None, max_params: int = 5_000_000) -> ReluPlan:
    """Choose the knots for ``tol`` (see the module docstring); raise if over ``max_params``."""
    try:
        tol_ok = math.isfinite(float(tol)) and float(tol) > 0
    except (TypeError, ValueError):
        tol_ok = False
    if not tol_ok:
        raise MotifpipeError(f"relu transfer: tol must be a finite number > 0, got {tol!r}")
    tol = float(tol)
    if not (isinstance(max_params, int | np.integer) and max_params > 0):
        raise MotifpipeError(f"relu transfer: max_params must be a positive int, "
                             f"got {max_params!r}")
    gamma, C, a, _ = _check_model(model)
    lo, hi = _check_domain(domain, C)
    half = (hi - lo) / 2.0
    # Largest squared distance from a centre to the box: per coordinate, the far face.
    far = np.maximum(np.abs(C - lo), np.abs(C - hi))
    u_max = float((far**2).sum(1).max())
    A = float(np.abs(a).sum())
    # A = 0 is a constant model: any split is exact; use a budget of 1 to keep it tiny.
    budget = (1.0 - ROUNDING_RESERVE) * tol / A if A > 0 else 1.0
    m = C.shape[0]
    sizes = [_size(half, gamma, u_max, m, t, budget) for t in np.linspace(0.01, 0.99, 99)]
    n_params, eta_sq, eta_exp = min(sizes)
    if n_params > max_params:
        raise MotifpipeError(f"relu transfer: tol={tol:g} needs {n_params:,} parameters, "
                             f"above the cap max_params={max_params:,}; raise tol or max_params")
    n_sq = _square_intervals(half, eta_sq)
    starts, ends, counts = _exp_blocks(gamma, _exp_end(gamma, u_max, eta_exp), eta_exp)
    # Knots in v = gamma u: each block's uniform knots, then the end point (u_0 = 0 always).
    v = np.concatenate([np.linspace(s, e, c, endpoint=False)
                        for s, e, c in zip(starts, ends, counts, strict=True)] + [ends[-1:]])
    u_knots = np.concatenate([[0.0], v[v > 0]]) / gamma
    h = 2.0 * half / np.maximum(n_sq, 1)
    eta_sq = float((h**2).sum() / 8.0)  # the achieved error, <= the target
    w1 = int(np.maximum(n_sq, 1).sum())
    eta_exp = float(eta_exp)
    return ReluPlan(lo, hi, n_sq, u_knots, eta_sq, eta_exp, A, A * (gamma * eta_sq + eta_exp),
                    (w1, 1 + C.shape[1], m * len(u_knots)), int(n_params))


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------


def _hinge_coefs(knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Slope jumps beta (K,) so that sum_k beta_k ReLU(t - t_k) + values[0] is the PL
    interpolant through (knots, values), constant before knots[0] and after knots[-1]."""
    slopes = np.diff(values) / np.diff(knots)
    return np.diff(np.concatenate([[0.0], slopes, [0.0]]))


def _square_layers(plan: ReluPlan):
    """Layers 1 and 2 as numpy arrays: W1 (w1, D), b1, W2 (1 + D, w1), b2."""
    D = len(plan.lo)
    half, mid = (plan.hi - plan.lo) / 2.0, (plan.hi + plan.lo) / 2.0
    rows, bias1, alpha, first, const = [], [], [], [], 0.0
    for d in range(D):
        n = int(plan.n_sq[d])
        t = np.linspace(-half[d], half[d], n + 1)
        first.append(len(bias1))
        rows += [d] * max(n, 1)
        bias1 += list(-(mid[d] + t[: max(n, 1)]))
        # Drop the right-most jump: inside the box it never activates.
        alpha += list(_hinge_coefs(t, t**2)[: max(n, 1)]) if n else [0.0]
        h = 2.0 * half[d] / n if n else 0.0
        const += t[0] ** 2 - h**2 / 8.0  # centre the interpolation error (see (1))
    w1 = len(bias1)
    W1 = np.zeros((w1, D))
    W1[np.arange(w1), rows] = 1.0
    W2 = np.zeros((1 + D, w1))
    W2[0] = alpha
    W2[1 + np.arange(D), first] = 1.0  # x'_d + R_d passes through
    b2 = np.zeros(1 + D)
    b2[0] = const
    return W1, np.asarray(bias1), W2, b2


def _gauss_layers(plan: ReluPlan, gamma: float, C: np.ndarray, a: np.ndarray, b: float):
    """Layers 3 and 4: W3 (m K, 1 + D), b3, W4 (1, m K), b4."""
    half, mid = (plan.hi - plan.lo) / 2.0, (plan.hi + plan.lo) / 2.0
    u = plan.u_knots
    K = len(u)
    Cs = C - mid
    # r~_j = q~ - 2 c'_j.(p - R) + |c'_j|^2, p = x' + R the pass-through of layer 2.
    W3 = np.concatenate([np.ones((len(C), 1)), -2.0 * Cs], axis=1)
    r0 = 2.0 * Cs @ half + (Cs**2).sum(1)
    beta = _hinge_coefs(u, np.exp(-gamma * u))
    W4 = np.outer(a, beta).reshape(1, -1)
    b4 = b + (1.0 - plan.eta_exp) * a.sum()  # G = 1 - eta_G + hinges (see (2))
    return np.repeat(W3, K, axis=0), (r0[:, None] - u[None, :]).ravel(), W4, np.array([b4])


def _linear(W: np.ndarray, bias: np.ndarray) -> nn.Linear:
    """A float64 nn.Linear holding W (out, in) and bias (out,)."""
    layer = nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
        layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float64)))
    return layer


def relu_network(model, tol: float, domain: tuple[np.ndarray, np.ndarray] | None = None,
                 max_params: int = 5_000_000) -> nn.Sequential:
    """A plain ReLU network within ``tol`` (max abs error) of a Gaussian ``model`` on a box.

    Returns ``Sequential(Linear, ReLU, Linear, ReLU, Linear, ReLU, Linear, Flatten(0))``,
    float64, mapping ``(n, D) -> (n,)`` (the ``Flatten(0)`` squeezes the ``(n, 1)`` head).
    ``domain``: ``(lo, hi)``, each ``(D,)``; default the centres' box enlarged 5 % per side.
    The plan (knots, error budget, guaranteed bound) is attached as ``net.relu_plan``.
    """
    plan = plan_relu(model, tol, domain, max_params)
    gamma, C, a, b = _check_model(model)
    W1, b1, W2, b2 = _square_layers(plan)
    W3, b3, W4, b4 = _gauss_layers(plan, gamma, C, a, b)
    net = nn.Sequential(_linear(W1, b1), nn.ReLU(), _linear(W2, b2), nn.ReLU(),
                        _linear(W3, b3), nn.ReLU(), _linear(W4, b4), nn.Flatten(0))
    assert sum(p.numel() for p in net.parameters()) == plan.n_params
    net.relu_plan = plan
    return net


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def relu_skeleton(dim: int, widths: list[int]) -> nn.Sequential:
    """An uninitialised float64 net of the same layout, e.g. to load saved weights into:
    Linear/ReLU through ``widths`` (hidden), then ``Linear(widths[-1], 1)`` and ``Flatten(0)``."""
    layers: list[nn.Module] = []
    for i, w in enumerate(widths):
        layers += [nn.Linear(widths[i - 1] if i else dim, w, dtype=torch.float64), nn.ReLU()]
    layers += [nn.Linear(widths[-1] if widths else dim, 1, dtype=torch.float64), nn.Flatten(0)]
    return nn.Sequential(*layers)


def relu_architecture(net: nn.Sequential) -> dict:
    """Depth (number of Linear layers), hidden widths, input dim and parameter count."""
    linears = [mod for mod in net if isinstance(mod, nn.Linear)]
    return {"kind": "relu", "dim": linears[0].in_features, "depth": len(linears),
            "widths": [mod.out_features for mod in linears[:-1]],
            "n_params": sum(p.numel() for p in net.parameters())}


def predict(net: nn.Module, X: np.ndarray) -> np.ndarray:
    """``net`` on X (n, D) -> (n,) float64, in row chunks so wide layers fit in memory."""
    dtype = next(net.parameters()).dtype
    width = max(mod.out_features for mod in net.modules() if isinstance(mod, nn.Linear))
    step = max(1, _CHUNK_ENTRIES // width)
    out = np.empty(len(X))
    with torch.no_grad():
        for i in range(0, len(X), step):
            out[i:i + step] = net(torch.as_tensor(X[i:i + step], dtype=dtype)).double().numpy()
    return out


def relu_report(net: nn.Sequential, model, X: np.ndarray) -> dict:
    """Fidelity (max_abs, rms, max_rel of |net - f_K| on X (n, D)) and architecture."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise MotifpipeError(f"relu report: need held-out points X of shape (n, D), n >= 1; "
                             f"got {X.shape}")
    ref = np.asarray(model.predict(X), dtype=np.float64)
    err = np.abs(predict(net, X) - ref)
    fid = {"max_abs": float(err.max()), "rms": float(np.sqrt(np.mean(err**2))),
           "max_rel": float(err.max()) / (1.0 + float(np.abs(ref).max()))}
    plan = getattr(net, "relu_plan", None)
    if plan is not None:
        fid["bound"] = float(plan.bound)
    return {"fidelity": fid, "architecture": relu_architecture(net)}
