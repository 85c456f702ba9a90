import numpy as np
import pandas as pd
from matplotlib.image import imread

from motifpipe import report


def _tables():
    rows, curves = [], []
    for seed in (0, 1):
        for arm in ("kernel", "mimicry", "mlp"):
            rows.append({"task": "t", "n": 100, "seed": seed, "arm": arm,
                         "test_mse": 0.1 + 0.01 * seed, "excess_risk": 0.05,
                         "val_mse": 0.1, "wall_time_s": 1.0, "mlflow_run_id": f"id{seed}{arm}"})
            if arm != "kernel":
                curves += [{"task": "t", "n": 100, "seed": seed, "arm": arm, "epoch": e,
                            "time_s": 0.1 * e, "val_mse": 1.0 / (e + 1)} for e in range(5)]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_figures_are_non_blank_pngs_and_html_embeds_them(tmp_path):
    summary, curves = _tables()
    figs = report.draw_figures(summary, curves, tmp_path)
    assert set(figs) == set(report.FIGURES)
    for path in figs.values():
        img = imread(path)
        assert img.shape[0] > 200 and img.shape[1] > 300
        assert np.std(img[..., :3]) > 0.05  # not a blank canvas
    html = report.render_html({"study": "t"}, summary, figs)
    assert html.count("data:image/png;base64,") == len(figs)
    assert "id0mimicry" in html and "<h2>Configuration</h2>" in html
    assert "src=\"http" not in html  # self-contained
