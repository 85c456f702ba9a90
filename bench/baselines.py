"""Benchmarks of motifpipe.baselines (issue 4): one run, side by side, ratios printed.

    .venv/bin/python bench/baselines.py            # full run (several minutes on 2 cores)
    .venv/bin/python bench/baselines.py --quick    # smaller sizes, about a minute
    .venv/bin/python bench/baselines.py --parts 2 --json out.json

1. selection over a 5x5 (gamma, lambda) grid at n=5000, d=5: motifpipe krr (LOO)
   against scikit-learn GridSearchCV(KernelRidge(kernel="rbf"), same grid, cv=5);
   wall time, speed ratio, validation MSE of each choice and their ratio.
2. nystrom at n=100000, d=10, M=1000, default 7x6 grid, in a fresh subprocess: fit
   time including selection and the torch import, peak RSS (getrusage ru_maxrss).
3. scaling table n = 10^3 ... 10^5 per solver on a 3x3 grid, with the fitted exponent
   of time vs n (least squares on log-log).

Only public tools: time.perf_counter, resource.getrusage, subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from motifpipe import baselines as B  # noqa: E402

GRID5 = {"gamma_factors": [0.25, 0.5, 1, 2, 4], "lambda_grid": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]}
GRID3 = {"gamma_factors": [0.5, 1, 2], "lambda_grid": [1e-5, 1e-3, 1e-1]}


def task(n: int, d: int, seed: int, noise: float = 0.1):
    """X (n, d) uniform on [-1, 1]^d; y (n,) = smooth + kinked terms + Gaussian noise."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    f = np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2] + np.abs(X[:, 3]) - 0.5 * X[:, 4] ** 2
    f += 0.2 * np.cos(2 * X[:, 5:]).sum(axis=1)
    return X, f + noise * rng.standard_normal(n)


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads: a figure that, unlike wall
    time, other jobs on a shared machine inflate only through contention."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Clock:
    """Wall and CPU time of a with-block."""

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), cpu_s()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t0, cpu_s() - self.c0


# --------------------------------------------------------------------------- part 1


def part_selection(n: int, exact: bool) -> dict:
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV

    X, y = task(n, 5, seed=0)
    Xv, yv = task(2000, 5, seed=1)
    rows, load0 = {}, load()
    with Clock() as c:
        m = B.fit_baseline(X, y, Xv, yv, dict(GRID5), seed=0)
    rows["motifpipe krr, loo"] = _row(c, m.info["val_mse"], m.info["gamma_factor"], m.info["lam"])
    if exact:
        with Clock() as c:
            m = B.fit_baseline(X, y, Xv, yv, {**GRID5, "select_centers": n}, seed=0)
        rows["motifpipe krr, exact loo"] = _row(c, m.info["val_mse"], m.info["gamma_factor"],
                                                m.info["lam"])
    g0, nf = B.median_gamma(X, np.random.default_rng(0)), n - n // 5
    grid = {"gamma": [f * g0 for f in GRID5["gamma_factors"]],
            "alpha": [lam * nf for lam in GRID5["lambda_grid"]]}  # alpha = n_fold * lam
    with Clock() as c:
        gs = GridSearchCV(KernelRidge(kernel="rbf"), grid, cv=5,
                          scoring="neg_mean_squared_error").fit(X, y - y.mean())
    val = float(np.mean((gs.predict(Xv) + y.mean() - yv) ** 2))
    rows["sklearn GridSearchCV cv=5"] = _row(c, val, gs.best_params_["gamma"] / g0,
                                             gs.best_params_["alpha"] / nf)
    ref = rows["sklearn GridSearchCV cv=5"]
    print(f"\n## 1. Selection, 5x5 grid, n={n}, d=5 (before: {load0}; after: {load()})\n")
    print("| method | wall s | speed-up | CPU s | CPU ratio | val MSE | val MSE / sklearn | "
          "gamma factor | lam |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        r["speedup"], r["cpu_ratio"] = ref["time_s"] / r["time_s"], ref["cpu_s"] / r["cpu_s"]
        r["val_ratio"] = r["val_mse"] / ref["val_mse"]
        print(f"| {name} | {r['time_s']:.2f} | {r['speedup']:.1f}x | {r['cpu_s']:.1f} | "
              f"{r['cpu_ratio']:.1f}x | {r['val_mse']:.5f} | {r['val_ratio']:.3f} | "
              f"{r['gamma_factor']:g} | {r['lam']:g} |")
    return rows


def _row(clock: Clock, val_mse, factor, lam) -> dict:
    return {"time_s": clock.wall, "cpu_s": clock.cpu, "val_mse": val_mse,
            "gamma_factor": factor, "lam": lam}


# --------------------------------------------------------------------------- part 2


def child_nystrom(n: int, d: int, m: int) -> None:
    """Run in a fresh process: print one JSON line with time and peak memory."""
    X, y = task(n, d, seed=0)
    Xv, yv = task(5000, d, seed=1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with Clock() as c:
        model = B.fit_baseline(X, y, Xv, yv, {"kind": "nystrom", "centers": m}, seed=0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": c.wall, "cpu_s": c.cpu, "fit_time_s": model.info["fit_time_s"],
                      "rss_mb": rss,
                      "rss_before_fit_mb": rss0, "val_mse": model.info["val_mse"],
                      "gamma_factor": model.info["gamma_factor"], "lam": model.info["lam"],
                      "var_y_val": float(np.var(yv))}))


