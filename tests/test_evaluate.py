import math

import pandas as pd

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
