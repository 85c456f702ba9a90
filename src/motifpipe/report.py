"""Figures (seaborn) and the self-contained HTML report of a study.

Every figure in :data:`FIGURE_NAMES` is drawn by one ``_fig_<name>(inputs) -> Figure``
function; a figure whose data are missing becomes a "no data for ..." panel, so a
report always has every figure it was asked for. Errors are drawn on log axes, so
"mean over seeds" on those axes is the geometric mean, with a t-interval of the log
error as the band (it stays positive and is symmetric on the axis it is drawn on).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.metadata
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from motifpipe.config import expand_tasks  # noqa: E402
from motifpipe.errors import MotifpipeError  # noqa: E402
from motifpipe.evaluate import SCRATCH_SLACK, speedups, t_half  # noqa: E402
from motifpipe.io import atomic_path  # noqa: E402

ARM_ORDER = ["kernel", "mimicry", "scratch", "mlp", "deepsets"]
NETWORK_ARMS = ("mimicry", "scratch", "mlp", "deepsets")
_CB = sns.color_palette("colorblind")
# Colour-blind safe and far apart: blue, orange, green, purple, brown.
PALETTE = dict(zip(ARM_ORDER, [_CB[i] for i in (0, 1, 2, 4, 5)], strict=True))
# Families (double descent) are not arms: their own colours, in this order.
FAMILY_COLOURS = [_CB[i] for i in (0, 3, 9, 5, 7, 8)]
FIGURE_NAMES = ("learning_curves", "final_errors", "rates", "sweep", "double_descent",
                "heatmaps")
# Plain text that is also valid reStructuredText: workflow/report/<name>.rst holds the same
# words (tests/test_report.py checks), so `snakemake --report` and report.html agree.
CAPTIONS = {
    "learning_curves": "Validation MSE against wall-clock time, one line per seed and "
    "colour per arm; the dashed line is the kernel baseline's validation MSE and the dotted "
    "line 1.1 × the best validation MSE scratch reached. Triangles mark each arm's mean time "
    "(over the seeds that got there) to reach 1.1 × scratch's best, circles its mean time to "
    "reach the kernel's error; mimicry's clock starts when the baseline fit starts.",
    "final_errors": "Test MSE against noisy targets of each arm at its best validation "
    "epoch; bars are means over seeds, dots the individual seeds.",
    "rates": "Excess risk against the number of training points on log-log axes: dots are "
    "seeds, larger markers the geometric mean per n, solid lines the least-squares fit of "
    "log error on log n with its slope and 95 % confidence interval in the legend. Dashed "
    "lines are the theoretical rates (up to log factors; networks after Imaizumi and "
    "Fukumizu 2019), anchored at the arm's mean at the smallest n.",
    "sweep": "Excess risk against the swept task parameter, colour per arm: geometric mean "
    "over seeds with a 95 % t-interval band, at the largest sample size of each family.",
    "double_descent": "Test excess risk of the random-feature model against the number of "
    "random features per training point, one colour per family (ridgeless or ridge): "
    "geometric mean over seeds with a 95 % t-interval band. The dashed line marks the "
    "interpolation threshold, where features equal training points.",
    "heatmaps": "Two-dimensional tasks, one row each (largest n, first seed): the true "
    "function f*, the kernel baseline's fit, the fits of the retrained mimicry network and "
    "of the MLP where the study trains them, and their absolute errors. Function panels share "
    "one colour scale per row, error panels another; dots on f* are training points (at most "
    "400 drawn).",
}
DEFAULT_FIGURES = ("learning_curves", "final_errors")  # what a call without `names` draws
MAX_CURVE_PANELS = 6
_SWEEP_LABELS = {"params.D": "ambient dimension D", "params.m": "points per set m",
                 "params.d": "intrinsic dimension d", "baseline.features": "random features",
                 "baseline.centers": "kernel centres"}


@dataclass(frozen=True)
class _Inputs:
    summary: pd.DataFrame   # tidy summary, normalised by _prepare
    curves: pd.DataFrame    # per-epoch learning curves of the trained arms (may be empty)
    config: dict            # validated study config
    heatmaps: list[dict]    # 2-D panels-rows, see _fig_heatmaps


# --------------------------------------------------------------------------- helpers


def _prepare(summary: pd.DataFrame) -> pd.DataFrame:
    """Summary with the columns the figures rely on, filled for older or partial tables.

    CSV round trips turn the empty ``sweep_key`` of unswept tasks into NaN: normalise to "".
    """
    s = summary.copy()
    if "family" not in s:
        s["family"] = s["task"]
    s["family"] = s["family"].fillna(s["task"]).astype(str)
    s["sweep_key"] = (s["sweep_key"].fillna("").astype(str) if "sweep_key" in s else "")
    if "sweep_value" not in s:
        s["sweep_value"] = np.nan
    if "n_train" not in s:
        s["n_train"] = s["n"]
    for col in ("excess_risk", "test_mse", "val_mse"):
        if col not in s:
            s[col] = np.nan
    return s


def _arms(values) -> list[str]:
    """Arms present, in ARM_ORDER first, unknown ones after (sorted)."""
    present = set(values)
    return [a for a in ARM_ORDER if a in present] + sorted(present - set(ARM_ORDER))


def _colour(arm: str):
    return PALETTE.get(arm, "0.35")


def _error(df: pd.DataFrame) -> tuple[str, str]:
    """The error column to plot and its axis label: excess risk where f* is known."""
    if df["excess_risk"].notna().any():
        return "excess_risk", "excess risk (test MSE against noise-free f*)"
    return "test_mse", "test MSE, noisy targets (no f*: real data)"


def _log_band(df: pd.DataFrame, x: str, y: str, by: list[str],
              confidence: float = 0.95) -> pd.DataFrame:
    """Geometric mean of ``y`` over rows (seeds) per (*by, x), with a t-band on log y.

    Returns one row per group: columns *by, x, mean, low, high, count.
    """
    d = df[df[y] > 0].assign(_log=lambda t: np.log(t[y]))
    g = d.groupby([*by, x], sort=True)["_log"].agg(["mean", "std", "count"]).reset_index()
    half = t_half(g["std"], g["count"], confidence)
    return g.assign(low=np.exp(g["mean"] - half), high=np.exp(g["mean"] + half),
                    mean=np.exp(g["mean"])).drop(columns="std")


def _grid(k: int, ncols: int = 3, panel: tuple[float, float] = (5.2, 3.9)):
    """Figure with ``k`` panels wrapped at ``ncols`` columns; returns (fig, flat axes)."""
    cols = min(k, ncols)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows),
                             squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[k:]:
        ax.set_visible(False)
    return fig, flat[:k]


def _no_data(name: str, reason: str) -> Figure:
    """A placeholder panel that says plainly why a requested figure has nothing to show."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.set_facecolor("0.94")
    ax.text(0.5, 0.5, f"no data for {name}\n\n{reason}", ha="center", va="center",
            fontsize=13, wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _task_spec(config: dict, task: str) -> dict | None:
    """The data-module task (generator, n, noise, params) that ran as ``task``."""
    if not config.get("tasks"):
        return None
    spec = expand_tasks(config).get(task)
    return spec["task"] if spec else None


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ rates


def theory_slope(task: dict | None, arm: str) -> float | None:
    """Theoretical log-log slope of excess risk against n for ``arm`` on ``task``.

    ``task`` is a data-module task ``{"generator", "params"}`` with params filled in.
    Rates hold up to log factors:

    - ``nonsmooth`` (β-Hölder pieces, α-smooth boundaries, dimension D): networks
      (mimicry, scratch, mlp, deepsets) reach ``n^-min(2β/(2β+D), α/(α+D-1))``
      (Imaizumi & Fukumizu 2019, "Deep neural networks learn non-smooth functions
      effectively", AISTATS). The kernel (a linear smoother) gets
      ``n^-min(2β/(2β+D), 1/(D+1))``: a heuristic rate at a jump, where the strip of
      width h around the boundary gives bias² ∝ h and the variance is ∝ 1/(n h^D).
    - ``smooth`` (β-Hölder on [0, 1]^D): the minimax ``n^-2β/(2β+D)`` (Stone 1982) for
      every arm.

    Returns the (negative) slope, or None where there is no theory to draw.
    """
    if not task:
        return None
    params = task.get("params") or {}
    try:
        D, beta = float(params["D"]), float(params["beta"])  # noqa: N806 - D as documented
    except (KeyError, TypeError, ValueError):
        return None
    smooth = 2 * beta / (2 * beta + D)
    if task.get("generator") == "smooth":
        return -smooth
    if task.get("generator") != "nonsmooth" or "alpha" not in params:
        return None
    if arm == "kernel":
        return -min(smooth, 1 / (D + 1))
    if arm in NETWORK_ARMS:
        alpha = float(params["alpha"])
        return -min(smooth, alpha / (alpha + D - 1))
    return None


def _ols(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """Least-squares ``y ≈ a + b x`` over (k,) points, k >= 3: (b, a, low, high) of b."""
    from scipy import stats

    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    sxx = float(((x - x.mean()) ** 2).sum())
    se = math.sqrt(float(resid @ resid) / (len(x) - 2) / sxx)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 2)) * se
    return float(slope), float(intercept), float(slope - half), float(slope + half)


