"""motifpipe.data: every generator has the property it claims, and bad input fails cleanly."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

try:  # the package may not be installed in the venv (src layout)
    data = importlib.import_module("motifpipe.data")
except ModuleNotFoundError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    data = importlib.import_module("motifpipe.data")
MotifpipeError = importlib.import_module("motifpipe.errors").MotifpipeError

SYNTHETIC = {
    "smooth": {},
    "nonsmooth": {},
    "manifold": {},
    "invariant": {},
    "teacher": {},
    "double_descent": {},
}


def task(generator: str, n: int = 500, noise: float = 0.1, **params) -> dict:
    return {"generator": generator, "n": n, "noise": noise, "params": params}


def truth_obj(t: dict):
    """The internal _Truth of a synthetic task (gives access to nonsmooth piece labels)."""
    t = data.check_task("t", t)
    return data.GENERATORS[t["generator"]].build(t["params"])


@pytest.fixture
def csv_file(tmp_path):
    """A small numeric CSV: 60 rows, features a, b, c and target y."""
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (60, 3))
    y = X @ [1.0, -2.0, 0.5]
    path = tmp_path / "table.csv"
    lines = ["a,b,c,y"] + [
        ",".join(f"{v:.6f}" for v in (*row, t)) for row, t in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- common contract


@pytest.mark.parametrize("generator", sorted(SYNTHETIC))
def test_synthetic_shapes_split_and_scale(generator):
    ds = data.generate(task(generator), 500, seed=0, val=0.2, test=0.2)
    assert ds.X.ndim == 2 and ds.X.shape[0] == 500 and ds.X.dtype == np.float64
    assert ds.y.shape == ds.f.shape == (500,) and np.isfinite(ds.y).all()
    assert ds.split.dtype == np.int8 and np.bincount(ds.split).tolist() == [300, 100, 100]
    assert 0.5 < ds.f.std() < 1.5  # f* standardised to unit scale
    X, y, f = ds.part("val")
    assert X.shape == (100, ds.D) and y.shape == f.shape == (100,)
    assert ds.meta["generator"] == generator and ds.meta["seed"] == 0


@pytest.mark.parametrize("generator", [*sorted(SYNTHETIC), "table", "diabetes"])
def test_same_seed_same_bytes_different_seed_differs(generator, tmp_path, csv_file):
    t = task("table", path=str(csv_file), target="y") if generator == "table" else task(generator)
    n = 50 if generator == "table" else 300
    blobs = []
    for i, seed in enumerate([3, 3, 4]):
        path = tmp_path / f"{i}.safetensors"
        data.save_dataset(data.generate(t, n, seed, 0.2, 0.2), path)
        blobs.append(path.read_bytes())
    assert blobs[0] == blobs[1]
    assert blobs[0] != blobs[2]


def test_roundtrip(tmp_path):
    ds = data.generate(task("nonsmooth"), 200, 1, 0.2, 0.2)
    data.save_dataset(ds, tmp_path / "d.safetensors")
    back = data.load_dataset(tmp_path / "d.safetensors")
    for k in ("X", "y", "f", "split"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ds, k))
    assert back.meta == ds.meta


@pytest.mark.parametrize("generator", ["nonsmooth", "manifold", "invariant", "teacher"])
def test_function_seed_fixes_f_across_sample_seeds(generator):
    """Sample seeds draw new inputs from the SAME f*; function_seed changes f*."""
    t = task(generator)
    a, b = data.generate(t, 300, 0, 0.2, 0.2), data.generate(t, 300, 1, 0.2, 0.2)
    assert not np.array_equal(a.X, b.X)
    f = data.truth(t)
    np.testing.assert_allclose(f(a.X), a.f, atol=1e-12)
    np.testing.assert_allclose(f(b.X), b.f, atol=1e-12)
    other = data.truth(task(generator, function_seed=1))
    assert np.abs(other(a.X) - a.f).max() > 0.1


@pytest.mark.parametrize("sigma", [0.05, 0.5])
def test_noise_variance_matches_sigma(sigma):
    n = 20_000
    ds = data.generate(task("nonsmooth", noise=sigma), n, 7, 0.2, 0.2)
    resid = ds.y - ds.f
    # The sample variance of n Gaussians has relative standard error sqrt(2/(n-1)).
    assert abs(resid.var(ddof=1) / sigma**2 - 1) < 5 * np.sqrt(2 / (n - 1))
    assert abs(resid.mean()) < 5 * sigma / np.sqrt(n)


def test_noise_only_changes_y():
    quiet = data.generate(task("nonsmooth", noise=0.0), 300, 2, 0.2, 0.2)
    loud = data.generate(task("nonsmooth", noise=1.0), 300, 2, 0.2, 0.2)
    np.testing.assert_array_equal(quiet.y, quiet.f)
    np.testing.assert_array_equal(quiet.X, loud.X)
    np.testing.assert_array_equal(quiet.split, loud.split)


# --------------------------------------------------------------------------- nonsmooth


def _boundary_pairs(t, rng, pairs: int, D: int, iters: int = 45):
    """Points (lo, hi) within ~1e-13 of each other on either side of a boundary."""
    a, b = rng.random((pairs, D)), rng.random((pairs, D))
    keep = t.piece(a) != t.piece(b)
    lo, hi = a[keep], b[keep]
    p_lo = t.piece(lo)
    for _ in range(iters):  # bisection keeps lo in lo's piece, hi outside it
        mid = 0.5 * (lo + hi)
        same = (t.piece(mid) == p_lo)[:, None]
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    return lo, hi


@pytest.mark.parametrize(("D", "pieces", "jump"), [(2, 3, 1.0), (2, 5, 2.5), (10, 4, 0.7)])
def test_nonsmooth_jump_has_configured_size(D, pieces, jump):
    t = truth_obj(task("nonsmooth", D=D, pieces=pieces, jump=jump))
    lo, hi = _boundary_pairs(t, np.random.default_rng(0), 400, D)
    assert len(lo) > 50
    assert set(np.unique(t.piece(hi) - t.piece(lo))) <= {-1, 1}  # adjacent pieces only
    np.testing.assert_allclose(np.abs(t.f(hi) - t.f(lo)), jump, atol=1e-6)
    assert set(np.unique(t.piece(np.random.default_rng(1).random((4000, D))))) == set(range(pieces))


def test_nonsmooth_is_smooth_inside_each_piece():
    """Finite differences: bounded slopes and converging derivatives away from boundaries."""
    t = truth_obj(task("nonsmooth", D=2))
    rng = np.random.default_rng(3)
    x = rng.uniform(0.05, 0.95, (4000, 2))
    u = rng.standard_normal((4000, 2))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    h = 1e-4
    pts = [x + i * h * u for i in range(3)]
    inside = (t.piece(pts[0]) == t.piece(pts[1])) & (t.piece(pts[1]) == t.piece(pts[2]))
    assert inside.mean() > 0.9
    f0, f1, f2 = (t.f(p[inside]) for p in pts)
    slope = np.abs(f1 - f0) / h
    assert slope.max() < 50  # Lipschitz inside a piece; a jump of 1 would give 1e4
    curvature = np.abs(f2 - 2 * f1 + f0) / h**2
    assert curvature.max() < 1e3  # beta = 2: bounded second differences
    # derivatives converge: forward differences at h and h/10 agree to O(h)
    f_small = t.f(pts[0][inside] + 0.1 * h * u[inside])
    np.testing.assert_allclose((f1 - f0) / h, (f_small - f0) / (0.1 * h), atol=0.05)


def test_nonsmooth_boundaries_are_curved_and_oblique():
    t = truth_obj(task("nonsmooth", D=2, pieces=2))
    lo, hi = _boundary_pairs(t, np.random.default_rng(0), 3000, 2)
    pts = 0.5 * (lo + hi)
    centred = pts - pts.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    assert sv[1] / sv[0] > 0.05  # not a straight line
    assert np.abs(vt[0]).min() > 0.2  # main direction is not an axis


# --------------------------------------------------------------------------- other generators


def _local_pca_dim(X: np.ndarray, k: int = 30, points: int = 60, var: float = 0.95) -> float:
    """Median over sample points of the number of local principal components for ``var``."""
    from scipy.spatial import cKDTree

    tree = cKDTree(X)
    idx = np.random.default_rng(0).choice(len(X), points, replace=False)
    dims = []
    for i in idx:
        _, nb = tree.query(X[i], k)
        s = np.linalg.svd(X[nb] - X[nb].mean(axis=0), compute_uv=False) ** 2
        dims.append(int(np.searchsorted(np.cumsum(s) / s.sum(), var) + 1))
    return float(np.median(dims))


@pytest.mark.parametrize(
    ("kind", "d", "D"), [("sphere", 2, 10), ("torus", 2, 8), ("embedding", 3, 12)]
)
def test_manifold_local_pca_dimension_is_intrinsic(kind, d, D):
    ds = data.generate(task("manifold", kind=kind, d=d, D=D), 4000, 0, 0.2, 0.2)
    assert ds.X.shape == (4000, D)
    assert _local_pca_dim(ds.X) == d
    assert np.linalg.matrix_rank(ds.X - ds.X.mean(axis=0), tol=1e-6) > d  # curved, not flat


def test_manifold_sphere_points_lie_on_unit_sphere():
    ds = data.generate(task("manifold", kind="sphere", d=3, D=6), 500, 0, 0.2, 0.2)
    np.testing.assert_allclose(np.linalg.norm(ds.X, axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize(("m", "k", "rotations"), [(4, 2, 1), (5, 3, 4)])
def test_invariant_target_unchanged_under_permutations(m, k, rotations):
    t = task("invariant", m=m, k=k, rotations=rotations)
    ds = data.generate(t, 400, 0, 0.2, 0.2)
    assert ds.X.shape == (400, m * k) and ds.meta["params"]["m"] == m
    f = data.truth(t)
    rng = np.random.default_rng(1)
    sets = ds.X.reshape(-1, m, k)
    for _ in range(3):
        perm = np.argsort(rng.random((400, m)), axis=1)  # one permutation per row
        shuffled = np.take_along_axis(sets, perm[:, :, None], axis=1).reshape(400, m * k)
        np.testing.assert_allclose(f(shuffled), ds.f, atol=1e-10)
    # ...but not trivially constant: moving one point changes the target
    moved = ds.X.copy()
    moved[:, :k] += 0.5
    assert np.abs(f(moved) - ds.f).max() > 0.1


def test_invariant_rotation_group():
    t = task("invariant", m=3, k=2, rotations=4)
    ds = data.generate(t, 300, 0, 0.2, 0.2)
    f = data.truth(t)
    quarter = ds.X.reshape(-1, 3, 2)[..., ::-1] * [-1.0, 1.0]  # (x, y) -> (-y, x)
    np.testing.assert_allclose(f(quarter.reshape(300, 6)), ds.f, atol=1e-10)
    plain = data.truth(task("invariant", m=3, k=2))
    assert np.abs(plain(quarter.reshape(300, 6)) - plain(ds.X)).max() > 0.1


def test_teacher_is_piecewise_linear():
    """A ReLU network: second differences along a line vanish except at a few kinks."""
    f = data.truth(task("teacher", D=5, width=16, depth=2))
    rng = np.random.default_rng(0)
    a, u = rng.standard_normal(5), rng.standard_normal(5)
    s = np.linspace(-1, 1, 2001)[:, None]
    vals = f(a + s * u)
    second = np.abs(np.diff(vals, 2))
    assert (second > 1e-9).mean() < 0.05
    assert second.max() > 1e-6  # it does bend somewhere


def test_double_descent_defaults():
    t = data.check_task("dd", {"generator": "double_descent"})
    assert t["n"] == 1024 and t["params"]["D"] == 8
    ds = data.generate(t, t["n"], 0, 0.2, 0.2)
    assert ds.X.shape == (1024, 8)
    assert abs(ds.X.std() - 1) < 0.05  # N(0, I) inputs


def test_smooth_is_lipschitz():
    f = data.truth(task("smooth", D=3))
    rng = np.random.default_rng(0)
    x, u = rng.random((3000, 3)), rng.standard_normal((3000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    assert (np.abs(f(x + 1e-5 * u) - f(x)) / 1e-5).max() < 50


# --------------------------------------------------------------------------- truth grid


@pytest.mark.parametrize(
    "t",
    [
        task("smooth"),
        task("nonsmooth"),
        task("teacher", D=2),
        task("double_descent", D=2),
        task("invariant", m=2, k=1),
    ],
    ids=lambda t: t["generator"],
)
def test_two_d_tasks_have_truth_grid(t):
    xx, yy, F = data.truth_grid(t, 0, 24)
    assert xx.shape == yy.shape == F.shape == (24, 24) and np.isfinite(F).all()
    f = data.truth(t)
    np.testing.assert_allclose(F[3, 5], f(np.array([[xx[3, 5], yy[3, 5]]]))[0])
    assert F.std() > 0.1


def test_truth_grid_none_when_not_2d_or_unknown():
    assert data.truth_grid(task("nonsmooth", D=3), 0, 8) is None
    assert data.truth_grid(task("manifold", kind="sphere", d=1, D=2), 0, 8) is None
    assert data.truth_grid({"generator": "diabetes"}, 0, 8) is None


def test_truth_grid_draws_a_heatmap(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xx, yy, F = data.truth_grid(task("nonsmooth"), 0, 64)
    fig, ax = plt.subplots()
    ax.pcolormesh(xx, yy, F, shading="auto")
    fig.savefig(tmp_path / "f.png")
    plt.close(fig)
    assert (tmp_path / "f.png").stat().st_size > 1000


# --------------------------------------------------------------------------- real data


def test_table_csv_standardised_with_training_statistics(csv_file):
    t = task("table", noise=0.0, path=str(csv_file), target="y", features=["a", "c"])
    ds = data.generate(t, 50, 0, 0.2, 0.2)
    assert ds.X.shape == (50, 2) and ds.f is None
    Xtr, ytr, _ = ds.part("train")
    np.testing.assert_allclose(Xtr.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Xtr.std(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose([ytr.mean(), ytr.std()], [0, 1], atol=1e-12)
    Xva, _, _ = ds.part("val")
    assert np.abs(Xva.mean(axis=0)).max() > 1e-6  # val rows did not enter the statistics
    assert ds.meta["columns"] == {"features": ["a", "c"], "target": "y"}
    assert ds.meta["rows_in_source"] == 60 and len(ds.meta["provenance"]["sha256"]) == 64


def test_table_parquet_matches_csv(csv_file, tmp_path):
    import pandas as pd

    pq = tmp_path / "table.parquet"
    pd.read_csv(csv_file).to_parquet(pq)
    a = data.generate(task("table", path=str(csv_file), target="y"), 60, 0, 0.2, 0.2)
    b = data.generate(task("table", path=str(pq), target="y"), 60, 0, 0.2, 0.2)
    np.testing.assert_allclose(a.X, b.X)
    np.testing.assert_allclose(a.y, b.y)


def test_diabetes():
    t = data.check_task("db", {"generator": "diabetes"})
    assert t["n"] == 442 and t["noise"] == 0.0
    ds = data.generate(t, 442, 0, 0.2, 0.2)
    assert ds.X.shape == (442, 10) and ds.f is None
    assert ds.meta["columns"]["features"][:3] == ["age", "sex", "bmi"]


# --------------------------------------------------------------------------- bad input


def _write_bad_tables(tmp_path: Path) -> dict:
    (tmp_path / "text.csv").write_text("a,city,y\n1,paris,2\n2,rome,3\n3,oslo,4\n")
    (tmp_path / "nan.csv").write_text("a,b,y\n1,,2\n2,inf,3\n3,4,\n4,5,6\n5,6,7\n")
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet")
    (tmp_path / "data.xlsx").write_text("x")
    names = ("text.csv", "nan.csv", "junk.parquet", "data.xlsx")
    return {k.split(".")[0]: str(tmp_path / k) for k in names}


BAD = [
    ({"generator": "nope", "n": 10}, 10, "unknown generator 'nope'"),
    ({"generator": "nonsmooth"}, 10, "n is required"),
    ({"generator": "nonsmooth", "n": 0}, 10, "n must be a positive integer"),
    (task("nonsmooth"), -5, "n must be a positive integer"),
    (task("nonsmooth", noise=-0.1), 10, "noise must be a number >= 0"),
    (task("manifold", d=5, D=3), 10, r"params.d=5 > params.D=3"),
    (task("manifold", kind="torus", d=3, D=5), 10, "params.D=5 must be >= 6"),
    (task("nonsmooth", D=1), 10, "params.D must be >= 2"),
    (task("nonsmooth", bogus=1), 10, "unknown params.bogus"),
    (task("nonsmooth", beta="high"), 10, "params.beta must be a number"),
    (task("invariant", k=1, rotations=3), 10, "params.k=1 must be >= 2"),
    (task("nonsmooth"), 2, "too few rows for the splits"),
    ({"generator": "table", "n": 5, "params": {"target": "y"}}, 5, "params.path is required"),
    (task("table", path="{missing}", target="y"), 5, "cannot read table file"),
    (task("table", path="{junk}", target="y"), 5, "cannot read table file"),
    (task("table", path="{data}", target="y"), 5, "unknown table format"),
    (task("table", path="{nan}", target="zz"), 5, "has no target column 'zz'"),
    (task("table", path="{text}", target="y"), 3, "column 'city' is not numeric"),
    (
        task("table", path="{nan}", target="y"),
        5,
        r"NaN or infinite values in column 'b' \(2 rows\), column 'y' \(1 row\)",
    ),
    (
        task("table", path="{nan}", target="y", features=["a"]),
        5,
        r"infinite values in column 'y' \(1 row\)$",
    ),
    (task("table", path="{nan}", target="y", features=["q"]), 5, "no column 'q'"),
    ({"generator": "diabetes"}, 500, "n=500 exceeds the 442 rows"),
]


@pytest.mark.parametrize(("t", "n", "message"), BAD, ids=[b[2][:30] for b in BAD])
def test_bad_input_one_line_and_nothing_written(t, n, message, tmp_path):
    files = _write_bad_tables(tmp_path)
    files["missing"] = str(tmp_path / "missing.csv")
    if "path" in t.get("params", {}):
        t = {**t, "params": {**t["params"], "path": t["params"]["path"].format(**files)}}
    out = tmp_path / "out" / "data.safetensors"
    with pytest.raises(MotifpipeError, match=message) as info:
        data.save_dataset(data.generate(t, n, 0, 0.2, 0.2), out)
    assert "\n" not in str(info.value)
    assert not out.parent.exists()


def test_unknown_task_name():
    with pytest.raises(MotifpipeError, match="unknown task 'b'"):
        data.select_task({"a": task("nonsmooth")}, "b")


def test_check_task_is_pure_and_idempotent():
    raw = task("nonsmooth", pieces=4)
    t = data.check_task("a", raw)
    assert raw["params"] == {"pieces": 4}  # input not mutated
    assert t["params"]["D"] == 2 and t["params"]["function_seed"] == 0
    assert data.check_task("a", t) == t


def test_load_dataset_rejects_other_files(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(MotifpipeError, match="cannot read"):
        data.load_dataset(tmp_path / "x.safetensors")
    with pytest.raises(MotifpipeError, match="unknown split"):
        data.generate(task("nonsmooth"), 20, 0, 0.2, 0.2).part("training")


def test_has_grid_matches_truth_grid():
    tasks = [{"generator": "nonsmooth", "n": 10}, {"generator": "teacher", "n": 10},
             {"generator": "teacher", "n": 10, "params": {"D": 2}},
             {"generator": "manifold", "n": 10},
             {"generator": "invariant", "n": 10, "params": {"m": 1, "k": 2}}]
    for task in tasks:
        assert data.has_grid(task) == (data.truth_grid(task, 0, 4) is not None), task