def part_nystrom(n: int, d: int, m: int) -> dict:
    cmd = [sys.executable, __file__, "--child-nystrom", str(n), str(d), str(m)]
    load0 = load()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"\n## 2. Nyström, n={n}, d={d}, M={m}, default 7x6 grid, fresh process "
          f"(before: {load0}; after: {load()})\n")
    print("| fit incl. selection + torch import, wall s | CPU s | target | peak RSS MB | target |"
          " val MSE | var(y_val) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {r['fit_time_s']:.1f} | {r['cpu_s']:.1f} | <= 15 | {r['rss_mb']:.0f} | <= 3072 | "
          f"{r['val_mse']:.4f} | {r['var_y_val']:.4f} |")
    return r


# --------------------------------------------------------------------------- part 3


def part_scaling(sizes: list[int], limits: dict) -> dict:
    import torch  # noqa: F401  (imported once up front: the table times fits, not imports)

    solvers = {"krr": {}, "nystrom": {"centers": 1000}, "rff": {"features": 1000}, "svr": {}}
    table: dict = {k: {} for k in solvers}
    for n in sizes:
        X, y = task(n, 5, seed=0)
        Xv, yv = task(1000, 5, seed=1)
        for kind, extra in solvers.items():
            if n > limits.get(kind, 10**9):
                continue
            cfg = {**GRID3, "kind": kind, **extra}
            if kind == "nystrom":
                cfg["centers"] = min(cfg["centers"], n)
            t = time.perf_counter()
            m = B.fit_baseline(X, y, Xv, yv, cfg, seed=0)
            table[kind][n] = {"time_s": time.perf_counter() - t, "val_mse": m.info["val_mse"]}
    print(f"\n## 3. Scaling, d=5, 3x3 grid, fit time s incl. selection ({load()})\n")
    print("| solver | " + " | ".join(f"n={n}" for n in sizes) + " | exponent |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for kind, row in table.items():
        ns = sorted(row)
        slope = (np.polyfit(np.log(ns), np.log([row[n]["time_s"] for n in ns]), 1)[0]
                 if len(ns) > 1 else float("nan"))
        row["exponent"] = slope
        cells = [f"{row[n]['time_s']:.2f}" if n in row else "-" for n in sizes]
        print(f"| {kind} | " + " | ".join(cells) + f" | {slope:.2f} |")
    return table


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    ap.add_argument("--parts", default="1,2,3", help="comma-separated subset of 1,2,3")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--child-nystrom", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_nystrom:
        child_nystrom(*args.child_nystrom)
        return
    parts = {int(p) for p in args.parts.split(",")}
    out: dict = {"quick": args.quick, "cpus": os.cpu_count()}
    print(f"motifpipe baselines bench: {os.cpu_count()} CPUs, {load()}")
    if 1 in parts:
        out["selection"] = part_selection(2000 if args.quick else 5000, exact=not args.quick)
    if 2 in parts:
        out["nystrom"] = part_nystrom(20000 if args.quick else 100000, 10, 1000)
    if 3 in parts:
        sizes = [1000, 3000, 10000] if args.quick else [1000, 3000, 10000, 30000, 100000]
        out["scaling"] = part_scaling(sizes, {"krr": 3000 if args.quick else 10000, "svr": 3000})
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