def _rate_groups(s: pd.DataFrame):
    """(family, task, rows) for every task with at least three distinct training sizes."""
    for (family, task), g in s.groupby(["family", "task"], sort=False):
        if g["n_train"].nunique() >= 3:
            yield family, task, g


def rate_slopes(summary: pd.DataFrame, config: dict, confidence: float = 0.95) -> pd.DataFrame:
    """Fitted log-log slopes of error against n_train, per (family, task, arm).

    Only tasks and arms with >= 3 distinct n_train. The slope is ordinary least squares of
    log(error) on log(n_train) over every (n, seed) point; low/high its t-interval.
    Columns: family, task, arm, points, slope, low, high, theory (see
    :func:`theory_slope`; NaN where none), metric (excess_risk, or test_mse without f*).
    """
    s = _prepare(summary)
    rows = []
    for family, task, g in _rate_groups(s):
        col, _ = _error(g)
        spec = _task_spec(config, task)
        for arm in _arms(g["arm"]):
            a = g[(g["arm"] == arm) & (g[col] > 0)]
            if a["n_train"].nunique() < 3:
                continue
            slope, _, low, high = _ols(np.log(a["n_train"].to_numpy(float)),
                                       np.log(a[col].to_numpy(float)), confidence)
            theory = theory_slope(spec, arm)
            rows.append({"family": family, "task": task, "arm": arm, "points": len(a),
                         "slope": slope, "low": low, "high": high,
                         "theory": math.nan if theory is None else theory, "metric": col})
    return pd.DataFrame(rows, columns=["family", "task", "arm", "points", "slope", "low",
                                       "high", "theory", "metric"])


