"""Task generators: the seed's function classes and user tables, as :class:`Dataset`.

A *task* is one entry of the config's ``tasks:`` mapping, ``{generator, n, noise,
params}``. :func:`check_task` validates and completes it (pure, no I/O);
:func:`generate` draws ``n`` samples for one sample ``seed``. Generators and their
parameters are documented in ``docs/data.md``.

Two seeds, on purpose: the target function f* is fixed by ``params.function_seed``
(default 0), the sample (inputs, noise, split) by ``seed``. Different sample seeds
therefore draw from the *same* function, which is what makes seeds comparable.

Top-level imports are numpy and stdlib only: Snakemake's DAG build imports this
module, so pandas and scikit-learn are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motifpipe.errors import MotifpipeError
from motifpipe.io import load_arrays, save_arrays

FORMAT = "motifpipe.dataset/1"
SPLITS = {"train": 0, "val": 1, "test": 2}
# Entropy tags keep function streams and sample streams apart even when
# function_seed == seed.
_FUNCTION_TAG = 0x66756E63
_SAMPLE_TAG = 0x73616D70
_CHUNK = 1 << 15  # rows per block when evaluating f*: bounds temporaries to a few MB
_MC = 4096  # Monte Carlo points used to normalise f* and to place boundaries
_GAUSS_BOX = (-3.0, 3.0)  # heatmap square for tasks with N(0, I) inputs


# --------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """One sample of a task.

    X: (n, D) float64 inputs; y: (n,) float64 noisy targets; f: (n,) float64
    noise-free f*(X), or None when unknown (real data); split: (n,) int8 with
    0 train, 1 val, 2 test; meta: JSON-able dict (format, generator, params, noise,
    seed, n, D, split fractions and counts, package version, generator extras).
    """

    X: np.ndarray
    y: np.ndarray
    f: np.ndarray | None
    split: np.ndarray
    meta: dict

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def D(self) -> int:  # noqa: N802 - D is the documented name of the input dimension
        return int(self.X.shape[1])

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Rows of one split: ``(X (k, D), y (k,), f (k,) or None)``."""
        if name not in SPLITS:
            raise MotifpipeError(f"unknown split {name!r}; expected one of {sorted(SPLITS)}")
        mask = self.split == SPLITS[name]
        return self.X[mask], self.y[mask], None if self.f is None else self.f[mask]


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _Param:
    """One generator parameter: default and type/range.

    kind: int, num, bool, str, strs (list of strings or None), choice.
    """

    default: object
    kind: str = "num"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple = ()
    required: bool = False


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(bad: str, spec: _Param, value: object) -> int | float:
    is_int = spec.kind == "int"
    ok = _is_number(value) and math.isfinite(value) and (not is_int or value == int(value))
    if not ok:
        raise MotifpipeError(
            f"{bad} must be {'an integer' if is_int else 'a number'}, got {value!r}"
        )
    value = int(value) if is_int else float(value)
    if spec.lo is not None and (value < spec.lo or (spec.lo_open and value == spec.lo)):
        raise MotifpipeError(
            f"{bad} must be {'>' if spec.lo_open else '>='} {spec.lo:g}, got {value}"
        )
    if spec.hi is not None and value > spec.hi:
        raise MotifpipeError(f"{bad} must be <= {spec.hi:g}, got {value}")
    return value


def _check_param(where: str, key: str, spec: _Param, value: object) -> object:
    """Return ``value`` converted to its kind, or raise a one-line error naming ``key``."""
    bad = f"{where}: params.{key}"
    if spec.kind in ("int", "num"):
        return _check_number(bad, spec, value)
    if spec.kind == "bool" and isinstance(value, bool):
        return value
    if spec.kind == "choice" and value in spec.choices:
        return value
    if spec.kind == "str" and isinstance(value, str) and value:
        return value
    if spec.kind == "strs" and _is_name_list(value):
        if len(set(value)) != len(value):
            raise MotifpipeError(f"{bad} lists a column twice: {value!r}")
        return list(value)
    expected = {
        "bool": "true or false",
        "choice": f"one of {list(spec.choices)}",
        "str": "a non-empty string",
        "strs": "a non-empty list of column names",
    }[spec.kind]
    raise MotifpipeError(f"{bad} must be {expected}, got {value!r}")


def _is_name_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


_FUNCTION_SEED = _Param(0, "int", lo=0)


# --------------------------------------------------------------------------- building blocks


def _function_rng(params: dict) -> np.random.Generator:
    """The generator that fixes f*: depends on params.function_seed only."""
    return np.random.default_rng([_FUNCTION_TAG, params["function_seed"]])


