import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from motifpipe import report
from motifpipe.errors import MotifpipeError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "study": "everything",
    "seeds": [0, 1],
    "arms": ["mimicry", "scratch", "mlp", "deepsets"],
    "baseline": {"kind": "krr", "lambda_grid": [1e-4, 1e-2]},
    "tasks": {
        "smooth2d": {"generator": "smooth", "n": 300, "noise": 0.1,
                     "params": {"D": 2, "beta": 2.0}},
        "nonsmooth2d": {"generator": "nonsmooth", "n": [200, 400, 800, 1600], "noise": 0.1,
                        "params": {"D": 2, "beta": 2.0, "alpha": 2.0}},
        "sphere": {"generator": "manifold", "n": 500, "noise": 0.1,
                   "params": {"kind": "sphere", "d": 2, "D": 10},
                   "sweep": {"params.D": [5, 10, 20]}},
        "ridgeless": {"generator": "double_descent", "n": 1024, "noise": 0.1,
                      "baseline": {"kind": "rff", "lambda_grid": [0]},
                      "sweep": {"baseline.features": [64, 256, 512, 1024, 2048]}},
        "ridge": {"generator": "double_descent", "n": 1024, "noise": 0.1,
                  "baseline": {"kind": "rff", "lambda_grid": [1e-3]},
                  "sweep": {"baseline.features": [64, 256, 512, 1024, 2048]}},
    },
}


def _row(family, task, n, seed, arm, err, key="", value=np.nan, **extra):
    return {"study": "everything", "task": task, "family": family, "sweep_key": key,
            "sweep_value": value, "n": n, "n_train": int(0.6 * n), "seed": seed, "arm": arm,
            "test_mse": err + 0.01, "excess_risk": err, "val_mse": err + 0.01,
            "wall_time_s": 1.0, "mlflow_run_id": f"run-{task}-{n}-{seed}-{arm}", **extra}


def _summary(rng) -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for arm, t in (("kernel", 0.5), ("mimicry", 1.0), ("scratch", 3.0), ("mlp", 2.0)):
            rows.append(_row("smooth2d", "smooth2d", 300, seed, arm, 0.05 + 0.01 * seed,
                             time_to_scratch_s=t, time_to_kernel_s=t + 0.5,
                             speedup_vs_scratch=3.0 / t))
        for n in (200, 400, 800, 1600):
            for arm, slope in (("kernel", -0.3), ("mimicry", -0.6), ("deepsets", -0.5)):
                rows.append(_row("nonsmooth2d", "nonsmooth2d", n, seed, arm,
                                 2 * n ** slope * np.exp(rng.normal(0, 0.05))))
        for D in (5, 10, 20):  # noqa: N806
            for arm in ("kernel", "mlp"):
                rows.append(_row("sphere", f"sphere-D{D}", 500, seed, arm,
                                 0.01 * D * rng.uniform(0.8, 1.2), "params.D", float(D)))
        for family, peak in (("ridgeless", 5.0), ("ridge", 0.2)):
            for f in (64, 256, 512, 1024, 2048):
                err = 0.1 * (1 + peak * np.exp(-abs(np.log(f / 614)))) * rng.uniform(0.9, 1.1)
                rows.append(_row(family, f"{family}-features{f}", 1024, seed, "kernel", err,
                                 "baseline.features", float(f)))
    # A CSV round trip, as the stage reads it: "" sweep keys come back as NaN.
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False)
    return pd.read_csv(io.StringIO(buf.getvalue()))


def _curves() -> pd.DataFrame:
    e = np.arange(20)
    return pd.concat([pd.DataFrame({"task": "smooth2d", "n": 300, "seed": seed, "arm": arm,
                                    "epoch": e, "time_s": 0.25 * (e + 1) * (1 + seed),
                                    "val_mse": 0.04 + scale / (e + 1), "test_mse": np.nan,
                                    "excess_risk": np.nan, "train_loss": np.nan})
                      for seed in (0, 1) for arm, scale in (("mimicry", 0.05),
                                                            ("scratch", 0.5), ("mlp", 0.3))])


def _heatmaps(rng) -> list[dict]:
    r = 24
    axis = np.linspace(-1, 1, r)
    xx, yy = np.meshgrid(axis, axis)
    truth = np.sin(3 * xx) + (yy > 0)
    return [{"task": "smooth2d", "extent": (-1, 1), "truth": truth,
             "kernel": truth + rng.normal(0, 0.1, (r, r)),
             "mimicry": truth + rng.normal(0, 0.05, (r, r)),
             "mlp": truth + rng.normal(0, 0.02, (r, r)),
             "X_train": rng.uniform(-1, 1, (600, 2))},  # more than are drawn
            {"task": "nonsmooth2d", "extent": (-1, 1), "truth": -truth,
             "kernel": -truth + 0.1, "mimicry": None, "X_train": None}]