# -------------------------------------------------------------------- learning curves


def _mean(rows: pd.DataFrame, arm: str, col: str) -> float:
    """Mean of ``col`` over the seeds (rows) of ``arm`` that have it; NaN if none."""
    if col not in rows:
        return math.nan
    values = pd.to_numeric(rows.loc[rows["arm"] == arm, col], errors="coerce")
    values = values.replace([np.inf, -np.inf], np.nan).dropna()
    return float(values.mean()) if len(values) else math.nan


def _curve_panels(curves: pd.DataFrame, s: pd.DataFrame) -> tuple[list[tuple], str]:
    """The (task, n) panels to draw, and a note when some were left out.

    Up to MAX_CURVE_PANELS: all; beyond, one per family (its largest n, its last swept
    value), because a wall of tiny panels is unreadable.
    """
    pairs = list(curves[["task", "n"]].drop_duplicates().sort_values(["task", "n"])
                 .itertuples(index=False, name=None))
    if len(pairs) <= MAX_CURVE_PANELS:
        return pairs, ""
    family = dict(zip(s["task"], s["family"], strict=False))
    value = dict(zip(s["task"], s["sweep_value"].fillna(0), strict=False))
    best: dict[str, tuple] = {}
    for task, n in sorted(pairs, key=lambda p: (p[1], value.get(p[0], 0))):
        best[family.get(task, task)] = (task, n)
    chosen = sorted(best.values())[:MAX_CURVE_PANELS]
    return chosen, f"showing {len(chosen)} of {len(pairs)} (task, n): largest n per family"


def _curve_panel(ax, sub: pd.DataFrame, rows: pd.DataFrame) -> None:
    """One (task, n): per-seed curves, kernel and scratch-target lines, time-to-target marks.

    ``sub``: curve rows of this task and n; ``rows``: its summary rows (all arms, seeds).
    """
    arms = _arms(sub["arm"])
    sns.lineplot(data=sub, x="time_s", y="val_mse", hue="arm", units="seed", estimator=None,
                 hue_order=arms, palette={a: _colour(a) for a in arms}, ax=ax, lw=1.2,
                 alpha=0.75, legend=False)
    kernel = _mean(rows, "kernel", "val_mse")
    target = SCRATCH_SLACK * _mean(rows, "scratch", "val_mse")
    if math.isfinite(kernel):
        ax.axhline(kernel, ls="--", lw=1.5, color=_colour("kernel"))
    if math.isfinite(target):
        ax.axhline(target, ls=":", lw=1.5, color=_colour("scratch"))
    for arm in arms:
        for col, level, marker in (("time_to_scratch_s", target, "v"),
                                   ("time_to_kernel_s", kernel, "o")):
            t = _mean(rows, arm, col)
            if math.isfinite(t) and math.isfinite(level):
                ax.plot([t], [level], ls="none", marker=marker, ms=9, color=_colour(arm),
                        mec="k", mew=0.8, zorder=5)
    ax.set(xlabel="wall-clock time (s)", ylabel="validation MSE", yscale="log")


