"""Tidy results: one row per (task, n, seed, arm) in ``summary.csv``."""

from __future__ import annotations

import math

import pandas as pd

COLUMNS = [
    "study", "task", "n", "seed", "arm", "test_mse", "excess_risk", "val_mse",
    "wall_time_s", "epochs", "best_epoch", "time_to_kernel_s", "epochs_to_kernel",
    "n_params", "mlflow_run_id",
]


def time_to_target(curve: pd.DataFrame, target: float) -> tuple[float, float]:
    """First ``(time_s, epoch)`` at which ``val_mse <= target``; NaNs if never reached.

    ``curve`` has columns epoch, time_s, val_mse (one row per epoch).
    """
    hit = curve[curve["val_mse"] <= target]
    if hit.empty:
        return math.nan, math.nan
    first = hit.iloc[0]
    return float(first["time_s"]), float(first["epoch"])


def summary(results: list[dict], curves: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Join per-job results into the tidy summary table.

    ``results`` are the JSON documents written by ``fit_baseline`` (arm ``kernel``)
    and ``train``; ``curves`` maps a train result's ``curve`` key to its learning curve.
    Time-to-target uses the kernel's validation error of the same (task, n, seed).
    """
    kernel_val = {
        (r["task"], r["n"], r["seed"]): r["val_mse"] for r in results if r["arm"] == "kernel"
    }
    rows = []
    for r in results:
        row = {c: r.get(c) for c in COLUMNS}
        target = kernel_val.get((r["task"], r["n"], r["seed"]))
        if r["arm"] == "kernel":
            row["time_to_kernel_s"], row["epochs_to_kernel"] = r["wall_time_s"], 0
        elif target is not None and r.get("curve") in curves:
            row["time_to_kernel_s"], row["epochs_to_kernel"] = time_to_target(
                curves[r["curve"]], target
            )
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["task", "n", "seed", "arm"], kind="stable").reset_index(drop=True)
