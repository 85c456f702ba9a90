import math

import pandas as pd
import pytest

from motifpipe import evaluate


def test_time_to_target_first_crossing():
    curve = pd.DataFrame({"epoch": [0, 1, 2, 3], "time_s": [0.0, 1.0, 2.0, 3.0],
                          "val_mse": [1.0, 0.5, 0.2, 0.1]})
    assert evaluate.time_to_target(curve, 0.3) == (2.0, 2.0)
    assert all(math.isnan(v) for v in evaluate.time_to_target(curve, 0.01))


def test_summary_one_row_per_job_and_arm():
    base = {"study": "s", "task": "t", "n": 100, "seed": 0}
    results = [
        base | {"arm": "kernel", "val_mse": 0.3, "test_mse": 0.31, "wall_time_s": 0.5},
        base | {"arm": "mlp", "val_mse": 0.2, "test_mse": 0.21, "wall_time_s": 3.0,
                "curve": "c.csv"},
    ]
    curves = {"c.csv": pd.DataFrame({"epoch": [0, 1, 2], "time_s": [0.0, 1.5, 3.0],
                                     "val_mse": [1.0, 0.25, 0.2]})}
    df = evaluate.summary(results, curves)
    assert list(df["arm"]) == ["kernel", "mlp"]
    assert list(df.columns) == evaluate.COLUMNS
    mlp = df[df["arm"] == "mlp"].iloc[0]
    assert mlp["time_to_kernel_s"] == 1.5 and mlp["epochs_to_kernel"] == 1
    kernel = df[df["arm"] == "kernel"].iloc[0]
    assert kernel["time_to_kernel_s"] == 0.5 and kernel["epochs_to_kernel"] == 0


def _job(seed, mimicry_curve, scratch_curve):
    base = {"study": "s", "task": "t", "n": 100, "seed": seed}
    results = [base | {"arm": "kernel", "val_mse": 0.5, "test_mse": 0.5, "wall_time_s": 1.0}]
    curves = {}
    for arm, c in (("mimicry", mimicry_curve), ("scratch", scratch_curve)):
        key = f"{arm}{seed}.csv"
        curves[key] = pd.DataFrame(c, columns=["epoch", "time_s", "val_mse"])
        results.append(base | {"arm": arm, "val_mse": min(v for _, _, v in c),
                               "test_mse": 0.1, "wall_time_s": c[-1][1], "curve": key})
    return results, curves


def test_time_to_scratch_target_and_speedup_with_interval():
    results, curves = [], {}
    for seed, t_mim in enumerate([1.0, 2.0, 4.0]):
        # scratch reaches its best 0.10 at t=8; target (b) is 0.11.
        r, c = _job(seed, [(0, t_mim / 2, 0.4), (1, t_mim, 0.105)],
                    [(0, 0.0, 1.0), (1, 4.0, 0.3), (2, 8.0, 0.10)])
        results += r
        curves |= c
    df = evaluate.summary(results, curves)
    mim = df[df["arm"] == "mimicry"].sort_values("seed")
    assert list(mim["time_to_scratch_s"]) == [1.0, 2.0, 4.0]
    assert list(mim["speedup_vs_scratch"]) == [8.0, 4.0, 2.0]
    sp = evaluate.speedups(df).set_index("arm").loc["mimicry"]
    assert sp["seeds"] == 3 and sp["speedup"] == pytest.approx(14 / 3)
    assert sp["low"] < sp["speedup"] < sp["high"]
    assert math.isnan(evaluate.speedups(df).set_index("arm").loc["kernel", "speedup"])