def _curve_legend(arms: list[str]) -> list[Line2D]:
    lines = [Line2D([], [], color=_colour(a), lw=2, label=a) for a in arms]
    return lines + [
        Line2D([], [], ls="--", color=_colour("kernel"), label="kernel validation MSE"),
        Line2D([], [], ls=":", color=_colour("scratch"),
               label=f"{SCRATCH_SLACK} × scratch best"),
        Line2D([], [], ls="none", marker="v", color="0.5", mec="k",
               label=f"mean time to {SCRATCH_SLACK} × scratch best"),
        Line2D([], [], ls="none", marker="o", color="0.5", mec="k",
               label="mean time to kernel MSE"),
    ]


def _fig_learning_curves(inp: _Inputs) -> Figure:
    c = inp.curves
    if c.empty or not {"task", "n", "arm", "time_s", "val_mse"} <= set(c.columns):
        return _no_data("learning_curves", "no trained arm in this study (no learning curves)")
    panels, note = _curve_panels(c, inp.summary)
    fig, axes = _grid(len(panels))
    for ax, (task, n) in zip(axes, panels, strict=True):
        sel = inp.summary[(inp.summary["task"] == task) & (inp.summary["n"] == n)]
        _curve_panel(ax, c[(c["task"] == task) & (c["n"] == n)], sel)
        ax.set_title(f"{task}, n = {n}")
    fig.legend(handles=_curve_legend(_arms(c["arm"])), loc="outside lower center",
               ncols=4, fontsize="small")
    if note:
        fig.suptitle(note, fontsize="small")
    return fig


# ----------------------------------------------------------------------- final errors


def _family_order(s: pd.DataFrame, config: dict) -> list[str]:
    """Families in the config's order (the order the user wrote them), others after."""
    present = list(dict.fromkeys(s["family"]))
    written = [f for f in config.get("tasks", {}) if f in present]
    return written + [f for f in present if f not in written]


def _group_labels(g: pd.DataFrame) -> pd.Series:
    """Short category label per row of one family: swept value and/or n, else the task."""
    key = g["sweep_key"].iloc[0]
    label = pd.Series(g["task"].astype(str), index=g.index)
    if key:
        label = key.rsplit(".", 1)[-1] + "=" + g["sweep_value"].map("{:g}".format)
    if g["n"].nunique() > 1:
        n = "n=" + g["n"].astype(str)
        label = n if not key else label + ", " + n
    return label


def _final_panel(ax, g: pd.DataFrame, family: str) -> None:
    """One family: bars = mean test MSE per (task or n, arm), dots = seeds."""
    g = g.sort_values(["sweep_value", "n"], kind="stable")
    g = g.assign(group=_group_labels(g))
    groups, arms = list(dict.fromkeys(g["group"])), _arms(g["arm"])
    common = {"data": g, "x": "group", "y": "test_mse", "hue": "arm", "hue_order": arms,
              "order": groups, "ax": ax}
    sns.barplot(**common, palette={a: _colour(a) for a in arms}, errorbar=None, alpha=0.85)
    sns.stripplot(**common, palette=dict.fromkeys(arms, "0.15"), dodge=True, legend=False,
                  size=3.5)
    # Bars on a log axis start at the axis floor: put it a decade boundary at least half a
    # decade below the data, so bar lengths do not exaggerate small differences.
    lo, hi = g["test_mse"].min(), g["test_mse"].max()
    ax.set(yscale="log", ylim=(10.0 ** math.floor(math.log10(lo) - 0.5), 1.6 * hi),
           xlabel="", ylabel="test MSE (noisy targets)", title=family)
    if len(groups) > 3 or max(len(x) for x in groups) > 12:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    ax.legend(title="arm", fontsize="x-small", title_fontsize="small")