def _sample_rngs(seed: int) -> list[np.random.Generator]:
    """Independent streams for (inputs, noise, split) of one sample seed.

    Separate streams mean that changing ``noise`` leaves X and the split unchanged.
    """
    children = np.random.SeedSequence([_SAMPLE_TAG, seed]).spawn(3)
    return [np.random.default_rng(c) for c in children]


def _chunked(fn: Callable[[np.ndarray], np.ndarray], X: np.ndarray) -> np.ndarray:
    """Apply a row-wise ``fn`` ((k, D) -> (k,)) block by block to keep temporaries small."""
    out = np.empty(X.shape[0], dtype=np.float64)
    with _one_blas_thread():
        for start in range(0, X.shape[0], _CHUNK):
            out[start : start + _CHUNK] = fn(X[start : start + _CHUNK])
    return out


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while f* is evaluated.

    The products here are skinny ((k, D) @ (D, J), J ~ 10): extra BLAS threads only add
    synchronisation, and on a loaded machine (parallel Snakemake jobs) two OpenBLAS
    threads made n = 10^6 generation 5x slower (0.34 s -> 1.7 s for f*). threadpoolctl
    ships with scikit-learn; without it this is a no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _standardised(fn: Callable, X_mc: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` shifted and scaled to mean 0, std 1 on Monte Carlo inputs ``X_mc`` (k, D).

    Gives every task a unit-scale f* in every dimension, so ``noise`` and ``jump``
    are in units of the signal's standard deviation.
    """
    vals = fn(X_mc)
    mean, std = float(vals.mean()), float(vals.std())
    std = std if std > 0 else 1.0
    return lambda X: (fn(X) - mean) / std


class _Bumps:
    """Sum of truncated power bumps ``sum_j a_j (1 - |x - c_j|^2 / r^2)_+^s``.

    Each bump is C-infinity except on its sphere |x - c_j| = r, where it has Hölder
    smoothness exactly s (for non-integer s): the sum is an s-Hölder function, so s
    is the smoothness knob of the function class.
    centers: (J, D); amps: (J,); radius r > 0; order s > 0.
    """

    def __init__(self, centers: np.ndarray, amps: np.ndarray, radius: float, order: float):
        self.centers, self.amps = centers, amps
        self.radius2, self.order = radius * radius, order
        self.c2 = np.einsum("jd,jd->j", centers, centers)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """X: (k, D) -> (k,)."""
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2 without materialising (k, J, D).
        d2 = np.einsum("kd,kd->k", X, X)[:, None] - 2.0 * (X @ self.centers.T) + self.c2
        t = np.clip(1.0 - d2 / self.radius2, 0.0, None)
        return np.power(t, self.order) @ self.amps


def _random_bumps(
    rng: np.random.Generator, centers: np.ndarray, width: float, order: float
) -> _Bumps:
    """Bumps at ``centers`` (J, D), radius ``width * sqrt(D)``, N(0, 1) amplitudes.

    The radius grows with sqrt(D) because distances in [0,1]^D do: a fixed radius
    would leave most of a 10-D cube outside every bump.
    """
    D = centers.shape[1]
    amps = rng.standard_normal(centers.shape[0])
    return _Bumps(centers, amps, width * math.sqrt(D), order)


class _CosFeatures:
    """Smooth random function ``sum_j a_j cos(<w_j, z> + b_j)``, w_j ~ N(0, freq^2 I).

    z: (k, q) -> (k,). C-infinity; ``freq`` sets how fast it oscillates.
    """

    def __init__(self, rng: np.random.Generator, q: int, features: int, freq: float):
        self.W = rng.standard_normal((q, features)) * freq
        self.b = rng.uniform(0.0, 2.0 * math.pi, features)
        self.a = rng.standard_normal(features) / math.sqrt(features)

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        return np.cos(Z @ self.W + self.b) @ self.a


def _orthonormal(rng: np.random.Generator, D: int, q: int) -> np.ndarray:
    """(D, q) matrix with orthonormal columns: a random isometric embedding R^q -> R^D."""
    Q, R = np.linalg.qr(rng.standard_normal((D, q)))
    return Q * np.sign(np.diag(R))  # sign fix makes the draw a pure function of the stream


def _oblique_frame(rng: np.random.Generator, D: int) -> tuple[np.ndarray, np.ndarray]:
    """A unit normal v (D,) with no small component, and an orthonormal basis P (D, D-1) of v⊥.

    Every |v_i| >= 1/(2 sqrt(D)) so that no boundary is an axis-aligned cut.
    """
    v = rng.choice([-1.0, 1.0], size=D) * rng.uniform(0.5, 1.0, size=D)
    v /= np.linalg.norm(v)
    # QR of [v | random] gives v's orthogonal complement as the trailing columns.
    q, _ = np.linalg.qr(np.column_stack([v, rng.standard_normal((D, D - 1))]))
    return v, q[:, 1:]


@dataclass(frozen=True)
class _Truth:
    """A synthetic task's noise-free function and input law.

    D: input dimension; f: (k, D) -> (k,), or None when f* is only known on the
    sample (random manifold embedding); draw(rng, n) -> (X (n, D), f (n,));
    box: (lo, hi) of the square on which a 2-D f* is drawn, None when a grid over the
    plane is meaningless; piece: (k, D) -> (k,) piece labels (nonsmooth only).
    """

    D: int
    f: Callable[[np.ndarray], np.ndarray] | None
    draw: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    box: tuple[float, float] | None = None
    piece: Callable[[np.ndarray], np.ndarray] | None = None


def _explicit(D: int, f: Callable, sample: Callable, box, piece=None) -> _Truth:
    """A _Truth whose f* is an explicit function of x; sample(rng, n) -> X (n, D)."""

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        X = sample(rng, n)
        return X, _chunked(f, X)

    return _Truth(D, f, draw, box if D == 2 else None, piece)


def _uniform_cube(D: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.random((n, D))


def _gaussian(D: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.standard_normal((n, D))


def _at_least(where: str, p: dict, key: str, need: int, why: str) -> None:
    if p[key] < need:
        raise MotifpipeError(f"{where}: params.{key}={p[key]} must be >= {need} ({why})")


# --------------------------------------------------------------------------- smooth


_SMOOTH = {
    "D": _Param(2, "int", lo=1),
    "beta": _Param(2.0, "num", lo=0, lo_open=True),
    "bumps": _Param(8, "int", lo=1),
    "width": _Param(0.4, "num", lo=0, lo_open=True),
    "function_seed": _FUNCTION_SEED,
}


def _smooth(p: dict) -> _Truth:
    """beta-Hölder f* on [0,1]^D: a standardised sum of truncated power bumps of order beta."""
    rng, D = _function_rng(p), p["D"]
    bumps = _random_bumps(rng, rng.random((p["bumps"], D)), p["width"], p["beta"])
    f = _standardised(bumps, rng.random((_MC, D)))
    return _explicit(D, f, _uniform_cube(D), (0.0, 1.0))


# --------------------------------------------------------------------------- nonsmooth

_NONSMOOTH = {
    "D": _Param(2, "int", lo=2),
    "pieces": _Param(3, "int", lo=2, hi=64),
    "jump": _Param(1.0, "num", lo=0),
    "beta": _Param(2.0, "num", lo=0, lo_open=True),
    "alpha": _Param(2.0, "num", lo=0, lo_open=True),
    "bumps": _Param(8, "int", lo=1),
    "width": _Param(0.4, "num", lo=0, lo_open=True),
    "curvature": _Param(0.15, "num", lo=0),
    "function_seed": _FUNCTION_SEED,
}


def _nonsmooth(p: dict) -> _Truth:
    """Piecewise beta-smooth f* on [0,1]^D with alpha-smooth curved boundaries.

    g(x) = <v, x> - curvature * h(P^T x), with h a standardised alpha-Hölder bump sum
    on the (D-1)-dim complement of an oblique normal v: each boundary {g = t_k} is the
    graph of an alpha-smooth function over v⊥ (a "horizon" boundary, the class of the
    n^{-alpha/(alpha+D-1)} rate). f*(x) = s(x) + jump * c_{piece(x)}, s a standardised
    beta-Hölder bump sum, c_k alternating -1/2, +1/2: every boundary jump is ``jump``.
    """
    rng, D, K = _function_rng(p), p["D"], p["pieces"]
    s = _random_bumps(rng, rng.random((p["bumps"], D)), p["width"], p["beta"])
    v, P = _oblique_frame(rng, D)
    hb = _random_bumps(rng, rng.random((p["bumps"], D)) @ P, p["width"], p["alpha"])
    h = _standardised(hb, rng.random((_MC, D)) @ P)
    curv = p["curvature"]

    def g(X: np.ndarray) -> np.ndarray:
        return X @ v - curv * h(X @ P)

    # Boundaries at quantiles of g under the uniform input law: pieces of equal mass.
    thresholds = np.quantile(g(rng.random((_MC, D))), np.arange(1, K) / K)
    smooth = _standardised(s, rng.random((_MC, D)))
    offsets = p["jump"] * (np.arange(K) % 2 - 0.5)

    def piece(X: np.ndarray) -> np.ndarray:
        return np.searchsorted(thresholds, g(X))

    def f(X: np.ndarray) -> np.ndarray:
        return smooth(X) + offsets[piece(X)]

    return _explicit(D, f, _uniform_cube(D), (0.0, 1.0), piece)


# --------------------------------------------------------------------------- manifold

_MANIFOLD = {
    "kind": _Param("sphere", "choice", choices=("sphere", "torus", "embedding")),
    "d": _Param(2, "int", lo=1),
    "D": _Param(10, "int", lo=1),
    "features": _Param(16, "int", lo=1),
    "frequency": _Param(1.0, "num", lo=0, lo_open=True),
    "function_seed": _FUNCTION_SEED,
}


def _manifold_cross(where: str, p: dict) -> None:
    """d <= D, and the ambient room each kind needs for its embedding."""
    if p["d"] > p["D"]:
        raise MotifpipeError(
            f"{where}: params.d={p['d']} > params.D={p['D']}: the manifold dimension "
            "cannot exceed the ambient dimension"
        )
    need = {"sphere": p["d"] + 1, "torus": 2 * p["d"], "embedding": p["d"]}[p["kind"]]
    _at_least(where, p, "D", need, f"a {p['d']}-dim {p['kind']} lives in R^{need}")


def _manifold(p: dict) -> _Truth:
    """Points on a d-dim manifold isometrically or smoothly placed in R^D; f* smooth on it.

    sphere: z uniform on S^d in R^{d+1}; torus: angles uniform, z = (cos, sin) pairs in
    R^{2d} (flat torus); both placed by a random isometry Q (D, q), x = Q z, so f*(x) =
    phi(Q^T x) is defined off the manifold too. embedding: u uniform in [0,1]^d,
    x = A u + sin(W u + b)/2, a random smooth map, generically an embedding for
    D >= 2d+1 (Whitney); f* = phi(u) is then known on the sample only.
    phi: a standardised random cosine sum of the intrinsic coordinates (C-infinity).
    """
    rng, d, D, kind = _function_rng(p), p["d"], p["D"], p["kind"]
    intrinsic = {"sphere": _sphere, "torus": _torus, "embedding": _unit_cube_coords}[kind](d)
    q = {"sphere": d + 1, "torus": 2 * d, "embedding": d}[kind]  # coordinates of z
    phi = _CosFeatures(rng, q, p["features"], p["frequency"])
    phi = _standardised(phi, intrinsic(rng, _MC))
    if kind == "embedding":
        A = rng.standard_normal((d, D)) / math.sqrt(d)
        W, b = rng.standard_normal((d, D)) * math.pi, rng.uniform(0, 2 * math.pi, D)

        def draw(rng_x: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
            U = intrinsic(rng_x, n)
            return U @ A + 0.5 * np.sin(U @ W + b), _chunked(phi, U)

        return _Truth(D, None, draw)
    Q = _orthonormal(rng, D, q)
    return _explicit(D, lambda X: phi(X @ Q), lambda r, n: intrinsic(r, n) @ Q.T, None)


def _sphere(d: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        Z = rng.standard_normal((n, d + 1))
        return Z / np.linalg.norm(Z, axis=1, keepdims=True)

    return sample


def _torus(d: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        theta = rng.uniform(0.0, 2.0 * math.pi, (n, d))
        # interleave (cos t1, sin t1, cos t2, ...): (n, 2d); radius 1/sqrt(2) keeps |z| = sqrt(d/2)
        return np.stack([np.cos(theta), np.sin(theta)], axis=2).reshape(n, 2 * d) / math.sqrt(2)

    return sample


def _unit_cube_coords(d: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.random((n, d))


# --------------------------------------------------------------------------- invariant

_INVARIANT = {
    "m": _Param(4, "int", lo=1),
    "k": _Param(2, "int", lo=1),
    "rotations": _Param(1, "int", lo=1, hi=360),
    "features": _Param(16, "int", lo=1),
    "hidden": _Param(16, "int", lo=1),
    "frequency": _Param(1.0, "num", lo=0, lo_open=True),
    "function_seed": _FUNCTION_SEED,
}


def _invariant_cross(where: str, p: dict) -> None:
    if p["rotations"] > 1:
        _at_least(where, p, "k", 2, "rotations act on the first two coordinates of each point")


def _invariant(p: dict) -> _Truth:
    """Sets of m points in R^k, X (n, m*k) point-major; f* invariant under permutations.

    Deep-Sets form f(S) = a . tanh(B mean_i phi(x_i)), phi random cosine features: the
    mean makes f permutation invariant, the tanh makes it more than a sum over points.
    With rotations = r > 1, f is averaged over the cyclic group C_r acting jointly on
    coordinates (0, 1) of every point, so it is also invariant under that group.
    """
    rng, m, k, r = _function_rng(p), p["m"], p["k"], p["rotations"]
    J, H = p["features"], p["hidden"]
    W, b = rng.standard_normal((k, J)) * p["frequency"], rng.uniform(0, 2 * math.pi, J)
    B, a = rng.standard_normal((J, H)) * 2.0, rng.standard_normal(H) / math.sqrt(H)

    def raw(X: np.ndarray) -> np.ndarray:
        pooled = np.cos(X.reshape(-1, m, k) @ W + b).mean(axis=1)  # (n, J)
        return np.tanh(pooled @ B) @ a

    def symmetrised(X: np.ndarray) -> np.ndarray:
        return sum(raw(_rotate(X, m, k, 2 * math.pi * i / r)) for i in range(r)) / r

    f = _standardised(symmetrised, rng.standard_normal((_MC, m * k)))
    return _explicit(m * k, f, _gaussian(m * k), _GAUSS_BOX)


def _rotate(X: np.ndarray, m: int, k: int, angle: float) -> np.ndarray:
    """Rotate coordinates (0, 1) of each of the m points of every row of X (n, m*k)."""
    if angle == 0.0:
        return X
    P = X.reshape(-1, m, k).copy()
    c, s = math.cos(angle), math.sin(angle)
    P[..., 0], P[..., 1] = c * P[..., 0] - s * P[..., 1], s * P[..., 0] + c * P[..., 1]
    return P.reshape(X.shape)


# --------------------------------------------------------------------------- teacher

_TEACHER = {
    "D": _Param(10, "int", lo=1),
    "width": _Param(64, "int", lo=1),
    "depth": _Param(2, "int", lo=1, hi=32),
    "function_seed": _FUNCTION_SEED,
}


def _teacher(p: dict) -> _Truth:
    """Random ReLU network R^D -> R (depth hidden layers of width units), N(0, I) inputs.

    He-initialised weights and N(0, 0.1^2) biases keep every layer active; the output
    is standardised to unit std. Known architecture, so width sweeps can match it.
    """
    rng, D, w = _function_rng(p), p["D"], p["width"]
    dims = [D] + [w] * p["depth"]
    layers = [
        (rng.standard_normal((i, o)) * math.sqrt(2.0 / i), rng.standard_normal(o) * 0.1)
        for i, o in zip(dims[:-1], dims[1:], strict=True)
    ]
    head = rng.standard_normal(w) / math.sqrt(w)

    def net(X: np.ndarray) -> np.ndarray:
        for W, b in layers:
            X = np.maximum(X @ W + b, 0.0)
        return X @ head

    f = _standardised(net, rng.standard_normal((_MC, D)))
    return _explicit(D, f, _gaussian(D), _GAUSS_BOX)


# --------------------------------------------------------------------------- double descent

_DOUBLE_DESCENT = {
    "D": _Param(8, "int", lo=1),
    "components": _Param(1, "int", lo=1),
    "frequency": _Param(1.0, "num", lo=0, lo_open=True),
    "function_seed": _FUNCTION_SEED,
}


def _double_descent(p: dict) -> _Truth:
    """Gaussian inputs in R^D (D = 8), sinusoidal teacher sum_j a_j sin(<w_j, x>).

    w_j ~ N(0, frequency^2 I / D), so <w_j, x> ~ N(0, frequency^2); a_j scaled so that
    f* has unit variance: the classic random-feature double-descent set-up.
    """
    rng, D, J = _function_rng(p), p["D"], p["components"]
    W = rng.standard_normal((D, J)) * p["frequency"] / math.sqrt(D)
    a = rng.standard_normal(J)

    def f(X: np.ndarray) -> np.ndarray:
        return np.sin(X @ W) @ a

    return _explicit(D, _standardised(f, rng.standard_normal((_MC, D))), _gaussian(D), _GAUSS_BOX)


# --------------------------------------------------------------------------- real data

_TABLE = {
    "path": _Param(None, "str", required=True),
    "target": _Param(None, "str", required=True),
    "features": _Param(None, "strs"),
    "standardize": _Param(True, "bool"),
    "standardize_target": _Param(True, "bool"),
}
_DIABETES = {"standardize": _Param(True, "bool"), "standardize_target": _Param(True, "bool")}
_DIABETES_ROWS = 442


def _table_frame(where: str, p: dict):
    """(DataFrame, provenance dict) of a user's CSV or Parquet file, read once."""
    import io

    import pandas as pd

    path = Path(p["path"])
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise MotifpipeError(f"{where}: {path}: unknown table format; use .csv or .parquet")
    try:
        raw = path.read_bytes()
        frame = reader(io.BytesIO(raw))
    except Exception as exc:  # pandas/pyarrow raise many types for one cause: unreadable file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MotifpipeError(f"{where}: cannot read table file {path}: {reason}") from None
    # The hash ties a dataset to the exact file content, which the path alone does not.
    return frame, {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest()}


def _diabetes_frame(where: str, p: dict):
    """scikit-learn's bundled diabetes table (442 rows, 10 features): no network access."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(scaled=False, as_frame=True).frame
    return frame, {"source": "sklearn.datasets.load_diabetes(scaled=False)"}


def _numeric_matrix(where: str, frame, columns: list[str], label: str) -> np.ndarray:
    """(rows, len(columns)) float64; one-line errors for missing, non-numeric, NaN/inf columns.

    ``columns`` ends with the target, so the message can say which one is the target.
    """
    import pandas as pd

    target = columns[-1]
    for col in columns:
        role = "target column" if col == target else "column"
        if col not in frame.columns:
            raise MotifpipeError(f"{where}: {label} has no {role} {col!r}")
        if not pd.api.types.is_numeric_dtype(frame[col]):
            hint = "" if col == target else "; encode it or leave it out of params.features"
            raise MotifpipeError(
                f"{where}: {label}: {role} {col!r} is not numeric (dtype {frame[col].dtype}){hint}"
            )
    M = frame[columns].to_numpy(dtype=np.float64)
    bad = (~np.isfinite(M)).sum(axis=0)
    if bad.any():
        cols = [
            f"{c!r} ({k} row{'s' if k > 1 else ''})" for c, k in zip(columns, bad, strict=True) if k
        ]
        raise MotifpipeError(
            f"{where}: {label}: NaN or infinite values in column {', column '.join(cols)}"
        )
    return M


def _real(loader: Callable) -> Callable:
    """Draw function of a real-data generator: rows sampled by seed, standardised on train."""

    def draw(where, p, n, split, rng):
        frame, prov = loader(where, p)
        label = prov.get("path", "the diabetes table")
        target = p.get("target", "target")
        features = p.get("features") or [c for c in frame.columns if c != target]
        if target in features:
            raise MotifpipeError(f"{where}: params.features includes the target {target!r}")
        M = _numeric_matrix(where, frame, [*features, target], label)
        if n > len(M):
            raise MotifpipeError(f"{where}: n={n} exceeds the {len(M)} rows of {label}")
        # A seeded subsample lets a study sweep n on one file; file order is kept.
        take = np.sort(rng.choice(len(M), n, replace=False)) if n < len(M) else slice(None)
        M = M[take]
        X, y = M[:, :-1], M[:, -1]
        extra = {"columns": {"features": features, "target": target}, "rows_in_source": len(frame)}
        if p["standardize"]:
            X, extra["standardize"] = _standardise_train(X, split)
        if p["standardize_target"]:
            y, stats = _standardise_train(y[:, None], split)
            y, extra["standardize_target"] = y[:, 0], {k: v[0] for k, v in stats.items()}
        return np.ascontiguousarray(X), y, {**extra, "provenance": prov}

    return draw


def _standardise_train(X: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, dict]:
    """Centre and scale X (n, D) with training-split statistics only (no leakage).

    A constant training column keeps scale 1 instead of dividing by zero.
    """
    train = X[split == SPLITS["train"]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (X - mean) / std, {"mean": mean.tolist(), "std": std.tolist()}


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Generator:
    """params: name -> _Param; build: params -> _Truth (synthetic tasks); real: draw
    function (where, params, n, split, rng) -> (X, y, extra meta) for real data;
    cross: checks across params; n_default / noise_default fill a task's n / noise."""

    params: dict
    build: Callable[[dict], _Truth] | None = None
    real: Callable | None = None
    cross: Callable[[str, dict], None] | None = None
    n_default: int | None = None
    noise_default: float = 0.1


GENERATORS: dict[str, _Generator] = {
    "smooth": _Generator(_SMOOTH, _smooth),
    "nonsmooth": _Generator(_NONSMOOTH, _nonsmooth),
    "manifold": _Generator(_MANIFOLD, _manifold, cross=_manifold_cross),
    "invariant": _Generator(_INVARIANT, _invariant, cross=_invariant_cross),
    "teacher": _Generator(_TEACHER, _teacher),
    "double_descent": _Generator(_DOUBLE_DESCENT, _double_descent, n_default=1024),
    "table": _Generator(_TABLE, real=_real(_table_frame), noise_default=0.0),
    "diabetes": _Generator(
        _DIABETES, real=_real(_diabetes_frame), n_default=_DIABETES_ROWS, noise_default=0.0
    ),
}
_TASK_KEYS = ("generator", "n", "noise", "params")


# --------------------------------------------------------------------------- check_task


def check_task(name: str, task: dict) -> dict:
    """Validate one task and return a new dict with every default filled.

    Pure (no I/O: a table's file is read by :func:`generate`). Raises a one-line
    MotifpipeError naming the task and the key. Idempotent.
    """
    where = f"task {name!r}"
    if not isinstance(task, dict):
        raise MotifpipeError(f"{where}: must be a mapping, got {type(task).__name__}")
    extra = sorted(set(task) - set(_TASK_KEYS))
    if extra:
        raise MotifpipeError(f"{where}: unknown key {extra[0]!r}; allowed: {list(_TASK_KEYS)}")
    gen_name = task.get("generator")
    if gen_name not in GENERATORS:
        raise MotifpipeError(
            f"{where}: unknown generator {gen_name!r}; expected one of {sorted(GENERATORS)}"
        )
    gen = GENERATORS[gen_name]
    return {
        "generator": gen_name,
        "n": _check_n(where, task.get("n", gen.n_default)),
        "noise": _check_noise(where, task.get("noise", gen.noise_default)),
        "params": _check_params(where, gen, task.get("params") or {}),
    }


def _check_n(where: str, n: object) -> int | list[int]:
    if n is None:
        raise MotifpipeError(f"{where}: n is required (total sample size)")
    values = n if isinstance(n, list) else [n]
    if not values:
        raise MotifpipeError(f"{where}: n must not be an empty list")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise MotifpipeError(f"{where}: n must be a positive integer (or a list), got {v!r}")
    return list(values) if isinstance(n, list) else int(n)


def _check_noise(where: str, noise: object) -> float:
    if not _is_number(noise) or not math.isfinite(noise) or noise < 0:
        raise MotifpipeError(f"{where}: noise must be a number >= 0, got {noise!r}")
    return float(noise)


def _check_params(where: str, gen: _Generator, params: object) -> dict:
    if not isinstance(params, dict):
        raise MotifpipeError(f"{where}: params must be a mapping, got {type(params).__name__}")
    extra = sorted(set(params) - set(gen.params))
    if extra:
        raise MotifpipeError(f"{where}: unknown params.{extra[0]}; allowed: {sorted(gen.params)}")
    out = {}
    for key, spec in gen.params.items():
        value = params.get(key)
        if value is None and spec.required:
            raise MotifpipeError(f"{where}: params.{key} is required")
        out[key] = (
            copy.deepcopy(spec.default) if value is None else _check_param(where, key, spec, value)
        )
    if gen.cross is not None:
        gen.cross(where, out)
    return out


def select_task(tasks: dict, name: str) -> dict:
    """The checked task ``name`` of a config's ``tasks`` mapping; one-line error if absent."""
    if name not in tasks:
        raise MotifpipeError(f"unknown task {name!r}; the config defines {sorted(tasks)}")
    return check_task(name, tasks[name])


def _checked(task: object) -> dict:
    label = task.get("generator", "?") if isinstance(task, dict) else "?"
    return check_task(label, task)


# --------------------------------------------------------------------------- generate


def truth(task: dict) -> Callable[[np.ndarray], np.ndarray] | None:
    """f* of a synthetic task as a function X (k, D) -> (k,); None when not explicit."""
    task = _checked(task)
    build = GENERATORS[task["generator"]].build
    fn = build(task["params"]).f if build is not None else None
    if fn is None:
        return None
    return lambda X: _chunked(fn, np.asarray(X, dtype=np.float64))


def generate(task: dict, n: int, seed: int, val: float, test: float) -> Dataset:
    """Draw ``n`` samples of ``task`` for sample ``seed``, split val/test/rest by seed.

    Returns a Dataset: X (n, D), y = f*(X) + noise * N(0, 1) (n,), f (n,) or None,
    split (n,) int8. Raises MotifpipeError (one line) on bad input, before any output.
    """
    task = _checked(task)
    where = f"{task['generator']} task"
    counts = _split_counts(where, n, val, test)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise MotifpipeError(f"{where}: seed must be an integer >= 0, got {seed!r}")
    rng_x, rng_noise, rng_split = _sample_rngs(seed)
    split = _assign_split(rng_split, n, counts)  # first: real data standardises on train
    gen = GENERATORS[task["generator"]]
    if gen.build is not None:
        X, f = gen.build(task["params"]).draw(rng_x, n)
        signal, extra = f, {}
    else:
        X, signal, extra = gen.real(where, task["params"], n, split, rng_x)
        f = None
    y = rng_noise.standard_normal(n)
    y *= task["noise"]  # in place: no extra (n,) temporaries at n = 10^6
    y += signal
    meta = _meta(task, n, seed, val, test, counts, X.shape[1], extra)
    return Dataset(X, y, f, split, meta)


def _split_counts(where: str, n: object, val: object, test: object) -> dict[str, int]:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise MotifpipeError(f"{where}: n must be a positive integer, got {n!r}")
    for key, frac in (("val", val), ("test", test)):
        if not _is_number(frac) or not 0 < frac < 1:
            raise MotifpipeError(f"{where}: split.{key} must be in (0, 1), got {frac!r}")
    # Round half up explicitly: Python's round() is banker's rounding.
    n_val, n_test = math.floor(val * n + 0.5), math.floor(test * n + 0.5)
    counts = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    if min(counts.values()) < 1:
        raise MotifpipeError(
            f"{where}: too few rows for the splits: n={n} with val={val}, test={test} gives "
            f"{counts['train']} train / {n_val} val / {n_test} test rows; each needs >= 1"
        )
    return counts


def _assign_split(rng: np.random.Generator, n: int, counts: dict[str, int]) -> np.ndarray:
    """(n,) int8 labels: a seeded shuffle puts counts['val'] rows in 1, counts['test'] in 2."""
    perm = rng.permutation(n)
    split = np.zeros(n, dtype=np.int8)
    split[perm[: counts["val"]]] = SPLITS["val"]
    split[perm[counts["val"] : counts["val"] + counts["test"]]] = SPLITS["test"]
    return split


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("motifpipe")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _meta(task, n, seed, val, test, counts, D, extra) -> dict:
    return {
        "format": FORMAT,
        "generator": task["generator"],
        "params": task["params"],
        "noise": task["noise"],
        "seed": seed,
        "n": n,
        "D": D,
        "split": {"val": val, "test": test, "counts": counts},
        "motifpipe_version": _version(),
        **extra,
    }


# --------------------------------------------------------------------------- files


def save_dataset(ds: Dataset, path: str | os.PathLike) -> None:
    """Write ``ds`` as one safetensors file (X, y, split, and f when known) + JSON meta.

    Atomic (temp file + rename) and byte-deterministic: see motifpipe.io.save_arrays.
    """
    arrays = {"X": ds.X, "y": ds.y, "split": ds.split}
    if ds.f is not None:
        arrays["f"] = ds.f
    save_arrays(path, arrays, ds.meta)


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read a file written by :func:`save_dataset`; one-line error if it is not one."""
    arrays, meta = load_arrays(path)
    missing = [k for k in ("X", "y", "split") if k not in arrays]
    if missing or meta.get("format") != FORMAT:
        why = f"missing array {missing[0]!r}" if missing else "no motifpipe dataset metadata"
        raise MotifpipeError(f"{path} is not a motifpipe dataset ({why})")
    X, y, split = arrays["X"], arrays["y"], arrays["split"]
    if X.ndim != 2 or y.shape != (X.shape[0],) or split.shape != y.shape:
        shapes = f"X{X.shape}, y{y.shape}, split{split.shape}"
        raise MotifpipeError(f"{path}: inconsistent array shapes {shapes}")
    return Dataset(X, y, arrays.get("f"), split, meta)


# --------------------------------------------------------------------------- truth grid


def truth_grid(
    task: dict, seed: int, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """f* on a regular ``resolution`` x ``resolution`` grid over a 2-D task's input domain.

    Returns (xx, yy, F), each (resolution, resolution), ``np.meshgrid`` 'xy' layout:
    F[i, j] = f*(xx[i, j], yy[i, j]); the square is [0,1]^2 for cube tasks and
    [-3, 3]^2 for Gaussian inputs. None for real data, non-2-D tasks and manifolds.
    ``seed`` is accepted for symmetry with :func:`generate`: f* depends only on
    params.function_seed, never on the sample seed.
    """
    del seed  # f* is fixed by params.function_seed, see the module docstring
    task = _checked(task)
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 2:
        raise MotifpipeError(f"truth_grid: resolution must be an integer >= 2, got {resolution!r}")
    build = GENERATORS[task["generator"]].build
    t = build(task["params"]) if build is not None else None
    if t is None or t.box is None or t.f is None:
        return None
    axis = np.linspace(t.box[0], t.box[1], resolution)
    xx, yy = np.meshgrid(axis, axis)
    F = _chunked(t.f, np.column_stack([xx.ravel(), yy.ravel()])).reshape(xx.shape)
    return xx, yy, F


_GRID_GENERATORS = ("smooth", "nonsmooth", "teacher", "double_descent", "invariant")


def has_grid(task: dict) -> bool:
    """Whether :func:`truth_grid` can draw ``task``: a synthetic f* of a 2-D input.

    Decided from the parameters alone (no f* is built), so the workflow can call it
    while it builds the DAG.
    """
    task = _checked(task)
    if task["generator"] not in _GRID_GENERATORS:
        return False
    p = task["params"]
    dim = p["m"] * p["k"] if task["generator"] == "invariant" else p["D"]
    return dim == 2
