"""Figures (seaborn) and the self-contained HTML report of a study."""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402

from motifpipe.evaluate import SCRATCH_SLACK, speedups  # noqa: E402
from motifpipe.io import atomic_path  # noqa: E402

ARM_ORDER = ["kernel", "mimicry", "scratch", "mlp"]
# Colour-blind safe and far apart: blue, orange, green, purple.
PALETTE = dict(zip(ARM_ORDER, [sns.color_palette("colorblind")[i] for i in (0, 1, 2, 4)],
                   strict=True))
FIGURES = {
    "learning_curves": "Validation MSE against wall-clock time per arm (one line per seed); "
    "the dashed line is the kernel baseline's validation MSE. Mimicry's clock starts when "
    "the baseline fit starts.",
    "final_errors": "Test MSE (against noisy targets) of each arm at its best validation "
    "epoch; bars are means over seeds, ticks the individual seeds.",
}


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curves(summary: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path:
    """Validation MSE vs wall-clock, one panel per task, colour per arm."""
    sns.set_theme(style="whitegrid", context="notebook")
    tasks = sorted(curves["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = curves[curves["task"] == task]
        sns.lineplot(data=sub, x="time_s", y="val_mse", hue="arm", units="seed",
                     estimator=None, palette=PALETTE, ax=ax, lw=1.4,
                     hue_order=[a for a in ARM_ORDER if a in set(sub["arm"])])
        kernel = summary[(summary["task"] == task) & (summary["arm"] == "kernel")]
        if not kernel.empty:
            ax.axhline(kernel["val_mse"].mean(), ls="--", color=PALETTE["kernel"],
                       label="kernel (baseline)")
        ax.set(xlabel="wall-clock time (s)", ylabel="validation MSE", yscale="log",
               title=f"task {task}")
        ax.legend(title="arm")
    return _save(fig, path)


def final_errors(summary: pd.DataFrame, path: Path) -> Path:
    """Bar chart of test MSE per arm and task, individual seeds overlaid."""
    sns.set_theme(style="whitegrid", context="notebook")
    order = [a for a in ARM_ORDER if a in set(summary["arm"])]
    fig, ax = plt.subplots(figsize=(max(5, 2 + 1.5 * summary["task"].nunique() * len(order)), 4))
    sns.barplot(data=summary, x="task", y="test_mse", hue="arm", hue_order=order,
                palette=PALETTE, errorbar=None, ax=ax, alpha=0.8)
    sns.stripplot(data=summary, x="task", y="test_mse", hue="arm", hue_order=order,
                  palette=PALETTE, dodge=True, ax=ax, legend=False, color="k", size=4)
    ax.set(xlabel="task", ylabel="test MSE (noisy targets)", yscale="log")
    return _save(fig, path)


def draw_figures(summary: pd.DataFrame, curves: pd.DataFrame, fig_dir: Path) -> dict[str, Path]:
    """All figures of the report, as PNG files in ``fig_dir``."""
    fig_dir = Path(fig_dir)
    return {
        "learning_curves": learning_curves(summary, curves, fig_dir / "learning_curves.png"),
        "final_errors": final_errors(summary, fig_dir / "final_errors.png"),
    }


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("motifpipe", "torch", "pytorch-lightning", "mlflow", "snakemake", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(config: dict, summary: pd.DataFrame, figures: dict[str, Path]) -> str:
    """One self-contained HTML page: figures embedded, summary table, config, versions."""
    title = config.get("report", {}).get("title") or f"motifpipe study: {config['study']}"
    agg = (summary.groupby(["task", "n", "arm"], sort=False)[["test_mse", "excess_risk",
           "wall_time_s"]].mean().reset_index())
    versions = "".join(f"<li>{html.escape(k)} {html.escape(v)}</li>"
                       for k, v in _versions().items())
    figs = "".join(_img(p, FIGURES.get(name, name)) for name, p in figures.items())
    speed = speedups(summary) if "speedup_vs_scratch" in summary else pd.DataFrame()
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
<p>Generated {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}.</p>
<h2>Figures</h2>{figs}
<h2>Mean over seeds</h2>{agg.to_html(index=False, float_format=lambda v: f"{v:.4g}")}
<h2>Speedup against scratch</h2>
<p>Time for scratch to reach {SCRATCH_SLACK} &times; its best validation MSE, divided by
the arm's time to reach the same value (mimicry's clock includes the baseline fit and the
transfer); mean over seeds with a 95&nbsp;% t-interval. Empty where an arm never got there.</p>
{speed.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="")}
<h2>Summary (one row per task, n, seed, arm; with MLflow run ids)</h2>
{summary.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")}
<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>
<h2>Versions</h2><ul>{versions}</ul>
</body></html>
"""