def _fig_final_errors(inp: _Inputs) -> Figure:
    s = inp.summary[inp.summary["test_mse"] > 0]
    if s.empty:
        return _no_data("final_errors", "the summary has no positive test MSE")
    families = _family_order(s, inp.config)
    # One panel per family, so many tasks stay readable and no bar slot is wasted on an
    # arm a family does not run; panels as wide as their widest family needs.
    bars = max(s[s["family"] == f].groupby(["task", "n"]).ngroups * s.loc[
        s["family"] == f, "arm"].nunique() for f in families)
    width = min(14.0, max(4.5, 1.5 + 0.35 * bars))
    fig, axes = _grid(len(families), ncols=max(1, int(15 // width)), panel=(width, 4.2))
    for ax, family in zip(axes, families, strict=True):
        _final_panel(ax, s[s["family"] == family], family)
    return fig


# ------------------------------------------------------------------------------ rates


def _rate_title(task: str, spec: dict | None) -> str:
    params = (spec or {}).get("params") or {}
    shown = [f"{sym}={params[k]:g}" for k, sym in (("D", "D"), ("beta", "β"), ("alpha", "α"))
             if isinstance(params.get(k), int | float)]
    return f"{task} ({', '.join(shown)})" if shown else task


def _rate_panel(ax, g: pd.DataFrame, slopes: pd.DataFrame, spec: dict | None) -> None:
    """One task: seed points, geometric means per n, OLS fit and theory line per arm."""
    col, label = _error(g)
    band = _log_band(g, "n_train", col, ["arm"])
    for arm in _arms(g["arm"]):
        c, pts = _colour(arm), g[(g["arm"] == arm) & (g[col] > 0)]
        means = band[band["arm"] == arm]
        ax.scatter(pts["n_train"], pts[col], s=12, color=c, alpha=0.45, lw=0)
        ax.scatter(means["n_train"], means["mean"], s=45, color=c, edgecolor="k", lw=0.6,
                   zorder=4)
        fit = slopes[slopes["arm"] == arm]
        if fit.empty:
            continue
        r = fit.iloc[0]
        lx, ly = np.log(pts["n_train"].to_numpy(float)), np.log(pts[col].to_numpy(float))
        n = np.geomspace(pts["n_train"].min(), pts["n_train"].max(), 20)
        theory = f", theory {r['theory']:+.2f}" if math.isfinite(r["theory"]) else ""
        # The OLS line passes through the centroid of the log points.
        ax.plot(n, np.exp(ly.mean() + r["slope"] * (np.log(n) - lx.mean())), color=c, lw=1.8,
                label=f"{arm}: {r['slope']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]{theory}")
        if math.isfinite(r["theory"]):
            first = means.sort_values("n_train").iloc[0]
            ax.plot(n, first["mean"] * (n / first["n_train"]) ** r["theory"], ls="--",
                    color=c, lw=1.3)
    handles, _ = ax.get_legend_handles_labels()
    if slopes["theory"].notna().any():
        handles.append(Line2D([], [], ls="--", color="0.3",
                              label="theory (anchored at smallest n)"))
    ax.legend(handles=handles, title="arm: slope [95 % CI]", fontsize="x-small",
              title_fontsize="small")
    ax.set(xscale="log", yscale="log", xlabel="training points n_train", ylabel=label,
           title=_rate_title(g["task"].iloc[0], spec))
    # Tick the sample sizes actually run: log-axis minor labels (2x10^2, 3x10^2) collide.
    ax.set_xticks(sorted(g["n_train"].unique()))
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _fig_rates(inp: _Inputs) -> Figure:
    groups = list(_rate_groups(inp.summary))
    if not groups:
        return _no_data("rates", "no task has errors at three or more sample sizes")
    slopes = rate_slopes(inp.summary, inp.config)
    fig, axes = _grid(len(groups), ncols=2, panel=(6.2, 4.6))
    for ax, (_, task, g) in zip(axes, groups, strict=True):
        _rate_panel(ax, g, slopes[slopes["task"] == task], _task_spec(inp.config, task))
    return fig


# ------------------------------------------------------------------------------ sweep


def _sweep_title(key: str, d: pd.DataFrame, config: dict) -> str:
    """Readable panel title; for an ambient-dimension sweep, the intrinsic d from config."""
    title = f"error against {_SWEEP_LABELS.get(key, key)}"
    if key == "params.D":
        tasks = config.get("tasks", {})
        ds = {f: (tasks.get(f, {}).get("params") or {}).get("d") for f in d["family"].unique()}
        known = {f: v for f, v in ds.items() if v is not None}
        if known and len(known) == len(ds) and len(set(known.values())) == 1:
            title += f" (intrinsic d = {next(iter(known.values()))})"
        elif known:
            title += " (intrinsic " + ", ".join(f"d = {v} for {f}" for f, v in known.items()) + ")"
    sizes = sorted(d["n"].unique())
    return title + (f"\nn = {sizes[0]}" if len(sizes) == 1 else "\nlargest n per family")


def _sweep_panel(ax, d: pd.DataFrame, key: str, config: dict) -> None:
    """One swept key: geometric mean ± 95 % band over seeds per (family, arm)."""
    d = d[d["n"] == d.groupby("family")["n"].transform("max")]  # one size per family
    col, label = _error(d)
    band = _log_band(d, "sweep_value", col, ["family", "arm"])
    families = _family_order(d, config)
    for i, family in enumerate(families):
        for arm in _arms(band.loc[band["family"] == family, "arm"]):
            b = band[(band["family"] == family) & (band["arm"] == arm)]
            name = arm if len(families) == 1 else f"{arm}, {family}"
            ax.plot(b["sweep_value"], b["mean"], color=_colour(arm), ls=["-", "--", ":", "-."][
                i % 4], marker="osD^"[i % 4], label=name)
            ax.fill_between(b["sweep_value"], b["low"], b["high"], color=_colour(arm),
                            alpha=0.15, lw=0)
    x = d["sweep_value"]
    if x.min() > 0 and x.max() / x.min() >= 10:
        ax.set_xscale("log")
    values = sorted(x.unique())
    if len(values) <= 12:  # tick exactly the swept values, printed plainly (no 3×10⁰)
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set(yscale="log", xlabel=_SWEEP_LABELS.get(key, key), ylabel=label,
           title=_sweep_title(key, d, config))
    ax.legend(fontsize="small", title="arm" if len(families) == 1 else "arm, family")


def _fig_sweep(inp: _Inputs) -> Figure:
    s = inp.summary
    rows = s[(s["sweep_key"] != "") & (s["sweep_key"] != "baseline.features")]
    if rows.empty:
        return _no_data("sweep", "no task sweeps a parameter (besides baseline.features)")
    keys = list(dict.fromkeys(rows["sweep_key"]))
    fig, axes = _grid(len(keys), ncols=2, panel=(6.2, 4.4))
    for ax, key in zip(axes, keys, strict=True):
        _sweep_panel(ax, rows[rows["sweep_key"] == key], key, inp.config)
    return fig


# --------------------------------------------------------------------- double descent


def _family_label(config: dict, family: str) -> str:
    """``family`` with its ridge penalty, read from the merged baseline settings."""
    entry = config.get("tasks", {}).get(family, {})
    grid = {**config.get("baseline", {}), **entry.get("baseline", {})}.get("lambda_grid")
    if grid is None:
        return family
    grid = list(grid) if isinstance(grid, list | tuple) else [grid]
    if all(float(v) == 0 for v in grid):
        return f"{family} (λ = 0)"
    if len(grid) == 1:
        return f"{family} (λ = {float(grid[0]):g})"
    return f"{family} (λ selected from {len(grid)} values)"


def _fig_double_descent(inp: _Inputs) -> Figure:
    d = inp.summary[inp.summary["sweep_key"] == "baseline.features"]
    if "kernel" in set(d["arm"]):
        d = d[d["arm"] == "kernel"]  # the random-feature ridge itself, not retrained nets
    if d.empty:
        return _no_data("double_descent", "no task sweeps baseline.features")
    d = d.assign(ratio=d["sweep_value"] / d["n_train"])
    col, label = _error(d)
    band = _log_band(d, "ratio", col, ["family"])
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    for i, family in enumerate(_family_order(d, inp.config)):
        b, c = band[band["family"] == family], FAMILY_COLOURS[i % len(FAMILY_COLOURS)]
        ax.plot(b["ratio"], b["mean"], marker="o", color=c, label=_family_label(inp.config,
                                                                                family))
        ax.fill_between(b["ratio"], b["low"], b["high"], color=c, alpha=0.2, lw=0)
    ax.axvline(1, ls="--", color="0.3", label="interpolation threshold (features = n_train)")
    ax.set(xscale="log", yscale="log", ylabel=label, title="double descent of random-feature "
           "ridge", xlabel="random features per training point (features / n_train)")
    ax.legend(fontsize="small")
    return fig


# --------------------------------------------------------------------------- heatmaps

HEATMAP_FITS = ("kernel", "mimicry", "mlp")  # fits a heatmap row may carry, in this order
_MAX_POINTS = 400  # training points drawn on f*: more hide the function


def _heat_title(kind: str) -> str:
    if kind == "truth":
        return "f*"
    fit = kind.removeprefix("err_")
    return f"|{fit} − f*|" if kind.startswith("err_") else f"{fit} fit"


def _heatmap_row(axes: dict, row: dict) -> None:
    """One task: function panels on one colour scale, error panels on another.

    ``axes``: panel kind (truth, <fit>, err_<fit> for fit in HEATMAP_FITS, cbar_f, cbar_e)
    -> Axes. ``row``: truth and each fit present (kernel, mimicry, mlp; None or absent when
    not trained) are (r, r) arrays in meshgrid 'xy' layout (F[i, j] at x = axis[j],
    y = axis[i]); extent (lo, hi); X_train (k, 2) or None.
    """
    truth = np.asarray(row["truth"], dtype=float)
    fits = {k: np.asarray(row[k], dtype=float) for k in HEATMAP_FITS
            if row.get(k) is not None}
    panels = {"truth": truth, **fits, **{f"err_{k}": np.abs(v - truth) for k, v in fits.items()}}
    funcs = [truth, *fits.values()]
    scale = {False: (min(np.nanmin(f) for f in funcs), max(np.nanmax(f) for f in funcs)),
             True: (0.0, max([np.nanmax(panels[f"err_{k}"]) for k in fits] + [1e-12]))}
    lo, hi = row["extent"]
    images = {}
    kinds = ["truth", *HEATMAP_FITS, *(f"err_{k}" for k in HEATMAP_FITS)]
    for kind in kinds:
        ax = axes.get(kind)
        if ax is None:
            continue
        ax.grid(False)
        if kind not in panels:
            ax.text(0.5, 0.5, f"no {kind.removeprefix('err_')} fit", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set(xticks=[], yticks=[])
            continue
        is_err = kind.startswith("err_")
        images[is_err] = ax.imshow(panels[kind], origin="lower", extent=(lo, hi, lo, hi),
                                   cmap="magma" if is_err else "viridis",
                                   vmin=scale[is_err][0], vmax=scale[is_err][1],
                                   interpolation="nearest")
        title = _heat_title(kind)
        ax.set(xlabel="x₁", ylabel="x₂", title=f"{row['task']}: {title}" if kind == "truth"
               else title)
    if row.get("X_train") is not None:
        X = np.asarray(row["X_train"], dtype=float)  # noqa: N806 - X as documented
        if len(X) > _MAX_POINTS:  # a fixed subsample: the figure is reproducible
            X = X[np.random.default_rng(0).choice(len(X), _MAX_POINTS, replace=False)]  # noqa: N806
        axes["truth"].scatter(X[:, 0], X[:, 1], s=4, c="w", edgecolors="k", linewidths=0.2,
                              alpha=0.8)
    for is_err, cax in ((False, axes["cbar_f"]), (True, axes["cbar_e"])):
        if is_err in images:  # no error colourbar for a row without any fit
            plt.colorbar(images[is_err], cax=cax, label="|fit − f*|" if is_err else "f(x)")
        else:
            cax.set_axis_off()


def _fig_heatmaps(inp: _Inputs) -> Figure:
    rows = [r for r in inp.heatmaps if r and r.get("truth") is not None]
    if not rows:
        return _no_data("heatmaps", "no 2-D task in this study")
    fits = [k for k in HEATMAP_FITS if any(r.get(k) is not None for r in rows)]
    # Explicit colourbar columns, and a spacer so the error panels' x2 label clears the
    # function colourbar: [truth, fits..., cbar_f, spacer, errors..., cbar_e].
    cols = ["truth", *fits, "cbar_f", "spacer", *(f"err_{k}" for k in fits), "cbar_e"]
    widths = [{"cbar_f": 0.06, "cbar_e": 0.06, "spacer": 0.2}.get(c, 1.0) for c in cols]
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False, layout="constrained",
                             figsize=(3.3 * (1 + 2 * len(fits)) + 1.2, 3.2 * len(rows)),
                             gridspec_kw={"width_ratios": widths})
    for ax_row, row in zip(axes, rows, strict=True):
        by_kind = dict(zip(cols, ax_row, strict=True))
        by_kind.pop("spacer").set_axis_off()
        _heatmap_row(by_kind, row)
    return fig


# ---------------------------------------------------------------------------- drawing

_DRAWERS: dict[str, Callable[[_Inputs], Figure]] = {
    "learning_curves": _fig_learning_curves, "final_errors": _fig_final_errors,
    "rates": _fig_rates, "sweep": _fig_sweep, "double_descent": _fig_double_descent,
    "heatmaps": _fig_heatmaps,
}


def draw_figures(summary: pd.DataFrame, curves: pd.DataFrame | None, fig_dir: Path,
                 names: list[str] | None = None, config: dict | None = None,
                 heatmaps: list[dict] | None = None) -> dict[str, Path]:
    """Draw ``names`` (in order) as ``fig_dir/<name>.png``; returns {name: path}.

    ``summary``: the study's summary.csv; ``curves``: concatenated learning curves (may be
    empty); ``heatmaps``: rows for the ``heatmaps`` figure (see :func:`_heatmap_row`).
    A figure without data is drawn as a "no data for ..." panel, never skipped.
    ``names`` defaults to DEFAULT_FIGURES, ``config`` to {} (no theory lines, no labels).
    """
    names = list(DEFAULT_FIGURES if names is None else names)
    unknown = [n for n in names if n not in _DRAWERS]
    if unknown:
        raise MotifpipeError(f"report figure {unknown[0]!r} is unknown; choose from "
                             f"{', '.join(FIGURE_NAMES)}")
    inp = _Inputs(_prepare(summary), curves if curves is not None else pd.DataFrame(),
                  config or {}, list(heatmaps or []))
    fig_dir = Path(fig_dir)
    with plt.rc_context():  # the theme is this report's, not the caller's process-wide one
        sns.set_theme(style="whitegrid", context="notebook")
        return {name: _save(_DRAWERS[name](inp), fig_dir / f"{name}.png") for name in names}


# ------------------------------------------------------------------------------- HTML


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("motifpipe", "torch", "pytorch-lightning", "mlflow", "snakemake", "numpy",
                "pandas", "scipy", "scikit-learn", "matplotlib", "seaborn"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _img(name: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = CAPTIONS.get(name, name)
    return (f'<figure id="{html.escape(name)}"><img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption><b>{html.escape(name)}.</b> '
            f"{html.escape(caption)}</figcaption></figure>")


def _final_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (task, n, arm): seeds, mean test MSE, excess risk, wall time; speedup with CI."""
    keys = ["task", "n", "arm"]
    aggs = {"seeds": ("seed", "nunique")} if "seed" in summary else {}
    aggs |= {c: (c, "mean") for c in ("test_mse", "excess_risk", "wall_time_s")
             if c in summary}
    table = summary.groupby(keys, sort=True).agg(**aggs).reset_index()
    if "speedup_vs_scratch" in summary:
        sp = speedups(summary)[[*keys, "speedup", "low", "high"]]
        table = table.merge(sp.rename(columns={"low": "speedup_low", "high": "speedup_high"}),
                            on=keys, how="left")
    rank = {a: i for i, a in enumerate(ARM_ORDER)}
    return table.sort_values(["task", "n", "arm"], key=lambda c: c.map(rank).fillna(len(rank))
                             if c.name == "arm" else c, kind="stable")


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", na_rep="")


def _slopes_section(slopes: pd.DataFrame | None) -> str:
    if slopes is None or slopes.empty:
        return ""
    return ("<h2>Rates: fitted slopes</h2><p>Least-squares slope of log error on log "
            "n_train over every (n, seed) point, with its 95&nbsp;% t-interval; "
            "<code>theory</code> is the rate predicted up to log factors (networks: Imaizumi "
            "&amp; Fukumizu 2019; kernel: a linear smoother's rate at a jump), empty where "
            f"none applies.</p>{_table(slopes, 3)}")


def render_html(config: dict, summary: pd.DataFrame, figures: dict[str, Path],
                parent_run_id: str | None = None, slopes: pd.DataFrame | None = None) -> str:
    """One self-contained HTML page (figures embedded as base64 PNG, no external links).

    Sections: figures with captions (in ``figures`` order), fitted rate slopes (when
    given), final errors and speedups per task and arm, the summary with MLflow run ids,
    the configuration and package versions.
    """
    title = config.get("report", {}).get("title") or f"motifpipe study: {config['study']}"
    versions = "".join(f"<li>{html.escape(k)} {html.escape(v)}</li>"
                       for k, v in _versions().items())
    figs = "".join(_img(name, p) for name, p in figures.items())
    parent = (f"<code>{html.escape(parent_run_id)}</code>" if parent_run_id
              else "not recorded")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;}}
table {{border-collapse: collapse; font-size: 0.85rem;}}
td, th {{border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right;}}
figure img {{max-width: 100%;}} figcaption {{color: #444;}}
pre {{background: #f6f6f6; padding: 1rem; overflow-x: auto;}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}.
MLflow parent run: {parent}; each job's run id is in the summary's
<code>mlflow_run_id</code> column.</p>
<h2>Figures</h2>{figs}
{_slopes_section(slopes)}
<h2>Final errors and speedups per task and arm</h2>
<p>Means over seeds of the final test MSE (noisy targets), excess risk (against the
noise-free f*; empty for real data) and wall time. Speedup: time for scratch to reach
{SCRATCH_SLACK} &times; its best validation MSE, divided by the arm's time to reach the same
value (mimicry's clock includes the baseline fit and the transfer), with a 95&nbsp;%
t-interval over seeds; empty where an arm never got there.</p>
{_table(_final_table(summary))}
<h2>Summary (one row per task, n, seed, arm; with MLflow run ids)</h2>
{_table(summary)}
<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>
<h2>Versions</h2><ul>{versions}</ul>
</body></html>
"""