def _assert_png(path: Path, min_std: float = 0.05) -> None:
    img = imread(path)
    assert img.shape[0] >= 200 and img.shape[1] >= 300, img.shape
    assert np.std(img[..., :3]) > min_std  # not a blank canvas


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    rng = np.random.default_rng(0)
    summary = _summary(rng)
    names = list(reversed(report.FIGURE_NAMES))  # order is the caller's, not ours
    figs = report.draw_figures(summary, _curves(), tmp_path_factory.mktemp("fig"), names,
                               CONFIG, heatmaps=_heatmaps(rng))
    return summary, names, figs


def test_draw_figures_draws_exactly_the_requested_names_as_non_blank_pngs(drawn):
    _, names, figs = drawn
    assert list(figs) == names
    for name, path in figs.items():
        assert path.name == f"{name}.png"
        _assert_png(path)


def test_html_embeds_every_figure_with_caption_run_ids_and_slopes(drawn):
    summary, _, figs = drawn
    slopes = report.rate_slopes(summary, CONFIG)
    html = report.render_html(CONFIG, summary, figs, parent_run_id="parent-123",
                              slopes=slopes)
    assert html.count("data:image/png;base64,") == len(figs)
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "parent-123" in html and "run-smooth2d-300-0-mimicry" in html
    assert "Rates: fitted slopes" in html and "<th>theory</th>" in html
    assert "<th>speedup</th>" in html and "scikit-learn" in html and "seaborn" in html
    positions = [html.index(f'<figure id="{name}"') for name in figs]
    assert positions == sorted(positions)  # figures appear in the order given
    assert report.CAPTIONS["heatmaps"][:40] in html


def test_rate_slopes_recover_a_known_slope_and_theory():
    rng = np.random.default_rng(1)
    rows = [{"task": "ns", "family": "ns", "n": n, "n_train": n, "seed": seed, "arm": arm,
             "test_mse": np.nan, "excess_risk": 3.0 * n ** -0.5 * np.exp(rng.normal(0, 0.03))}
            for n in (100, 200, 400, 800) for seed in (0, 1) for arm in ("kernel", "mimicry")]
    config = {"tasks": {"ns": {"generator": "nonsmooth",
                               "params": {"D": 2, "beta": 2.0, "alpha": 2.0}}}}
    slopes = report.rate_slopes(pd.DataFrame(rows), config).set_index("arm")
    assert list(slopes.index) == ["kernel", "mimicry"]
    for arm in slopes.index:
        r = slopes.loc[arm]
        assert abs(r["slope"] + 0.5) < 0.05 and r["low"] < r["slope"] < r["high"]
        assert r["points"] == 8 and r["metric"] == "excess_risk"
    assert slopes.loc["kernel", "theory"] == pytest.approx(-1 / 3)
    assert slopes.loc["mimicry", "theory"] == pytest.approx(-2 / 3)


def test_theory_slope():
    ns = {"generator": "nonsmooth", "params": {"D": 2, "beta": 2.0, "alpha": 2.0}}
    for arm in ("mlp", "mimicry", "scratch", "deepsets"):
        assert report.theory_slope(ns, arm) == pytest.approx(-2 / 3)
    assert report.theory_slope(ns, "kernel") == pytest.approx(-1 / 3)
    smooth = {"generator": "smooth", "params": {"D": 4, "beta": 1.0}}
    assert report.theory_slope(smooth, "kernel") == pytest.approx(-1 / 3)
    assert report.theory_slope({"generator": "teacher", "params": {"D": 5}}, "mlp") is None
    assert report.theory_slope(None, "mlp") is None


def test_missing_data_draws_a_no_data_panel(tmp_path):
    rows = pd.DataFrame([_row("t", "t", 100, seed, arm, 0.1)
                         for seed in (0, 1) for arm in ("kernel", "mlp")])
    names = ["rates", "sweep", "double_descent", "heatmaps", "learning_curves"]
    figs = report.draw_figures(rows, pd.DataFrame(), tmp_path, names, {"study": "t"})
    assert list(figs) == names
    for path in figs.values():
        _assert_png(path, min_std=0.01)
    assert report.rate_slopes(rows, {}).empty


def test_unknown_figure_is_a_user_error(tmp_path):
    with pytest.raises(MotifpipeError, match="'nope'"):
        report.draw_figures(pd.DataFrame({"task": [], "n": [], "arm": []}), None, tmp_path,
                            ["nope"], {})


def test_caption_files_match_the_html_captions():
    assert set(report.CAPTIONS) == set(report.FIGURE_NAMES)
    for name in report.FIGURE_NAMES:
        rst = (ROOT / "workflow" / "report" / f"{name}.rst").read_text()
        assert " ".join(rst.split()) == " ".join(report.CAPTIONS[name].split()), name
