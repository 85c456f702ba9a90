"""Tidy results: one row per (task, n, seed, arm) in ``summary.csv``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COLUMNS = [
    "study", "task", "family", "sweep_key", "sweep_value", "n", "n_train", "dim", "seed",
    "arm", "test_mse", "excess_risk", "val_mse",
    "wall_time_s", "epochs", "best_epoch", "time_to_kernel_s", "epochs_to_kernel",
    "time_to_scratch_s", "epochs_to_scratch", "speedup_vs_scratch", "n_params",
    "mlflow_run_id",
]
SCRATCH_SLACK = 1.1  # target (b): 1.1 x the best validation error scratch reached


def time_to_target(curve: pd.DataFrame, target: float) -> tuple[float, float]:
    """First ``(time_s, epoch)`` at which ``val_mse <= target``; NaNs if never reached.

    ``curve`` has columns epoch, time_s, val_mse (one row per epoch).
    """
    hit = curve[curve["val_mse"] <= target]
    if hit.empty:
        return math.nan, math.nan
    first = hit.iloc[0]
    return float(first["time_s"]), float(first["epoch"])


def summary(results: list[dict], curves: dict[str, pd.DataFrame],
            tasks: dict[str, dict] | None = None) -> pd.DataFrame:
    """Join per-job results into the tidy summary table.

    ``results`` are the JSON documents written by ``fit_baseline`` (arm ``kernel``)
    and ``train``; ``curves`` maps a train result's ``curve`` key to its learning curve;
    ``tasks`` (:func:`motifpipe.config.expand_tasks`) names each task's family and the
    value it sweeps (columns family, sweep_key, sweep_value; else the task's own name).
    Per (task, n, seed), two targets on validation MSE: (a) the kernel's, (b)
    ``SCRATCH_SLACK`` x the best the ``scratch`` arm reached. ``speedup_vs_scratch`` is
    scratch's time to (b) over the arm's time to (b) (NaN where either never got there).
    """
    by_job: dict[tuple, dict[str, dict]] = {}
    for r in results:
        by_job.setdefault((r["task"], r["n"], r["seed"]), {})[r["arm"]] = r
    rows = []
    for arms in by_job.values():
        targets = _targets(arms)
        times = {arm: _times(r, curves, targets) for arm, r in arms.items()}
        scratch_t = times.get("scratch", {}).get("time_to_scratch_s", math.nan)
        for arm, r in arms.items():
            row = {c: r.get(c) for c in COLUMNS} | times[arm] | _sweep(r["task"], tasks)
            row["speedup_vs_scratch"] = scratch_t / row["time_to_scratch_s"]
            rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["task", "n", "seed", "arm"], kind="stable").reset_index(drop=True)


def _sweep(task: str, tasks: dict[str, dict] | None) -> dict:
    spec = (tasks or {}).get(task, {})
    (key, value), = spec["sweep"].items() if spec.get("sweep") else [("", math.nan)]
    return {"family": spec.get("family", task), "sweep_key": key, "sweep_value": value}


def _targets(arms: dict[str, dict]) -> dict[str, float]:
    out = {}
    if "kernel" in arms:
        out["kernel"] = arms["kernel"]["val_mse"]
    if "scratch" in arms:
        out["scratch"] = SCRATCH_SLACK * arms["scratch"]["val_mse"]
    return out


def _times(r: dict, curves: dict[str, pd.DataFrame], targets: dict) -> dict:
    """Time and epochs to each target; the kernel arm is there when its fit ends."""
    out = {}
    for name, target in (("kernel", targets.get("kernel")), ("scratch", targets.get("scratch"))):
        t = e = math.nan
        if target is not None and r["arm"] == "kernel":
            if r["val_mse"] <= target:
                t, e = r["wall_time_s"], 0
        elif target is not None and r.get("curve") in curves:
            t, e = time_to_target(curves[r["curve"]], target)
        out[f"time_to_{name}_s"], out[f"epochs_to_{name}"] = t, e
    return out


def t_half(std, count, confidence: float = 0.95):
    """Half-width of the t-interval of a mean (scalars or arrays); NaN below two values."""
    from scipy import stats

    count = np.asarray(count, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stats.t.ppf(0.5 + confidence / 2, count - 1)
        return np.where(count > 1, q * np.asarray(std, dtype=float) / np.sqrt(count), np.nan)


def speedups(summary: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean speedup vs scratch per (task, n, arm) with a t-interval across seeds.

    Rows: task, n, arm, seeds (with a finite speedup), mean, low, high, and the mean
    final test MSE of the arm for reference.
    """
    rows = []
    for (task, n, arm), g in summary.groupby(["task", "n", "arm"], sort=True):
        sp = g["speedup_vs_scratch"].replace([np.inf, -np.inf], np.nan).dropna()
        mean = float(sp.mean()) if len(sp) else math.nan
        half = float(t_half(sp.std(ddof=1), len(sp), confidence))
        rows.append({"task": task, "n": n, "arm": arm, "seeds": len(sp), "speedup": mean,
                     "low": mean - half, "high": mean + half,
                     "test_mse": float(g["test_mse"].mean())})
    return pd.DataFrame(rows)
